"""Records: small JSON documents keyed by a hash in the configured store, for what must outlive one activity (a
worker may die between an AWS call and the heartbeat that would carry its result).

Local store: files under the data directory's artifacts; S3 store (CONVEYOR_ARTIFACT_STORE): objects under its
prefix. Two writes: `create` (once: O_EXCL locally, `IfNoneMatch='*'` in S3; False when the name exists) and
`replace` (atomic: a reader never sees a half-written document). Every writer uses the store the workers and
`conveyor serve` are configured with.

Kinds (`RecordKind`), each a folder:
- `jobs/...`: Lambda jobs' tickets, results and attempts (conveyor.stores.jobs, which keeps its own naming);
- `<provider>/attempts/<hash>.json`: what an action attempt is about to start (`AttemptRecord`), written before
  its AWS call; the hash is derived from the attempt (conveyor.providers.<provider>.attempt_record), so a retried
  activity and the compensation of an abandoned action find it.
`conveyor gc` sweeps attempt records by the rule of every record: older than the minimum age and not of an open
execution (`stale_attempts`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import Field, ValidationError

from conveyor.model import ArtifactRef, CamelModel
from conveyor.settings import S3Location, Settings

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

_M = TypeVar("_M", bound=CamelModel)
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")


class RecordKind(StrEnum):
    """The folders of per-attempt records (one per provider that writes them)."""

    CLOUDFORMATION = "cloudformation/attempts"
    CODEDEPLOY = "codedeploy/attempts"


class AttemptRecord(CamelModel):
    """What every per-attempt record carries: the execution that wrote it (gc keeps those of open executions)."""

    execution_id: str = ""  # empty in a record written before this field: swept by age alone
    # Artifacts the attempt's compensation may read (a stack's saved state, the revision deployed before): gc keeps
    # them while the execution is open, also when no action state names them (an abandoned action).
    keeps: list[ArtifactRef] = Field(default_factory=list)


def attempt_hash(kind: RecordKind, idempotency_key: str, attempt: int) -> str:
    """The name of an action attempt's record of `kind`: the same for every activity of the attempt."""
    return hashlib.sha256(f"{kind.value}/{idempotency_key}/{attempt}".encode()).hexdigest()


@dataclass(frozen=True)
class RecordDocument:
    """A stored record (for garbage collection)."""

    relative: str  # <kind folder>/<name>, relative to the store's root
    last_modified: datetime
    size: int


class RecordStoreError(RuntimeError):
    """The record store could not be read or written (the message names where)."""


class RecordBackend(Protocol):
    def create(self, relative: str, data: bytes) -> bool: ...  # False: already there

    def replace(self, relative: str, data: bytes) -> None: ...

    def read(self, relative: str) -> bytes | None: ...

    def listing(self, prefix: str) -> list[RecordDocument]: ...

    def delete(self, relatives: list[str]) -> None: ...

    def where(self, relative: str) -> str: ...  # a path or an s3:// URL, for people


def record_backend(settings: Settings) -> RecordBackend:
    """The configured store (CONVEYOR_ARTIFACT_STORE, else the data directory's artifacts)."""
    if settings.artifact_store is not None:
        return S3RecordBackend(settings.artifact_store, settings.artifact_kms_key)
    return LocalRecordBackend(settings.artifacts_dir)


class AttemptRecords:
    """The attempt records of one kind, as pydantic models."""

    def __init__(self, backend: RecordBackend, kind: RecordKind) -> None:
        self.backend, self.kind = backend, kind

    def path(self, hashed: str) -> str:
        if not _HASH_RE.match(hashed):
            raise ValueError(f"not a record name (64 hex digits): {hashed!r}")
        return f"{self.kind.value}/{hashed}.json"

    def create(self, hashed: str, record: AttemptRecord) -> bool:
        return self.backend.create(self.path(hashed), _dump(record))

    def replace(self, hashed: str, record: AttemptRecord) -> None:
        self.backend.replace(self.path(hashed), _dump(record))

    def read(self, hashed: str, model: type[_M]) -> _M | None:
        """The record, or None when there is none or it is not one of `model` (unreadable: as if never written)."""
        data = self.backend.read(self.path(hashed))
        try:
            return None if data is None else model.model_validate_json(data)
        except ValidationError:
            return None


def stale_attempts(backend: RecordBackend, open_executions: set[str], cutoff: datetime) -> list[RecordDocument]:
    """Attempt records of every kind unchanged since `cutoff` whose execution is not open (an unreadable one too)."""
    stale: list[RecordDocument] = []
    for kind in RecordKind:
        for doc in backend.listing(f"{kind.value}/"):
            if doc.last_modified >= cutoff:
                continue
            data = backend.read(doc.relative)
            try:
                owner = None if data is None else AttemptRecord.model_validate_json(data).execution_id
            except ValidationError:
                owner = None
            if not owner or owner not in open_executions:
                stale.append(doc)
    return stale


def kept_by_open_attempts(backend: RecordBackend, open_executions: set[str]) -> set[str]:
    """The digests of the artifacts that open executions' attempt records keep (see `AttemptRecord.keeps`)."""
    kept: set[str] = set()
    for kind in RecordKind:
        for doc in backend.listing(f"{kind.value}/"):
            data = backend.read(doc.relative)
            try:
                record = None if data is None else AttemptRecord.model_validate_json(data)
            except ValidationError:
                record = None
            if record is not None and record.execution_id in open_executions:
                kept |= {ref.digest for ref in record.keeps}
    return kept


def stale_under(backend: RecordBackend, prefix: str, cutoff: datetime) -> list[RecordDocument]:
    """Everything under `prefix` unchanged since `cutoff` (objects re-written at every use, like uploaded templates)."""
    return [doc for doc in backend.listing(prefix) if doc.last_modified < cutoff]


def _dump(model: CamelModel) -> bytes:
    return model.model_dump_json(by_alias=True).encode()


class LocalRecordBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _written_aside(self, final: Path, data: bytes) -> str:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tmp

    def create(self, relative: str, data: bytes) -> bool:
        final = self.root / relative
        # Written aside, then linked into place: link() fails if the name exists (an O_EXCL create), and a reader
        # never sees a half-written document.
        tmp = self._written_aside(final, data)
        try:
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def replace(self, relative: str, data: bytes) -> None:
        final = self.root / relative
        tmp = self._written_aside(final, data)
        try:
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, relative: str) -> bytes | None:
        try:
            return (self.root / relative).read_bytes()
        except FileNotFoundError:
            return None

    def listing(self, prefix: str) -> list[RecordDocument]:
        found: list[RecordDocument] = []
        for dirpath, _, filenames in os.walk(self.root / prefix):
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                modified = datetime.fromtimestamp(st.st_mtime, UTC)
                found.append(RecordDocument(path.relative_to(self.root).as_posix(), modified, st.st_size))
        return sorted(found, key=lambda doc: doc.relative)

    def delete(self, relatives: list[str]) -> None:
        for relative in relatives:
            (self.root / relative).unlink(missing_ok=True)

    def where(self, relative: str) -> str:
        return str(self.root / relative)


class S3RecordBackend:
    def __init__(self, location: S3Location, kms_key: str | None) -> None:
        import boto3  # here: slow to import, and only an S3-configured process needs it

        self.location = location
        self.extra: dict[str, Any] = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
        self.client = boto3.session.Session().client("s3")

    def _key(self, relative: str) -> str:
        return f"{self.location.prefix}/{relative}" if self.location.prefix else relative

    def _error(self, relative: str, code: str) -> RecordStoreError:
        return RecordStoreError(f"s3://{self.location.bucket}/{self._key(relative)}: S3 answered {code}")

    def create(self, relative: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(
                Bucket=self.location.bucket, Key=self._key(relative), Body=data, IfNoneMatch="*", **self.extra
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                return False
            raise self._error(relative, code) from None
        return True

    def replace(self, relative: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.location.bucket, Key=self._key(relative), Body=data, **self.extra)
        except ClientError as exc:
            raise self._error(relative, str(exc.response.get("Error", {}).get("Code", ""))) from None

    def read(self, relative: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.location.bucket, Key=self._key(relative))["Body"]
            data: bytes = body.read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._error(relative, code) from None
        return data

    def listing(self, prefix: str) -> list[RecordDocument]:
        from botocore.exceptions import ClientError

        found: list[RecordDocument] = []
        strip = f"{self.location.prefix}/" if self.location.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=self._key(prefix)
        )
        try:
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"]
                    found.append(RecordDocument(key.removeprefix(strip), item["LastModified"], item["Size"]))
        except ClientError as exc:
            raise self._error(prefix, str(exc.response.get("Error", {}).get("Code", ""))) from None
        return found

    def delete(self, relatives: list[str]) -> None:
        for start in range(0, len(relatives), 1000):  # DeleteObjects takes 1,000 keys a call
            batch: list[ObjectIdentifierTypeDef] = [{"Key": self._key(r)} for r in relatives[start : start + 1000]]
            self.client.delete_objects(Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True})

    def where(self, relative: str) -> str:
        return f"s3://{self.location.bucket}/{self._key(relative)}"
