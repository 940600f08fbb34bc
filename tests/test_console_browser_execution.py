"""The execution page in a real browser (tests/browser.py): the status and timeline change without a reload when
an approval is decided, a running action's log is followed live until it ends, markup that a pipeline or a person
wrote stays text (no element, no dialog), and no page error or CSP violation; screenshots of each page kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio.worker import Worker

from conveyor.client import ConveyorClient
from conveyor.console.auth import console_options
from conveyor.console.config import ConsoleConfig
from conveyor.model import ExecutionStatus
from conveyor.service.app import create_app
from tests.browser import assert_no_page_errors, expect, screenshot
from tests.helpers import pipeline, serving, waiting_token
from tests.test_console_auth import ENV
from tests.test_console_execution import EMITTING, IMG, MARKUP, RUN

if TYPE_CHECKING:  # not at run time: without playwright the browser tests skip (fail in CI), not the collection
    from playwright.async_api import Dialog, Page


@asynccontextmanager
async def console_url(conveyor: ConveyorClient) -> AsyncIterator[str]:
    """The real service with its console, anonymous viewers allowed (a browser sends no proxy header)."""

    async def client() -> ConveyorClient:
        return conveyor

    options = console_options(ConsoleConfig.model_validate({"anonymous": "viewer"}), None, ENV)
    async with serving(create_app(client, console=options)) as url:
        yield url


def no_dialogs(page: Page) -> list[str]:
    """Every alert/confirm the page opens (an injected script would); dismissed."""
    opened: list[str] = []

    async def seen(dialog: Dialog) -> None:
        opened.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", seen)
    return opened


async def test_a_status_change_is_seen_without_reload(conveyor: ConveyorClient, worker: Worker, page: Page) -> None:
    data = pipeline(RUN)
    ref, _ = await conveyor.start(data, variables={"GREETING": MARKUP})
    token = await waiting_token(conveyor, ref)
    dialogs = no_dialogs(page)
    async with console_url(conveyor) as base:
        await page.goto(f"{base}/console/pipelines/{data['name']}/executions/{ref.execution_id}")
        status = page.locator("#execution-status")
        await expect(status).to_have_text("InProgress")
        await expect(page.locator("table.approvals")).to_contain_text("may decide")
        await page.evaluate("window.loadedOnce = true")  # gone if the page reloads
        await screenshot(page, "waiting-for-approval")

        await conveyor.decide(ref, "Prod", "Gate", approve=True, summary=f"{IMG} ship it", token=token, by="lead")
        await expect(status).to_have_text("Succeeded")  # pushed over SSE
        assert await page.evaluate("window.loadedOnce === true")
        approvals = page.locator("table.approvals")
        await expect(approvals).to_contain_text("lead")
        await expect(approvals).to_contain_text(f"{IMG} ship it")  # the text itself, not an element
        await expect(page.locator("rect.bar-Succeeded")).to_have_count(4)
        await expect(page.locator("table.artifacts code.digest")).to_have_text(
            [a.digest for s in (await conveyor.state(ref)).stages for act in s.actions for a in act.output_artifacts]
        )
        await expect(page.locator("table.variables code.value").first).to_have_text(MARKUP)
        assert await page.locator("#execution-live img, #execution-live script, #execution-live i").count() == 0
        await screenshot(page, "succeeded")
        assert (await conveyor.state(ref)).status == ExecutionStatus.SUCCEEDED

        await page.click("a.log-link")  # the action's log, from the actions table
        await expect(page.locator("#log-end")).to_contain_text("whole log")
        await expect(page.locator("#log")).to_contain_text("<b>bold</b> <script>alert(3)</script>")
        assert await page.locator("#log b, #log script").count() == 0
        await screenshot(page, "log-of-a-finished-action")
        assert_no_page_errors(page)
        await page.goto("about:blank")  # closes the event streams before the server stops
    assert dialogs == []


async def test_a_running_actions_log_is_followed_live(
    conveyor: ConveyorClient, worker: Worker, page: Page, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    data = pipeline(EMITTING.format(gate=gate))
    ref, _ = await conveyor.start(data)
    dialogs = no_dialogs(page)
    async with console_url(conveyor) as base:
        await page.goto(f"{base}/console/pipelines/{data['name']}/executions/{ref.execution_id}/logs/Build/Emit")
        log = page.locator("#log")
        await expect(log).to_contain_text("line-5 <img src=x onerror=alert(5)>")
        await expect(page.locator("#log-end")).to_contain_text("Following the log")
        await screenshot(page, "following")
        gate.touch()  # the action goes on
        await expect(log).to_contain_text("line-10")
        await expect(page.locator("#log-end")).to_contain_text("whole log")
        lines = await page.locator("#log span.line").all_inner_texts()
        assert [line for line in lines if line.startswith("line-")] == [
            *(f"line-{i} <img src=x onerror=alert({i})>" for i in range(1, 6)),
            *(f"line-{i}" for i in range(6, 11)),
        ]  # each line once, in order: the stream closed at its end and did not reconnect
        assert await log.locator("img").count() == 0
        await screenshot(page, "ended")
        assert_no_page_errors(page)
        await page.goto("about:blank")
    assert dialogs == []
