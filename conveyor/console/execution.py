"""The execution page: the stages and actions as a timeline (console/timeline.py drawn as inline SVG: rect
attributes, no style, so the CSP holds), what ran and with what (source revisions, variables, artifacts,
conditions, approvals, compensations, rollback links), pushed again over SSE while it changes; and each action's
log followed live over SSE (console/logs.py) until the action ends."""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from conveyor.client import ConveyorClient, ConveyorError, ExecutionRef
from conveyor.console import live
from conveyor.console.auth import Viewing
from conveyor.console.logs import follow_action_log
from conveyor.console.pages import client, fragment, href, render
from conveyor.console.timeline import RowKind, Segment, Timeline, TimelineRow, build_timeline
from conveyor.log_follow import log_owner
from conveyor.model import ConditionStatus, ExecutionState
from conveyor.spec.declaration import PipelineName, StageOrActionName
from conveyor.stores.errors import ArtifactError
from conveyor.stores.s3 import StoreUnavailableError
from conveyor.text import utc_time

router = APIRouter()
TIMELINE_EVENT = "timeline"  # SSE: the execution page's live fragment
LINES_EVENT = "lines"  # SSE: a batch of log lines, appended
END_EVENT = "end"  # SSE: the log is complete (the page closes its stream on it)
WIDTH = 1000.0  # the SVG's viewBox width: offsets scale to it; CSS stretches it to the column
ExecutionIdText = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9.@\-_]+$")]
LogName = Annotated[StageOrActionName, Path()]


def seconds_text(seconds: float) -> str:
    """`12.5s`, `3m07s`, `2h05m` (as conveyor.text.duration shows a span)."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@dataclass
class Rect:
    """One rectangle of a row's SVG: x and width in viewBox units, classes from a fixed set in console.css."""

    x: float
    width: float
    css: str
    title: str


@dataclass
class RowView:
    row: TimelineRow
    bar: Rect | None
    segments: list[Rect] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.row.action_name or self.row.stage_name


def _scaled(start: float, end: float, length: float) -> tuple[float, float]:
    scale = WIDTH / length if length > 0 else 0.0
    x = max(0.0, start) * scale
    width = max(2.0, (end - start) * scale)  # a moment still shows as a sliver
    return round(min(x, WIDTH - 2.0), 1), round(min(width, WIDTH - min(x, WIDTH - 2.0)), 1)


def _moment(timeline: Timeline, offset: float) -> str:
    origin = timeline.started_at
    return utc_time(origin + timedelta(seconds=offset)) if origin else f"+{seconds_text(offset)}"


def bar_title(timeline: Timeline, row: TimelineRow) -> str:
    """The accessible text of a bar: what, status, start, duration (and attempt, running)."""
    assert row.start is not None and row.end is not None
    what = f"action {row.action_name} ({row.stage_name})" if row.action_name else f"stage {row.stage_name}"
    attempt = f", attempt {row.attempt}" if row.attempt > 1 else ""
    going = ", still running" if row.running else ""
    return (
        f"{what}: {row.status or 'not started'}{attempt}, started {_moment(timeline, row.start)}, "
        f"{seconds_text(row.end - row.start)}{going}"
    )


def segment_title(timeline: Timeline, segment: Segment) -> str:
    status = f" {segment.status}" if segment.status else ""
    detail = f": {segment.detail}" if segment.detail else ""
    going = ", still running" if segment.running else ""
    return (
        f"{segment.label}{status}{detail} (from {_moment(timeline, segment.start)}, "
        f"{seconds_text(segment.end - segment.start)}{going})"
    )


def row_views(timeline: Timeline) -> list[RowView]:
    """Each timeline row's bar and segments scaled to the SVG's width; a row not started has no bar."""
    views = []
    for row in timeline.rows:
        if row.start is None or row.end is None:
            views.append(RowView(row, None))
            continue
        x, width = _scaled(row.start, row.end, timeline.length)
        status = row.status or "none"
        bar = Rect(x, width, f"bar bar-{status}{' running' if row.running else ''}", bar_title(timeline, row))
        segments = []
        for segment in row.segments:
            sx, swidth = _scaled(segment.start, segment.end, timeline.length)
            css = f"seg seg-{segment.kind.value}{' running' if segment.running else ''}"
            segments.append(Rect(sx, swidth, css, segment_title(timeline, segment)))
        views.append(RowView(row, bar, segments))
    return views


def view_context(state: ExecutionState, now: datetime) -> dict[str, Any]:
    """What the page's live part shows as of `now`: the timeline and the facts the timeline does not carry."""
    timeline = build_timeline(state, now)
    detail = f" ({state.trigger.trigger_detail})" if state.trigger.trigger_detail else ""
    return {
        "t": timeline,
        "rows": row_views(timeline),
        "trigger": f"{state.trigger.trigger_type.value}{detail}",
        "started_by": state.started_by,
        "terminal": state.status.is_terminal,
        "open_conditions": {c.stage_name for c in timeline.conditions if c.status == ConditionStatus.IN_PROGRESS},
        "kinds": RowKind,
        "width": WIDTH,
        "seconds_text": seconds_text,
    }


async def execution_view(conveyor: ConveyorClient, ref: ExecutionRef) -> dict[str, Any]:
    return view_context(await conveyor.state(ref), datetime.now(UTC))


@router.get("/pipelines/{name}/executions/{execution_id}")
async def execution_page(
    request: Request, name: PipelineName, execution_id: ExecutionIdText, _: Viewing
) -> HTMLResponse:
    view = await execution_view(client(request), ExecutionRef(name, execution_id))
    return render(
        request,
        "execution.html",
        stream=href("pipelines", name, "executions", execution_id, "stream"),
        timeline_event=TIMELINE_EVENT,
        **view,
    )


@router.get("/pipelines/{name}/executions/{execution_id}/stream")
async def execution_stream(
    request: Request, name: PipelineName, execution_id: ExecutionIdText, _: Viewing
) -> StreamingResponse:
    """The page's live part, re-rendered about every second and sent when it changed (a running bar grows)."""
    conveyor = client(request)
    ref = ExecutionRef(name, execution_id)

    async def render_live() -> str:
        try:
            return fragment(request, "execution_live.html", **await execution_view(conveyor, ref))
        except ConveyorError as err:
            return fragment(request, "problem.html", message=str(err))

    return live.stream(request, render_live, event=TIMELINE_EVENT)


@router.get("/pipelines/{name}/executions/{execution_id}/logs/{stage}/{action}")
async def log_page(
    request: Request, name: PipelineName, execution_id: ExecutionIdText, stage: LogName, action: LogName, _: Viewing
) -> HTMLResponse:
    ref = ExecutionRef(name, execution_id)
    _state, found = await client(request).action_state(
        ref, stage, log_owner(action)
    )  # a compensation's: its action's  # a missing one is a 404 now
    return render(
        request,
        "action_log.html",
        ref=ref,
        stage=stage,
        action=action,
        action_status=found.status.value if found.status else None,
        stream=href("pipelines", name, "executions", execution_id, "logs", stage, action, "stream"),
        lines_event=LINES_EVENT,
        end_event=END_EVENT,
    )


def lines_html(lines: list[str]) -> str:
    """A batch of log lines as escaped spans, one a line (so line ends survive SSE's data lines)."""
    return "".join(f'<span class="line">{html.escape(line)}</span>' for line in lines)


async def with_keepalive(batches: AsyncIterator[list[str]], every: float) -> AsyncIterator[list[str] | None]:
    """The batches, and None whenever `every` seconds pass without one (a quiet action: the stream says it is
    alive, so a proxy does not close it). The pending read is never cancelled mid-way, only when we stop."""
    pending: asyncio.Future[list[str]] = asyncio.ensure_future(anext(batches))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every)
            if not done:
                yield None
                continue
            try:
                batch = pending.result()
            except StopAsyncIteration:
                return
            yield batch
            pending = asyncio.ensure_future(anext(batches))
    finally:
        pending.cancel()


async def log_messages(
    conveyor: ConveyorClient,
    ref: ExecutionRef,
    stage: str,
    action: str,
    *,
    skip: int = 0,
    keepalive: float = live.KEEPALIVE,
) -> AsyncIterator[str]:
    """SSE messages: each batch of new lines (its id: the lines sent so far, so a browser reconnecting with
    Last-Event-ID gets only the lines after those it has: `skip`), a comment line when quiet, then one `end`
    saying how it ended (or why the log cannot be read)."""
    sent = 0
    try:
        async for batch in with_keepalive(follow_action_log(conveyor, ref, stage, action), keepalive):
            if batch is None:
                yield ": keepalive\n\n"
                continue
            new = batch[max(0, skip - sent) :]
            sent += len(batch)
            if new:
                yield f"id: {sent}\n" + live.message(LINES_EVENT, lines_html(new))
        ending = "The action has ended; this is its whole log."
    except (ConveyorError, ArtifactError, StoreUnavailableError) as err:
        ending = f"The log cannot be read: {err}"
    yield live.message(END_EVENT, f'<p class="log-end">{html.escape(ending)}</p>')


@router.get("/pipelines/{name}/executions/{execution_id}/logs/{stage}/{action}/stream")
async def log_stream(
    request: Request, name: PipelineName, execution_id: ExecutionIdText, stage: LogName, action: LogName, _: Viewing
) -> StreamingResponse:
    last = request.headers.get("last-event-id", "")
    skip = int(last) if last.isdigit() else 0  # the browser's EventSource reconnecting after a dropped stream
    return StreamingResponse(
        log_messages(client(request), ExecutionRef(name, execution_id), stage, action, skip=skip),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
