"""The console's remaining pages in a real headless Chromium (tests/browser.py): the pipelines list, a pipeline page,
"Release change" with a variable through its confirm page, the diff between two versions, and the page a person
without a role and a person without sign-in get; a screenshot of each, no page errors (the CSP refuses any inline
script or style), and what a person wrote shown as text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio.worker import Worker

from conveyor.client import ConveyorClient
from conveyor.model import ExecutionStatus
from tests.browser import assert_no_page_errors, expect, page_errors, screenshot
from tests.test_console_auth import console
from tests.test_console_browser_acting import CONFIG, confirm, signed_in
from tests.test_console_pages import TWO_STAGES, registered

if TYPE_CHECKING:  # not at run time: without playwright the browser tests skip (fail in CI), not the collection
    from playwright.async_api import Page

MARKUP = "<img src=x onerror=alert(1)>"


async def test_list_pipeline_release_change_and_diff(conveyor: ConveyorClient, worker: Worker, page: Page) -> None:
    data = await registered(conveyor, TWO_STAGES)
    name = data["name"]
    await conveyor.apply(data | {"stages": [data["stages"][0], {**data["stages"][1], "name": "Production"}]}, by="t")
    async with signed_in(conveyor, page, "olga") as base:
        await page.goto(f"{base}/console/pipelines")
        await expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
        await screenshot(page, "pipelines")

        await page.get_by_role("link", name=name, exact=True).click()
        await expect(page.get_by_role("heading", name="Release change")).to_be_visible()
        await screenshot(page, "pipeline")
        await page.locator("textarea#variables").fill(f"GREETING={MARKUP}")
        await page.get_by_role("button", name="Release change").click()
        await confirm(page, "start", "release-confirm")
        await expect(page.locator(".flash")).to_contain_text("Started: execution")
        await screenshot(page, "released")
        started = await conveyor.list(name, limit=1)
        assert started, "release change started no execution"
        final = await conveyor.wait(started[0].ref)
        assert final.status == ExecutionStatus.SUCCEEDED
        assert final.variables.get("GREETING") == MARKUP

        await page.goto(f"{base}/console/pipelines/{name}")  # the variable as the page shows it: text, not a tag
        await expect(page.locator("p.variables")).to_contain_text(MARKUP)
        assert await page.locator("p.variables img").count() == 0

        await page.get_by_role("link", name="diff with 1").click()
        await expect(page.locator(".diff-added")).to_contain_text("name: Production")
        await expect(page.locator(".diff-removed")).to_contain_text("name: Prod")
        await screenshot(page, "diff")
        assert_no_page_errors(page)


async def test_no_role_and_no_sign_in_get_pages_that_say_so(conveyor: ConveyorClient, page: Page) -> None:
    async with console(conveyor, **(CONFIG | {"viewers": ["vera"]})) as http:
        base = str(http.base_url).rstrip("/")
        response = await page.goto(f"{base}/console/pipelines")
        assert response is not None and response.status == 401
        await expect(page.locator("body")).to_contain_text("anonymous access is off")
        await screenshot(page, "not-signed-in")

        await page.set_extra_http_headers({"X-Forwarded-User": "mallory"})
        response = await page.goto(f"{base}/console/pipelines")
        assert response is not None and response.status == 403
        await expect(page.locator("body")).to_contain_text("needs the viewer role")
        await screenshot(page, "no-role")
        # The browser logs the 401 and 403 themselves as failed loads; anything else (a CSP violation) fails.
        assert not [e for e in page_errors(page) if "status of 40" not in e], page_errors(page)
