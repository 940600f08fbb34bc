"""A pipeline's execution history for the console: one page at a time, filtered by status, trigger, a stage it
succeeded in or a source revision. Built on `ConveyorClient.list_page` (the query builder `conveyor list` uses):
one visibility call per page, so a page costs the same with ten executions or ten thousand."""

from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime

from pydantic import BaseModel, Field

from conveyor.client import ConveyorClient, ExecutionSummary
from conveyor.model import ExecutionStatus, TriggerType
from conveyor.visibility import ExecutionFilter, executions_query

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 200
REVISION_CHARS = 12  # a revision id as `conveyor status` shortens it
BAD_TOKEN = "the page token is not one the history page gave out for these filters: start again from the first page"
TOKEN_VERSION = b"\x01"
BINDING_BYTES = 8


class HistoryTokenError(ValueError):
    """A next-page token this module did not hand out (edited or truncated in a URL)."""


class HistoryQuery(BaseModel):
    """What the history page asks for: its filters (None: any) and which page."""

    status: ExecutionStatus | None = None
    trigger: TriggerType | None = None
    succeeded_in: str | None = Field(default=None, max_length=200)  # a stage name
    source_revision: str | None = Field(default=None, max_length=200)  # a revision id, full or short
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    page_token: str | None = None  # HistoryPage.next_token of the page before


class HistoryRow(BaseModel):
    execution_id: str
    status: str  # ExecutionStatus's value, or Temporal's word when Temporal closed the workflow first
    note: str | None = None  # terminated/timed out through Temporal, or stuck
    trigger: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None  # None while it runs
    source_revisions: str = ""  # "Source@0123456789ab, Other@..." (action and shortened revision id)
    pipeline_version: int | None = None
    open: bool = False  # its workflow is open: running, or failed and still retryable (within its retry window)


class HistoryPage(BaseModel):
    pipeline: str
    rows: list[HistoryRow]
    next_token: str | None = None  # opaque and URL-safe; None: this is the last page


async def execution_history(client: ConveyorClient, pipeline: str, query: HistoryQuery) -> HistoryPage:
    """One page of `pipeline`'s executions in visibility's order (SQL visibility has no ORDER BY): open ones first
    (running, or failed within their retry window), newest started first; then closed ones, last closed first."""
    selected = ExecutionFilter(
        pipeline=pipeline,
        status=query.status,
        trigger=query.trigger,
        succeeded_in=query.succeeded_in or None,
        source_revision=query.source_revision or None,
    )
    page = await client.list_page(selected, query.page_size, decode_token(selected, query.page_token))
    return HistoryPage(
        pipeline=pipeline,
        rows=[history_row(summary) for summary in page.rows],
        next_token=encode_token(selected, page.next_page_token),
    )


def history_row(summary: ExecutionSummary) -> HistoryRow:
    return HistoryRow(
        execution_id=summary.execution_id,
        status=summary.status,
        note=summary.note,
        trigger=summary.trigger,
        started_at=summary.started_at,
        finished_at=summary.finished_at,
        duration_seconds=summary.duration_seconds,
        source_revisions=revisions_summary(summary.source_revisions),
        pipeline_version=summary.pipeline_version,
        open=summary.temporal_status == "RUNNING",
    )


def revisions_summary(revisions: list[str]) -> str:
    """`ExecutionSummary.source_revisions` ("action:revision") as one short line."""
    parts = []
    for revision in revisions:
        action, _, revision_id = revision.partition(":")  # action names have no colon
        parts.append(f"{action}@{revision_id[:REVISION_CHARS]}" if action else revision_id[:REVISION_CHARS])
    return ", ".join(parts)


def encode_token(selected: ExecutionFilter, token: bytes | None) -> str | None:
    """Temporal's page token, bound to the filters it pages through (a token reused with other filters, or
    edited in the URL, is refused rather than answering a different question)."""
    if not token:
        return None
    text = TOKEN_VERSION + _binding(selected, token) + token
    return base64.urlsafe_b64encode(text).decode("ascii").rstrip("=")


def decode_token(selected: ExecutionFilter, token: str | None) -> bytes | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise HistoryTokenError(BAD_TOKEN) from None
    version, binding, temporal = raw[:1], raw[1 : 1 + BINDING_BYTES], raw[1 + BINDING_BYTES :]
    if version != TOKEN_VERSION or not temporal or binding != _binding(selected, temporal):
        raise HistoryTokenError(BAD_TOKEN)
    return temporal


def _binding(selected: ExecutionFilter, token: bytes) -> bytes:
    return hashlib.sha256(executions_query(selected).encode() + b"\0" + token).digest()[:BINDING_BYTES]
