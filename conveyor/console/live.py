"""Server-sent events for htmx's SSE extension: a fragment re-rendered about every second while someone
listens, sent only when it changed (`sse-swap="EVENT"` on the element it replaces)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

INTERVAL = 1.0  # seconds between renders
KEEPALIVE = 15.0  # seconds: a comment line, so proxies do not close an idle stream


def message(event: str, html: str) -> str:
    """One SSE message; each line of the fragment is a `data:` line (the client joins them with newlines)."""
    data = "\n".join(f"data: {line}" for line in html.splitlines() or [""])
    return f"event: {event}\n{data}\n\n"


async def messages(
    request: Request, render: Callable[[], Awaitable[str]], event: str, interval: float = INTERVAL
) -> AsyncIterator[str]:
    last: str | None = None
    quiet_since = time.monotonic()
    while not await request.is_disconnected():
        html = await render()
        if html != last:
            last, quiet_since = html, time.monotonic()
            yield message(event, html)
        elif time.monotonic() - quiet_since > KEEPALIVE:
            quiet_since = time.monotonic()
            yield ": keepalive\n\n"
        await asyncio.sleep(interval)


def stream(
    request: Request, render: Callable[[], Awaitable[str]], *, event: str, interval: float = INTERVAL
) -> StreamingResponse:
    """The response of a `/stream` route: polls `render` server-side, stops when the client disconnects."""
    return StreamingResponse(
        messages(request, render, event, interval),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
