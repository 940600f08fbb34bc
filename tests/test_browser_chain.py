"""The browser chain the console's browser tests stand on, proven without the console: Debian's Chromium through
Playwright loads a page served over loopback under the console's Content-Security-Policy with the vendored htmx and
its SSE extension; an hx-post button swaps in the server's reply and an SSE connection swaps in a pushed fragment.
The console's browser tests are modelled on this one (tests/browser.py: `page`, `screenshot`,
`assert_no_page_errors`)."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

import conveyor
from tests.browser import assert_no_page_errors, expect, page_errors, screenshot
from tests.helpers import serving

if TYPE_CHECKING:  # not at run time: without playwright the browser tests skip (fail in CI), not the collection
    from playwright.async_api import Page

STATIC = Path(conveyor.__file__).parent / "console" / "static"
CSP = "default-src 'self'"


def vendored(pattern: str) -> str:
    """The one vendored file whose name matches (its version is in the name; one version at a time)."""
    names = [path.name for path in STATIC.glob(pattern)]
    assert len(names) == 1, f"expected one {pattern} in {STATIC}, found {names}"
    return names[0]


def page_html(htmx_config: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>chain</title>{htmx_config}
<script src="/static/{vendored("htmx-2.0.*.min.js")}"></script>
<script src="/static/{vendored("htmx-ext-sse-2.*.js")}"></script>
</head><body>
<h1>htmx chain</h1>
<button id="go" hx-post="/clicked" hx-target="#reply" hx-swap="innerHTML">Go</button>
<div id="reply">nothing yet</div>
<div hx-ext="sse" sse-connect="/events"><div id="live" sse-swap="status">waiting</div></div>
</body></html>"""


# htmx 2 injects an inline <style> for its request indicators unless told not to; `default-src 'self'` refuses it.
NO_INLINE_STYLE = """<meta name="htmx-config" content='{"includeIndicatorStyles": false}'>"""


def chain_app(htmx_config: str = NO_INLINE_STYLE) -> tuple[FastAPI, asyncio.Queue[str], asyncio.Event]:
    """The page, a reply for the button, and an SSE stream pushing what the test puts in the queue."""
    app = FastAPI()
    pushed: asyncio.Queue[str] = asyncio.Queue()
    listening = asyncio.Event()

    @app.middleware("http")
    async def csp(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        return response

    @app.get("/")
    async def index() -> HTMLResponse:
        return HTMLResponse(page_html(htmx_config))

    @app.post("/clicked")
    async def clicked(request: Request) -> HTMLResponse:
        # HX-Request: the request came from htmx, not from a plain form submission
        return HTMLResponse(f"<strong>clicked (HX-Request: {request.headers.get('HX-Request')})</strong>")

    @app.get("/events")
    async def events(request: Request) -> StreamingResponse:
        async def stream() -> AsyncIterator[str]:
            listening.set()
            while not await request.is_disconnected():
                try:
                    fragment = await asyncio.wait_for(pushed.get(), 0.5)
                except TimeoutError:
                    yield ": keep-alive\n\n"  # a write, so a closed connection is noticed
                    continue
                yield f"event: status\ndata: {fragment}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app, pushed, listening


async def test_htmx_post_and_sse_swap_under_the_consoles_csp(page: Page) -> None:
    app, pushed, listening = chain_app()
    async with serving(app) as base:
        await page.goto(base + "/")
        await screenshot(page, "loaded")
        assert await page.evaluate("typeof htmx === 'object' && htmx.version") == vendored("htmx-2.0.*.min.js")[5:-7]
        assert_no_page_errors(page)

        await page.click("#go")
        await expect(page.locator("#reply strong")).to_have_text("clicked (HX-Request: true)")
        await screenshot(page, "after-post")

        await asyncio.wait_for(listening.wait(), 10)
        pushed.put_nowait('<span class="status">Succeeded</span>')
        await expect(page.locator("#live span.status")).to_have_text("Succeeded")
        await screenshot(page, "after-sse")
        assert_no_page_errors(page)
        await page.goto("about:blank")  # closes the event stream before the server stops


async def test_a_csp_violation_fails_the_page_check(page: Page) -> None:
    """assert_no_page_errors can fail: htmx's default inline indicator style is refused under the console's CSP."""
    app, _, _ = chain_app(htmx_config="")
    async with serving(app) as base:
        await page.goto(base + "/")
        await expect(page.locator("#reply")).to_have_text("nothing yet")
        await screenshot(page, "refused-style")
        await page.goto("about:blank")
    errors = page_errors(page)
    assert any("Content Security Policy" in error for error in errors), errors
    with pytest.raises(AssertionError, match="Content Security Policy"):
        assert_no_page_errors(page)


def test_vendored_files_are_what_the_static_readme_records() -> None:
    """Each vendored file's sha256 is the one README.md records with its package and version (a hand edit or a
    half-done upgrade shows here)."""
    readme = (STATIC / "README.md").read_text()
    recorded = dict(re.findall(r"^- `([^`]+)`: sha256 `([0-9a-f]{64})`$", readme, re.MULTILINE))
    vendored_files = {vendored(p) for p in ("htmx-2.0.*.min.js", "htmx-ext-sse-2.*.js")} | {
        "htmx-LICENSE",
        "htmx-ext-sse-LICENSE",
    }
    assert set(recorded) == vendored_files
    for name, digest in recorded.items():
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
