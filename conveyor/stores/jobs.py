"""Lambda jobs: how a function's PutJobSuccessResult / PutJobFailureResult crosses from `conveyor serve` to the
activity that waits for it, through the artifact store.

A job id is a random single-use capability given only to the invoked function; nothing stores or records it in the
clear. Everything here is keyed by its SHA-256 (`job_hash`):
- `jobs/tickets/<hash>.json`: written by the activity before it invokes the function (who the job is for);
- `jobs/results/<hash>.json`: written once by serve (a conditional create: O_EXCL locally, `IfNoneMatch='*'` in S3),
  so a second answer for the same job, a reused job id, is refused; the activity polls for it;
- `jobs/attempts/<sha256 of the action attempt>.json`: the job an action attempt waits on, so a retried activity
  (a new worker) resumes waiting on it instead of invoking the function again.
The local store keeps them under the artifacts directory, the S3 store under its prefix: serve must be configured
with the same store as the workers (CONVEYOR_ARTIFACT_STORE, or the same data directory). `jobs/outputs/<attempt
hash>/` holds the zips functions upload for output artifacts (S3 only).

`conveyor gc` sweeps them (`stale`): a job's documents are needed only while its action waits, so a ticket goes
once older than the minimum age unless its execution is open; its result with it, an attempt record when its job's
ticket goes (or it names none), an attempt's uploaded outputs with the attempt record.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pydantic import Field

from conveyor.model import CamelModel
from conveyor.settings import S3Location, Settings

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

_M = TypeVar("_M", bound=CamelModel)
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
JOB_ID_BYTES = 32  # secrets.token_urlsafe(32): 256 bits, 43 characters


def new_job_id() -> str:
    return secrets.token_urlsafe(JOB_ID_BYTES)


def job_hash(job_id: str) -> str:
    """What is kept of a job id: its SHA-256, in hex."""
    return hashlib.sha256(job_id.encode()).hexdigest()


def attempt_hash(idempotency_key: str, action_attempt: int) -> str:
    return hashlib.sha256(f"lambda-job/{idempotency_key}/{action_attempt}".encode()).hexdigest()


class JobTicket(CamelModel):
    """Who a job is for (no job id: the file is named by its hash)."""

    pipeline_name: str
    execution_id: str
    stage_name: str
    action_name: str
    function_name: str
    invocation: int = 1  # 1, then one more for every continuation token
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class JobResultKind(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABANDONED = "Abandoned"  # the action stopped waiting (a stop, an abandon): a later answer is refused


class JobResult(CamelModel):
    """The one answer a job gets: PutJobSuccessResult's or PutJobFailureResult's fields, or the action's end."""

    kind: JobResultKind
    continuation_token: str | None = None
    summary: str | None = None
    external_execution_id: str | None = None
    percent_complete: int | None = None
    output_variables: dict[str, str] = Field(default_factory=dict)
    current_revision: dict[str, str] | None = None
    failure_type: str | None = None
    message: str | None = None
    answered_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class JobAttempt(CamelModel):
    """The job an action attempt is waiting on now (the latest after continuation tokens)."""

    job_hash: str
    invocation: int


@dataclass(frozen=True)
class JobDocument:
    """A file under `jobs/` (for garbage collection)."""

    relative: str  # jobs/<part>/<name>, the part being tickets, results, attempts or outputs
    last_modified: datetime
    size: int

    @property
    def part(self) -> str:
        return self.relative.split("/")[1] if self.relative.count("/") >= 2 else ""

    @property
    def stem(self) -> str:
        """The hash a ticket, result or attempt is named by; an output's attempt hash."""
        parts = self.relative.split("/")
        return parts[2] if self.part == "outputs" and len(parts) > 3 else parts[-1].removesuffix(".json")


class _Backend(Protocol):
    def create(self, relative: str, data: bytes) -> bool: ...  # False: already there

    def replace(self, relative: str, data: bytes) -> None: ...

    def read(self, relative: str) -> bytes | None: ...

    def listing(self, prefix: str) -> list[JobDocument]: ...

    def delete(self, relatives: list[str]) -> None: ...

    def where(self, relative: str) -> str: ...  # a path or an s3:// URL, for people


class JobStore:
    """Tickets, results and attempts of Lambda jobs in the configured artifact store."""

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend

    def put_ticket(self, hashed: str, ticket: JobTicket) -> None:
        if not self.backend.create(_ticket(hashed), _dump(ticket)):
            raise JobStoreError("a job ticket with this id exists already")  # 256 random bits: never by chance

    def ticket(self, hashed: str) -> JobTicket | None:
        data = self.backend.read(_ticket(hashed)) if _HASH_RE.match(hashed) else None
        return None if data is None else JobTicket.model_validate_json(data)

    def put_result(self, hashed: str, result: JobResult) -> bool:
        """False: the job has its answer already (the first one stands)."""
        return self.backend.create(_result(hashed), _dump(result))

    def result(self, hashed: str) -> JobResult | None:
        data = self.backend.read(_result(hashed)) if _HASH_RE.match(hashed) else None
        return None if data is None else JobResult.model_validate_json(data)

    def put_attempt(self, attempt: str, current: JobAttempt) -> None:
        self.backend.replace(f"jobs/attempts/{attempt}.json", _dump(current))

    def attempt(self, attempt: str) -> JobAttempt | None:
        data = self.backend.read(f"jobs/attempts/{attempt}.json")
        return None if data is None else JobAttempt.model_validate_json(data)

    # --- garbage collection ------------------------------------------------------------------------------

    def stale(self, open_executions: set[str], cutoff: datetime) -> list[JobDocument]:
        """What no waiting action can still use (see the module docstring); nothing changed since `cutoff`."""
        documents = self.backend.listing("jobs/")
        kept_jobs: set[str] = set()
        for doc in _part(documents, "tickets"):
            if doc.last_modified >= cutoff:
                kept_jobs.add(doc.stem)
                continue
            ticket = self._parsed(JobTicket, doc)
            if ticket is not None and ticket.execution_id in open_executions:
                kept_jobs.add(doc.stem)
        kept_attempts: set[str] = set()
        for doc in _part(documents, "attempts"):
            current = self._parsed(JobAttempt, doc) if doc.last_modified < cutoff else None
            if doc.last_modified >= cutoff or (current is not None and current.job_hash in kept_jobs):
                kept_attempts.add(doc.stem)
        kept = {"tickets": kept_jobs, "results": kept_jobs, "attempts": kept_attempts, "outputs": kept_attempts}
        return [doc for doc in documents if doc.last_modified < cutoff and doc.stem not in kept.get(doc.part, set())]

    def delete(self, documents: list[JobDocument]) -> None:
        self.backend.delete([doc.relative for doc in documents])

    def where(self, document: JobDocument) -> str:
        return self.backend.where(document.relative)

    def _parsed(self, model: type[_M], doc: JobDocument) -> _M | None:
        data = self.backend.read(doc.relative)
        try:
            return None if data is None else model.model_validate_json(data)
        except ValueError:  # unreadable: no waiting action can use it either
            return None


def _part(documents: Iterable[JobDocument], part: str) -> Iterable[JobDocument]:
    return (doc for doc in documents if doc.part == part)


class JobStoreError(RuntimeError):
    """The job store could not be read or written."""


def job_store(settings: Settings) -> JobStore:
    """The job store of the configured artifact store (CONVEYOR_ARTIFACT_STORE, else the data directory)."""
    if settings.artifact_store is not None:
        return JobStore(_S3Backend(settings.artifact_store, settings.artifact_kms_key))
    return JobStore(_LocalBackend(settings.artifacts_dir))


def _ticket(hashed: str) -> str:
    return f"jobs/tickets/{hashed}.json"


def _result(hashed: str) -> str:
    return f"jobs/results/{hashed}.json"


def _dump(model: CamelModel) -> bytes:
    return model.model_dump_json(by_alias=True).encode()


class _LocalBackend:
    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, relative: str, data: bytes) -> bool:
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then linked into place: link() fails if the name exists (an O_EXCL create), and a reader
        # never sees a half-written document.
        fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.link(tmp, final)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def replace(self, relative: str, data: bytes) -> None:
        final = self.root / relative
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def read(self, relative: str) -> bytes | None:
        try:
            return (self.root / relative).read_bytes()
        except FileNotFoundError:
            return None

    def listing(self, prefix: str) -> list[JobDocument]:
        found: list[JobDocument] = []
        for dirpath, _, filenames in os.walk(self.root / prefix):
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue
                modified = datetime.fromtimestamp(st.st_mtime, UTC)
                found.append(JobDocument(path.relative_to(self.root).as_posix(), modified, st.st_size))
        return sorted(found, key=lambda doc: doc.relative)

    def delete(self, relatives: list[str]) -> None:
        for relative in relatives:
            (self.root / relative).unlink(missing_ok=True)

    def where(self, relative: str) -> str:
        return str(self.root / relative)


class _S3Backend:
    def __init__(self, location: S3Location, kms_key: str | None) -> None:
        import boto3  # here: slow to import, and only an S3-configured process needs it

        self.location = location
        self.extra: dict[str, Any] = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key} if kms_key else {}
        self.client = boto3.session.Session().client("s3")

    def _key(self, relative: str) -> str:
        return f"{self.location.prefix}/{relative}" if self.location.prefix else relative

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
            raise JobStoreError(f"s3://{self.location.bucket}/{self._key(relative)}: S3 answered {code}") from None
        return True

    def replace(self, relative: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.location.bucket, Key=self._key(relative), Body=data, **self.extra)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise JobStoreError(f"s3://{self.location.bucket}/{self._key(relative)}: S3 answered {code}") from None

    def read(self, relative: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.location.bucket, Key=self._key(relative))["Body"]
            data: bytes = body.read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404", "NotFound"):
                return None
            raise JobStoreError(f"s3://{self.location.bucket}/{self._key(relative)}: S3 answered {code}") from None
        return data

    def listing(self, prefix: str) -> list[JobDocument]:
        found: list[JobDocument] = []
        strip = f"{self.location.prefix}/" if self.location.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.location.bucket, Prefix=self._key(prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                found.append(JobDocument(key.removeprefix(strip), item["LastModified"], item["Size"]))
        return found

    def delete(self, relatives: list[str]) -> None:
        for start in range(0, len(relatives), 1000):  # DeleteObjects takes 1,000 keys a call
            batch: list[ObjectIdentifierTypeDef] = [{"Key": self._key(r)} for r in relatives[start : start + 1000]]
            self.client.delete_objects(Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True})

    def where(self, relative: str) -> str:
        return f"s3://{self.location.bucket}/{self._key(relative)}"
