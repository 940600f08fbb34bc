"""Lambda jobs: how a function's PutJobSuccessResult / PutJobFailureResult crosses from `conveyor serve` to the
activity that waits for it, through the artifact store.

A job id is a random single-use capability given only to the invoked function; nothing stores or records it in the
clear. Everything here is keyed by its SHA-256 (`job_hash`):
- `jobs/tickets/<hash>.json`: written by the activity before it invokes the function (who the job is for);
- `jobs/results/<hash>.json`: written once by serve (a conditional create: O_EXCL locally, `IfNoneMatch='*'` in S3),
  so a second answer for the same job, a reused job id, is refused; the activity polls for it;
- `jobs/attempts/<sha256 of the action attempt>.json`: the job an action attempt waits on, so a retried activity
  (a new worker) resumes waiting on it instead of invoking the function again.
They are records (conveyor.stores.records: its backends, create-once and replace): the local store keeps them
under the artifacts directory, the S3 store under its prefix: serve must be configured
with the same store as the workers (CONVEYOR_ARTIFACT_STORE, or the same data directory). `jobs/outputs/<attempt
hash>/` holds the zips functions upload for output artifacts (S3 only).

`conveyor gc` sweeps them (`stale`): a job's documents are needed only while its action waits, so a ticket goes
once older than the minimum age unless its execution is open; its result with it, an attempt record when its job's
ticket goes (or it names none), an attempt's uploaded outputs with the attempt record.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from pydantic import Field

from conveyor.model import CamelModel
from conveyor.settings import Settings
from conveyor.stores.records import RecordBackend, RecordStoreError, record_backend

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


class JobStore:
    """Tickets, results and attempts of Lambda jobs in the configured artifact store."""

    def __init__(self, backend: RecordBackend) -> None:
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
        documents = [JobDocument(d.relative, d.last_modified, d.size) for d in self.backend.listing("jobs/")]
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


JobStoreError = RecordStoreError  # the job store could not be read or written (or a job id was used twice)


def job_store(settings: Settings) -> JobStore:
    """The job store of the configured artifact store (CONVEYOR_ARTIFACT_STORE, else the data directory)."""
    return JobStore(record_backend(settings))


def _ticket(hashed: str) -> str:
    return f"jobs/tickets/{hashed}.json"


def _result(hashed: str) -> str:
    return f"jobs/results/{hashed}.json"


def _dump(model: CamelModel) -> bytes:
    return model.model_dump_json(by_alias=True).encode()
