"""Acting from the console in a real headless Chromium (tests/browser.py), against a real Temporal server and worker
and the real app on loopback: from the pipeline page, Review -> approve (and reject) with a summary, Stop (abandon),
Retry a failed stage, and a transition's Disable / Enable, each through its confirm page; a screenshot of every page,
and no page errors (the console's CSP refuses any inline script or style)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from temporalio.worker import Worker

from conveyor.client import ConveyorClient
from conveyor.interface import ApprovalStatus
from conveyor.model import ExecutionStatus
from tests.browser import assert_no_page_errors, expect, screenshot
from tests.helpers import waiting_token
from tests.test_console_auth import console
from tests.test_console_pages import registered, run

if TYPE_CHECKING:  # not at run time: without playwright the browser tests skip (fail in CI), not the collection
    from playwright.async_api import Page

CONFIG = {"trustedProxies": ["127.0.0.1/32"], "viewers": ["*"], "operators": ["olga"], "csrfSecretEnv": "CONSOLE_CSRF"}

GATE = """
name: gate
stages:
  - name: Prod
    actions:
      - {name: Gate, provider: Manual, configuration: {CustomData: "<img src=x onerror=alert(1)> ship it?"}}
"""


@asynccontextmanager
async def signed_in(conveyor: ConveyorClient, page: Page, user: str) -> AsyncIterator[str]:
    """The console on loopback, the page signed in as `user` (the SSO proxy's header on every request); its URL."""
    async with console(conveyor, **CONFIG) as http:
        await page.set_extra_http_headers({"X-Forwarded-User": user})
        try:
            yield str(http.base_url).rstrip("/")
        finally:
            await page.goto("about:blank")  # closes the pipeline page's event stream before the server stops


async def confirm(page: Page, says: str, shot: str) -> None:
    """The confirm page says what will happen; Confirm."""
    await expect(page.locator("p.confirm")).to_contain_text(says)
    await screenshot(page, shot)
    await page.get_by_role("button", name="Confirm").click()


async def test_approve_and_reject_from_the_pipeline_page(conveyor: ConveyorClient, worker: Worker, page: Page) -> None:
    name = (await registered(conveyor, GATE))["name"]
    first = await run(conveyor, name)
    await waiting_token(conveyor, first)
    async with signed_in(conveyor, page, "alice") as base:
        await page.goto(f"{base}/console/pipelines/{name}")
        await screenshot(page, "pipeline-waiting")
        await page.get_by_role("link", name="Review").click()
        await expect(page.locator("h1")).to_have_text("Approval Prod/Gate")
        await expect(page.locator("td.custom-data")).to_have_text("<img src=x onerror=alert(1)> ship it?")  # inert
        await screenshot(page, "approval")
        await page.fill("#summary", "checked <b>staging</b>")
        await page.get_by_role("button", name="Approve").click()
        await confirm(page, "approve Prod/Gate of execution", "approve-confirm")
        await expect(page.locator(".flash")).to_have_text(
            f"Approved by alice: Prod/Gate succeeded and execution {first.execution_id} goes on."
        )
        await screenshot(page, "approved")
        final = await asyncio.wait_for(conveyor.wait(first), 30)
        assert final.status == ExecutionStatus.SUCCEEDED
        approval = final.stage("Prod").actions[0].approval
        assert approval and (approval.by, approval.summary, approval.source) == (
            "alice",
            "checked <b>staging</b>",
            "console",
        )

        second = await run(conveyor, name)
        await waiting_token(conveyor, second)
        await page.goto(f"{base}/console/pipelines/{name}")
        await page.get_by_role("link", name="Review").click()
        await page.fill("#summary", "not today")
        await page.get_by_role("button", name="Reject").click()
        await confirm(page, "reject Prod/Gate", "reject-confirm")
        await expect(page.locator(".flash")).to_contain_text("Rejected by alice: Prod/Gate failed")
        await screenshot(page, "rejected")
        assert_no_page_errors(page)
    rejected = await asyncio.wait_for(conveyor.wait(second), 30)
    assert rejected.status == ExecutionStatus.FAILED
    assert rejected.stage("Prod").actions[0].approval.status == ApprovalStatus.REJECTED


async def test_stop_retry_and_a_transition_toggle(
    conveyor: ConveyorClient, worker: Worker, page: Page, tmp_path: Path
) -> None:
    fixed = tmp_path / "fixed"
    declaration = f"""
name: acts
conveyor: {{retryWindowMinutes: 10}}
variables: [{{name: Sleep, defaultValue: "0"}}]
stages:
  - name: Build
    actions:
      - {{name: Check, provider: Commands, commands: ["sleep #{{variables.Sleep}}", "test -f {fixed}"]}}
  - name: Prod
    actions:
      - {{name: Ship, provider: Noop}}
"""
    name = (await registered(conveyor, declaration))["name"]
    async with signed_in(conveyor, page, "olga") as base:
        # Stop and abandon a running execution.
        slow = await run(conveyor, name, variables={"Sleep": "60"})
        await page.goto(f"{base}/console/pipelines/{name}")
        await page.get_by_role("link", name="Stop").click()
        await page.check("input[value=abandon]")
        await page.fill("#reason", "wrong branch")
        await screenshot(page, "stop")
        await page.get_by_role("button", name="Stop").click()
        await confirm(page, "abandon its running actions at once", "stop-confirm")
        await expect(page.locator(".flash")).to_contain_text("(stopped by olga)")
        await screenshot(page, "stopped")
        assert (await asyncio.wait_for(conveyor.wait(slow), 20)).status == ExecutionStatus.STOPPED

        # Retry the failed stage once its cause is fixed.
        failed = await run(conveyor, name)
        assert (await asyncio.wait_for(conveyor.wait(failed), 30)).status == ExecutionStatus.FAILED
        fixed.touch()
        await page.goto(f"{base}/console/pipelines/{name}")
        await page.get_by_role("link", name="Retry").click()
        await screenshot(page, "retry")
        await page.get_by_role("button", name="Retry").click()
        await confirm(page, "retry stage Build of execution", "retry-confirm")
        await expect(page.locator(".flash")).to_contain_text("Stage Build is retried (by olga)")
        await screenshot(page, "retried")
        assert (await asyncio.wait_for(conveyor.wait(failed), 30)).status == ExecutionStatus.SUCCEEDED

        # Disable the transition into Prod with a reason, then enable it (the pipeline page's own form).
        await page.goto(f"{base}/console/pipelines/{name}")
        prod = page.locator("section.stage", has=page.locator(".stage-name", has_text="Prod"))
        await prod.get_by_label("reason for disabling the transition into Prod").fill("release freeze")
        await prod.get_by_role("button", name="Disable").click()
        await confirm(page, "disable the transition into stage Prod (reason: release freeze)", "disable-confirm")
        await expect(page.locator(".flash")).to_have_text("The transition into Prod is disabled (by olga).")
        await screenshot(page, "disabled")
        prod = page.locator("section.stage", has=page.locator(".stage-name", has_text="Prod"))
        await prod.get_by_role("button", name="Enable").click()
        await confirm(page, "enable the transition into stage Prod", "enable-confirm")
        await expect(page.locator(".flash")).to_have_text("The transition into Prod is enabled (by olga).")
        await screenshot(page, "enabled")
        assert_no_page_errors(page)
    assert (await conveyor.pipeline_state(name)).stage("Prod").transition.enabled
