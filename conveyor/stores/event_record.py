"""The record of delivered events in the configured store (local data directory or S3), and its dead letters.

- `events/<pipeline>/<execution>/<origin>/<first sequence>.json`: one `EventBatch` per document, written by the
  delivery activity before any sink sees it (always on). A re-sent batch (a crashed worker) replaces its own document
  with the same events, so the record never holds an event twice.
- `event-dead-letters/<pipeline>/<execution>/<sink>/<origin>/<first sequence>.json`: a `DeadLetter`, a batch a sink
  could not take after its bounded retries.
`conveyor events` reads the record back; `conveyor gc` removes both with their execution.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError

from conveyor.events import EventBatch, PipelineEvent
from conveyor.model import CamelModel
from conveyor.settings import Settings
from conveyor.stores.records import RecordBackend, RecordDocument, record_backend

EVENTS = "events"
DEAD_LETTERS = "event-dead-letters"


class DeadLetter(CamelModel):
    sink: str
    error: str
    at: datetime
    batch: EventBatch


def _batch_name(batch: EventBatch) -> str:
    first = batch.events[0].sequence if batch.events else 0
    return f"{batch.origin}/{first:08d}.json"


def batch_path(batch: EventBatch) -> str:
    return f"{EVENTS}/{batch.pipeline_name}/{batch.execution_id}/{_batch_name(batch)}"


def record_batch(backend: RecordBackend, batch: EventBatch) -> str:
    """Keep the batch in the record (idempotent: a re-sent batch has the same name and events)."""
    path = batch_path(batch)
    backend.replace(path, batch.model_dump_json(by_alias=True).encode())
    return path


def dead_letter(settings: Settings, batch: EventBatch, sink_name: str, error: str) -> str:
    """Keep a batch that sink `sink_name` could not take, with why; returns where (a path or an s3:// URL)."""
    backend = record_backend(settings)
    path = f"{DEAD_LETTERS}/{batch.pipeline_name}/{batch.execution_id}/{sink_name}/{_batch_name(batch)}"
    letter = DeadLetter(sink=sink_name, error=error, at=datetime.now(UTC), batch=batch)
    backend.replace(path, letter.model_dump_json(by_alias=True).encode())
    return backend.where(path)


def dead_letters(backend: RecordBackend, pipeline: str, execution_id: str | None = None) -> list[DeadLetter]:
    prefix = f"{DEAD_LETTERS}/{pipeline}/" + (f"{execution_id}/" if execution_id else "")
    found: list[DeadLetter] = []
    for document in backend.listing(prefix):
        data = backend.read(document.relative)
        if data is not None:
            try:
                found.append(DeadLetter.model_validate_json(data))
            except ValidationError:
                continue  # not one of ours
    return found


def recorded_events(backend: RecordBackend, pipeline: str, execution_id: str | None = None) -> list[PipelineEvent]:
    """The recorded events of the pipeline (or one execution), each once, in order per execution: by execution's
    first event, then time; the execution's own events before a stage's at the same instant, then sequence."""
    prefix = f"{EVENTS}/{pipeline}/" + (f"{execution_id}/" if execution_id else "")
    by_id: dict[str, tuple[str, PipelineEvent]] = {}
    for document in backend.listing(prefix):
        if not document.relative.endswith(".json"):
            continue
        data = backend.read(document.relative)
        if data is None:
            continue
        try:
            batch = EventBatch.model_validate_json(data)
        except ValidationError:
            continue
        for event in batch.events:
            by_id[event.id] = (batch.origin, event)
    starts: dict[str, datetime] = {}
    for _, event in by_id.values():
        known = starts.get(event.detail.execution_id)
        starts[event.detail.execution_id] = event.time if known is None else min(known, event.time)
    ordered = sorted(
        by_id.values(),
        key=lambda pair: (
            starts[pair[1].detail.execution_id],
            pair[1].detail.execution_id,
            pair[1].time,
            pair[0] != "execution",
            pair[0],
            pair[1].sequence,
        ),
    )
    return [event for _, event in ordered]


def stale_event_documents(
    backend: RecordBackend, retained: set[tuple[str, str]], cutoff: datetime
) -> list[RecordDocument]:
    """The record and dead letters of every execution no longer retained (not in `retained`, pipeline and execution
    id) and none of whose documents changed since `cutoff` (a batch still arriving is never removed)."""
    groups: dict[tuple[str, str], list[RecordDocument]] = {}
    for root in (EVENTS, DEAD_LETTERS):
        for document in backend.listing(f"{root}/"):
            parts = document.relative.split("/")
            if len(parts) >= 4:
                groups.setdefault((parts[1], parts[2]), []).append(document)
    stale: list[RecordDocument] = []
    for owner, documents in sorted(groups.items()):
        if owner not in retained and all(doc.last_modified < cutoff for doc in documents):
            stale += documents
    return stale
