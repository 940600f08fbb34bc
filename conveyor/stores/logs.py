"""Action logs in the store: written by the worker as an action runs, read (and tailed) by `conveyor logs` anywhere.

- The local store: one file per action, `<data dir>/logs/<pipeline>/<execution>/<stage>/<action>.log`, appended by
  every attempt; only a process that sees that directory can read it.
- The S3 store: numbered chunk objects, uploaded every few seconds (or at 1 MB) while the action runs,
  `<prefix>/logs/<pipeline>/<execution>/<stage>/<action>/<attempt>/<seq>.log`, and an `<attempt>/end` marker when the
  attempt's log is complete. A reader on any host lists the chunks in key order (zero-padded numbers, so attempts and
  chunks sort as they were written) and prints those it has not printed yet: the same bytes as the local file.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from conveyor.settings import Settings, action_log_path
from conveyor.stores.s3 import S3ArtifactStore

LOG_CHUNK_BYTES = 1024 * 1024  # an S3 chunk is uploaded once this much is buffered ...
LOG_FLUSH_SECONDS = 2.0  # ... or when the writer's owner flushes it, this often
END_MARKER = "end"


@dataclass(frozen=True)
class ActionLogName:
    """Whose log: one per action (or `<Action>.rollback` compensation) of an execution's stage."""

    pipeline: str
    execution_id: str
    stage: str
    action: str

    @property
    def relative(self) -> str:
        return f"logs/{self.pipeline}/{self.execution_id}/{self.stage}/{self.action}/"


def attempt_label(action_attempt: int, activity_attempt: int) -> str:
    """One S3 folder per attempt (a declared retry, and within it a lost worker's retry), sorting in time order."""
    return f"{action_attempt:04d}-{activity_attempt:04d}"


class ActionLogWriter(Protocol):
    def write(self, text: str) -> None:
        """Append `text` (whole lines); buffered until the next flush on S3."""

    def flush(self) -> None:
        """Make what was written visible to readers."""

    def close(self) -> None:
        """Flush and mark the attempt's log complete."""


class ActionLogReader(Protocol):
    where: str  # where the log is looked for, for messages

    def read_new(self) -> bytes:
        """What was written since the last call (all of it on the first call)."""

    def found(self) -> bool:
        """Whether the log exists (an action that has not started has none)."""


def open_action_log(settings: Settings, name: ActionLogName, attempt: str) -> ActionLogWriter:
    """The writer for the store `settings` name (logs always go to the worker's configured store)."""
    store = s3_log_store(settings)
    if store is None:
        path = action_log_path(settings.logs_dir, name.pipeline, name.execution_id, name.stage, name.action)
        return LocalLogWriter(path)
    return S3LogWriter(store, name, attempt)


def action_log_reader(settings: Settings, name: ActionLogName) -> ActionLogReader:
    store = s3_log_store(settings)
    if store is None:
        path = action_log_path(settings.logs_dir, name.pipeline, name.execution_id, name.stage, name.action)
        return LocalLogReader(path)
    return S3LogReader(store, name)


def s3_log_store(settings: Settings) -> S3ArtifactStore | None:
    if settings.artifact_store is None:
        return None
    return S3ArtifactStore(settings.artifact_store, settings.artifact_kms_key)


# --- local: a file appended by every attempt ---------------------------------------------------------


class LocalLogWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        with self._lock:
            if self._file.closed:  # a copier cut short by a stuck pipe; the attempt is over
                return
            self._file.write(text)
            self._file.flush()  # so `tail -f` and `conveyor logs -f` see it at once

    def flush(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._file.close()


class LocalLogReader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path.parents[3])  # the logs directory
        self._position = 0

    def read_new(self) -> bytes:
        if not self.path.exists():
            return b""
        with self.path.open("rb") as handle:
            handle.seek(self._position)
            chunk = handle.read()
        self._position += len(chunk)
        return chunk

    def found(self) -> bool:
        return self.path.exists()


# --- S3: numbered chunks, then an end marker -------------------------------------------------------------


class S3LogWriter:
    """Buffers the log and uploads it as `<seq>.log` chunks; thread-safe (the output copier and the flush timer)."""

    def __init__(self, store: S3ArtifactStore, name: ActionLogName, attempt: str) -> None:
        self.store = store
        self.folder = f"{name.relative}{attempt}/"
        self.what = f"the log of {name.pipeline}/{name.execution_id} {name.stage}/{name.action}"
        self._buffer = bytearray()
        self._seq: int | None = None  # the last chunk written; None: not looked up yet
        self._lock = threading.Lock()
        self._closed = False

    def write(self, text: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._buffer += text.encode("utf-8")
            if len(self._buffer) >= LOG_CHUNK_BYTES:
                # Never raises: the output copier must keep draining the commands' pipe; a failed upload stays
                # buffered for the next flush, whose caller hears of it.
                with contextlib.suppress(Exception):
                    self._upload()

    def flush(self) -> None:
        """Called every LOG_FLUSH_SECONDS by the activity, so a reader sees output within seconds."""
        with self._lock:
            if self._buffer:
                self._upload()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            if self._buffer:
                self._upload()
            self.store.put_bytes(self.what, self.store.object(self.folder + END_MARKER), b"", "text/plain")
            self._closed = True

    def _upload(self) -> None:
        """Upload the buffer as the next chunk; on failure it stays buffered for the next try."""
        if self._seq is None:
            self._seq = self._last_written()
        key = f"{self.folder}{self._seq + 1:08d}.log"
        self.store.put_bytes(self.what, self.store.object(key), bytes(self._buffer), "text/plain; charset=utf-8")
        self._seq += 1
        self._buffer.clear()

    def _last_written(self) -> int:
        """The attempt's last chunk so far: a log opened again in the same attempt (a provider writing it in two
        goes) continues after it instead of overwriting it. One listing, at the first upload."""
        names = [key.rsplit("/", 1)[-1] for key in self.store.list_keys(self.what, self.folder)]
        return max((int(n[:-4]) for n in names if n.endswith(".log") and n[:-4].isdigit()), default=0)


class S3LogReader:
    def __init__(self, store: S3ArtifactStore, name: ActionLogName) -> None:
        self.store = store
        self.name = name
        self.where = store.url(name.relative)
        self.what = f"the log of {name.pipeline}/{name.execution_id} {name.stage}/{name.action}"
        self._last_key = ""
        self._found = False

    def read_new(self) -> bytes:
        keys = self.store.list_keys(self.what, self.name.relative, start_after=self._last_key)
        out = bytearray()
        for key in keys:
            self._found = True
            if key.endswith(".log"):
                data = self.store.get_bytes(self.what, self.store.object_at(key))
                out += data or b""
            self._last_key = key
        return bytes(out)

    def found(self) -> bool:
        return self._found or bool(self.store.list_keys(self.what, self.name.relative))


__all__ = [
    "LOG_CHUNK_BYTES",
    "LOG_FLUSH_SECONDS",
    "ActionLogName",
    "ActionLogReader",
    "ActionLogWriter",
    "LocalLogReader",
    "LocalLogWriter",
    "S3LogReader",
    "S3LogWriter",
    "action_log_reader",
    "attempt_label",
    "open_action_log",
]
