"""Browser tests: Debian's headless Chromium driven by Playwright's async API (a pytest plugin, in conftest's
`pytest_plugins`).

- `browser` (session): one Chromium per test session, so one per pytest-xdist worker; starting it costs about a
  second, a context per test costs milliseconds. The executable is the system's (`chromium`, `chromium-browser` on
  PATH: .ci/run installs Debian's package), never a Playwright download. Missing browser or playwright: the test
  FAILS when CI is set (.ci/run installs both) and skips otherwise, with the reason.
- `page` (per test): a page in a fresh browser context (no cookies or storage shared between tests). Its console
  messages and uncaught errors are recorded: `assert_no_page_errors(page)` fails on any console error (Chromium
  reports a Content-Security-Policy violation and a failed resource load as one) or uncaught exception.
- `screenshot(page, name)`: a full-page PNG kept as an artifact in
  `$CONVEYOR_TEST_ARTIFACTS/screenshots/<test module>.<test name>/<name>.png` (default `test-artifacts/` at the
  repository root, gitignored); a test screenshots every page it visits. A failing test gets a `failure.png` of
  where it stopped.
- The marker `browser` is put on every test using these fixtures (`-m "not browser"` leaves them out).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

if TYPE_CHECKING:  # playwright is imported when a test needs the browser: the suite runs without it
    from playwright.async_api import Browser, ConsoleMessage, Error, Page

ROOT = Path(__file__).resolve().parent.parent
EXECUTABLES = ("chromium", "chromium-browser")
# Root in a container: Chromium's sandbox needs user namespaces it does not get there (Playwright's default is
# already no sandbox; said here so it stays so). /dev/shm can be tiny in a container: shared memory in /tmp.
LAUNCH_ARGS = ["--disable-dev-shm-usage"]
TIMEOUT_MS = 10_000  # each Playwright action and expectation: short, so a broken page fails fast


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real headless Chromium (tests/browser.py)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test using the browser is marked `browser` whether or not it says so (`-m "not browser"` is reliable)."""
    for item in items:
        if {"page", "browser", "chromium"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Each phase's report on the item, so the `page` fixture knows at teardown whether the test failed."""
    report = yield
    setattr(item, f"report_{call.when}", report)
    return report


def artifacts_dir() -> Path:
    return Path(os.environ.get("CONVEYOR_TEST_ARTIFACTS") or ROOT / "test-artifacts")


def find_chromium() -> str | None:
    return next((path for name in EXECUTABLES if (path := shutil.which(name))), None)


def missing(reason: str) -> None:
    """A system component the browser tests need is absent: a failure in CI (which installs it), a skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: .ci/run)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Observed:
    """What one test's page said: its console messages and uncaught errors."""

    test: str
    console: list[ConsoleMessage] = field(default_factory=list)
    errors: list[Error] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)


_observed: dict[Page, Observed] = {}


def observed(page: Page) -> Observed:
    try:
        return _observed[page]
    except KeyError:
        raise ValueError("not a page from the `page` fixture of tests/browser.py") from None


def page_errors(page: Page) -> list[str]:
    """The page's console errors (CSP violations, failed loads, console.error) and uncaught exceptions so far."""
    seen = observed(page)
    console = [
        f"console {m.type}: {m.text} ({m.location.get('url', '')})"
        for m in seen.console
        if m.type == "error" and not m.location.get("url", "").endswith("/favicon.ico")  # the browser's, unasked
    ]
    return console + [f"uncaught: {error.name}: {error.message}" for error in seen.errors]


def assert_no_page_errors(page: Page) -> None:
    errors = page_errors(page)
    assert not errors, "the page reported errors:\n" + "\n".join(errors)


def expect(target: Any, message: str | None = None) -> Any:
    """Playwright's `expect` (waiting assertions), imported late like the rest of playwright: a test module imports
    only tests.browser, so without playwright it is collected and its tests skip (or fail in CI)."""
    from playwright.async_api import expect as playwright_expect

    return playwright_expect(target, message)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "_"


async def screenshot(page: Page, name: str) -> Path:
    """Keep a full-page PNG of what the page shows now, as a test artifact; its path."""
    seen = observed(page)
    path = artifacts_dir() / "screenshots" / seen.test / f"{safe_name(name)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(path), full_page=True)
    seen.screenshots.append(path)
    return path


@dataclass
class Chromium:
    browser: Browser
    executable: str
    start_seconds: float  # from importing playwright to a launched browser: what each xdist worker pays once


@pytest_asyncio.fixture(scope="session")
async def chromium() -> AsyncIterator[Chromium]:
    executable = find_chromium()
    if executable is None:
        missing(f"no Chromium on PATH ({' or '.join(EXECUTABLES)}; Debian package chromium)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None
    if async_playwright is None:  # outside the except block: the skip or failure reads without a chained traceback
        missing("playwright is not installed (the `test` extra: pip install -e '.[test]')")
    assert executable is not None and async_playwright is not None
    started = time.monotonic()
    playwright = await async_playwright().start()
    try:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, chromium_sandbox=False, args=LAUNCH_ARGS
        )
        try:
            yield Chromium(browser, executable, time.monotonic() - started)
        finally:
            await browser.close()
    finally:
        await playwright.stop()


@pytest_asyncio.fixture(scope="session")
async def browser(chromium: Chromium) -> Browser:
    return chromium.browser


@pytest_asyncio.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = await context.new_page()
    seen = Observed(test=safe_name(f"{request.node.path.stem}.{request.node.name}"))  # unique across modules
    shutil.rmtree(artifacts_dir() / "screenshots" / seen.test, ignore_errors=True)  # this run's pages only
    page.on("console", lambda message: seen.console.append(message))  # a builtin cannot be Playwright's handler
    page.on("pageerror", lambda error: seen.errors.append(error))
    _observed[page] = seen
    try:
        yield page
        call: Any = getattr(request.node, "report_call", None)
        if call is not None and call.failed and not page.is_closed():
            try:
                await screenshot(page, "failure")
            except Exception:  # the failure itself is what matters; a page that cannot be shot adds nothing
                pass
    finally:
        del _observed[page]
        await context.close()
