"""The console's execution history page against a real Temporal server and worker, the real app on loopback:
each filter of the GET form narrows the rows, paging with the opaque token shows every execution once (with a way
back to the first page), a bad filter value or token is a clear 400, a filter value with markup is shown escaped
and a quote in one is taken literally; the first page follows new executions live; and in a real browser, paging
through and filtering (screenshots kept)."""

from __future__ import annotations

import asyncio
import html
import re
import time
from typing import TYPE_CHECKING, Any

import httpx
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.model import ExecutionState, Trigger, TriggerType
from conveyor.visibility import ExecutionFilter, executions_query
from tests.browser import assert_no_page_errors, expect, screenshot
from tests.test_console_auth import as_user, console
from tests.test_console_pages import read_event

if TYPE_CHECKING:
    from playwright.async_api import Page

VIEWERS = {"trustedProxies": ["127.0.0.1/32"], "viewers": ["vera"], "csrfSecretEnv": "CONSOLE_CSRF"}
VERA = as_user("vera")
COUNT = 7  # executions; every third fails at Deploy's condition, every odd one is a webhook


def declaration(name: str) -> dict[str, Any]:
    """Build (a Noop) and Deploy (a Noop behind a condition failing unless Outcome is ok), PARALLEL: the
    benchmark's pipeline, so the page is tested on what it is measured on."""
    from bench.console_data import console_pipeline  # noqa: PLC0415 - bench is not the package

    return console_pipeline(name)


def fails(index: int) -> bool:
    return index % 3 == 2


async def run_one(conveyor: ConveyorClient, data: dict[str, Any], index: int) -> ExecutionRef:
    trigger = Trigger(trigger_type=TriggerType.WEBHOOK if index % 2 else TriggerType.START_PIPELINE_EXECUTION)
    ref, _ = await conveyor.start(data, variables={"Outcome": "no" if fails(index) else "ok"}, trigger=trigger)
    try:
        await conveyor.temporal.get_workflow_handle(ref.workflow_id, result_type=ExecutionState).result()
    except WorkflowFailureError:
        pass  # a failed execution's workflow fails with it
    return ref


async def listed(conveyor: ConveyorClient, name: str, count: int) -> None:
    query = executions_query(ExecutionFilter(pipeline=name))
    deadline = time.monotonic() + 20
    while (await conveyor.temporal.count_workflows(query)).count < count:
        assert time.monotonic() < deadline, f"visibility lists fewer than {count} executions"
        await asyncio.sleep(0.2)


async def history(conveyor: ConveyorClient, name: str) -> list[ExecutionRef]:
    data = declaration(name)
    await conveyor.apply(data, by="tester")
    refs = list(await asyncio.gather(*(run_one(conveyor, data, index) for index in range(COUNT))))
    await listed(conveyor, name, COUNT)
    return refs


def row_ids(page: str) -> list[str]:
    return re.findall(r'<a class="id" href="/console/pipelines/[^/"]+/executions/([^"]+)">', page)


def link(page: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)" rel="{rel}">', page)
    return html.unescape(found.group(1)) if found else None


async def get(http: httpx.AsyncClient, url: str, status: int = 200) -> str:
    response = await http.get(url, headers=VERA)
    assert response.status_code == status, response.text
    return response.text


async def test_filters_narrow_and_paging_shows_each_execution_once(conveyor: ConveyorClient, worker: Worker) -> None:
    name = "history-page"
    refs = await history(conveyor, name)
    every = {ref.execution_id for ref in refs}
    failed = {ref.execution_id for i, ref in enumerate(refs) if fails(i)}
    webhooks = {ref.execution_id for i, ref in enumerate(refs) if i % 2}
    async with console(conveyor, **VIEWERS) as http:
        assert f'href="/console/pipelines/{name}/executions"' in await get(http, f"/console/pipelines/{name}")

        first = await get(http, f"/console/pipelines/{name}/executions")
        assert set(row_ids(first)) == every and link(first, "next") is None and link(first, "first") is None
        assert f'sse-connect="/console/pipelines/{name}/history-stream"' in first  # the first page is live

        seen: list[str] = []
        url: str | None = f"/console/pipelines/{name}/executions?page_size=3"
        pages = 0
        while url:
            page = await get(http, url)
            seen += row_ids(page)
            pages += 1
            if pages > 1:
                assert link(page, "first") == f"/console/pipelines/{name}/executions?page_size=3"
                assert "sse-connect" not in page  # a later page does not shift under the reader
            url = link(page, "next")
        assert pages == 3 and len(seen) == COUNT and set(seen) == every

        base = f"/console/pipelines/{name}/executions"
        assert set(row_ids(await get(http, f"{base}?status=Failed"))) == failed
        assert set(row_ids(await get(http, f"{base}?trigger=Webhook"))) == webhooks
        assert set(row_ids(await get(http, f"{base}?succeeded_in=Deploy"))) == every - failed
        assert set(row_ids(await get(http, f"{base}?succeeded_in=Build"))) == every
        both = await get(http, f"{base}?status=Failed&trigger=Webhook&succeeded_in=Build")
        assert set(row_ids(both)) == failed & webhooks
        assert 'option value="Failed" selected' in both and 'name="succeeded_in" value="Build"' in both
        assert row_ids(await get(http, f"{base}?source_revision=0123456789ab")) == []  # no source action ran

        # A next token belongs to its filters: reused with others it is refused, not answered differently.
        token = link(await get(http, f"{base}?page_size=3"), "next")
        assert token
        token_value = token.split("page=")[1]
        refused = await get(http, f"{base}?status=Failed&page_size=3&page={token_value}", status=400)
        assert "not one the history page gave out" in refused and row_ids(refused) == []
        assert "not one the history page gave out" in await get(http, f"{base}?page=garbage!", status=400)


async def test_bad_and_hostile_filter_values(conveyor: ConveyorClient, worker: Worker) -> None:
    name = "history-hostile"
    refs = await history(conveyor, name)
    base = f"/console/pipelines/{name}/executions"
    async with console(conveyor, **VIEWERS) as http:
        bad = await get(http, f"{base}?status=Sideways", status=400)
        assert "status: Input should be" in bad and "Traceback" not in bad
        assert "page size: Input should be less than or equal to 200" in await get(
            http, f"{base}?page_size=5000", status=400
        )

        markup = '<img src=x onerror=alert(1)>"'
        page = await get(http, base + "?" + str(httpx.QueryParams({"source_revision": markup})))
        assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;&#34;" in page
        assert row_ids(page) == [] and "No execution matches these filters" in page

        # A quote is part of the value: it neither ends the literal (an error) nor widens the query (every row).
        for value in ["Deploy' OR PipelineName != '", 'Build" OR "x', 'Build"']:
            quoted = await get(http, base + "?" + str(httpx.QueryParams({"succeeded_in": value})))
            assert row_ids(quoted) == [], value
        assert len(row_ids(await get(http, base + "?succeeded_in=Build"))) == len(refs)


async def test_the_first_page_follows_new_executions(conveyor: ConveyorClient, worker: Worker) -> None:
    name = "history-live"
    data = declaration(name)
    await conveyor.apply(data, by="tester")
    first = await run_one(conveyor, data, 0)
    await listed(conveyor, name, 1)
    async with console(conveyor, **VIEWERS) as http:
        url = f"/console/pipelines/{name}/history-stream?trigger=Webhook"
        async with http.stream("GET", url, headers=VERA) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert "No execution matches these filters" in await asyncio.wait_for(read_event(lines), 10)
            second = await run_one(conveyor, data, 1)  # a webhook: the filter keeps it

            async def until_listed() -> str:
                while True:
                    fragment = await read_event(lines)
                    if second.execution_id in fragment:
                        return fragment

            fragment = await asyncio.wait_for(until_listed(), 15)
            assert first.execution_id not in fragment  # the stream keeps the filter


async def test_browser_pages_through_and_filters(conveyor: ConveyorClient, worker: Worker, page: Page) -> None:
    name = "history-browser"
    refs = await history(conveyor, name)
    failed = {ref.execution_id for i, ref in enumerate(refs) if fails(i)}
    async with console(conveyor, anonymous="viewer") as http:
        await page.goto(f"{http.base_url}/console/pipelines/{name}")
        await page.get_by_role("link", name="execution history").click()
        await expect(page.locator("table.history tbody tr")).to_have_count(COUNT)
        await screenshot(page, "history-first-page")

        await page.goto(f"{http.base_url}/console/pipelines/{name}/executions?page_size=3")
        seen: list[str] = []
        for number in range(3):
            rows = page.locator("table.history tbody tr td:first-child a")
            await expect(rows.first).to_be_visible()
            seen += await rows.all_inner_texts()
            await screenshot(page, f"history-page-{number + 1}")
            if number < 2:
                await page.get_by_role("link", name="Next page").click()
        assert sorted(seen) == sorted(ref.execution_id for ref in refs)
        await expect(page.get_by_role("link", name="Next page")).to_have_count(0)
        await page.get_by_role("link", name="First page").click()
        await expect(page.locator("table.history tbody tr")).to_have_count(3)

        await page.get_by_label("Status").select_option("Failed")
        await page.get_by_role("button", name="Filter").click()
        await expect(page).to_have_url(re.compile(r"status=Failed"))
        shown = page.locator("table.history tbody tr td:first-child a")
        await expect(shown).to_have_count(min(3, len(failed)))
        assert set(await shown.all_inner_texts()) <= failed
        await screenshot(page, "history-filtered")
        target = await shown.first.get_attribute("href")  # the execution page (another part of the console)
        assert target == f"/console/pipelines/{name}/executions/{(await shown.first.inner_text()).strip()}"
        assert_no_page_errors(page)
