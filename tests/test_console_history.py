"""The console's execution history against a real Temporal: each filter narrows to exactly the executions it names
(status, trigger, a stage succeeded in, a source revision full or short), pages return every execution once and in
order, and a filter value with a quote in it is a literal (it matches nothing; it neither errors nor widens)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.console.history import HistoryPage, HistoryQuery, HistoryTokenError, execution_history
from conveyor.model import ExecutionStatus, SourceRevisionOverride, Trigger, TriggerType
from conveyor.visibility import ExecutionFilter, executions_query
from tests.helpers import pipeline
from tests.test_webhooks import git, repository

DECLARATION = """
name: history
executionMode: PARALLEL
variables: [{{name: Outcome, defaultValue: ok}}]
stages:
  - name: Source
    actions:
      - {{name: Checkout, provider: Git, configuration: {{RepositoryUrl: "{repo}", BranchName: main}}}}
  - name: Build
    actions:
      - {{name: Compile, provider: Commands, commands: ['test "#{{variables.Outcome}}" = ok']}}
  - name: Deploy
    actions:
      - {{name: Ship, provider: Noop}}
"""


async def all_pages(conveyor: ConveyorClient, name: str, query: HistoryQuery) -> list[HistoryPage]:
    pages = [await execution_history(conveyor, name, query)]
    while pages[-1].next_token is not None:
        pages.append(
            await execution_history(conveyor, name, query.model_copy(update={"page_token": pages[-1].next_token}))
        )
    return pages


async def ids(conveyor: ConveyorClient, name: str, **filters: object) -> list[str]:
    page = await execution_history(conveyor, name, HistoryQuery.model_validate({**filters, "page_size": 50}))
    assert page.next_token is None
    return [row.execution_id for row in page.rows]


async def open_rows(conveyor: ConveyorClient, name: str) -> int:
    page = await execution_history(conveyor, name, HistoryQuery(page_size=50))
    return sum(row.open for row in page.rows)


async def test_history_filters_and_pages(conveyor: ConveyorClient, worker: Worker, tmp_path: Path) -> None:
    repo = repository(tmp_path / "repo", {"a.txt": "a\n"}, "first")
    first = git(repo, "rev-parse", "HEAD")
    (repo / "a.txt").write_text("b\n")
    git(repo, "commit", "-q", "-am", "second")
    second = git(repo, "rev-parse", "HEAD")
    declaration = pipeline(DECLARATION.format(repo=repo))
    name = declaration["name"]
    webhook = Trigger(trigger_type=TriggerType.WEBHOOK, trigger_detail="push")
    # (revision, outcome, trigger), started one after another so newest-first is unambiguous
    runs = [(first, "ok", None), (second, "fail", webhook), (second, "ok", None), (first, "ok", webhook)]
    refs: list[ExecutionRef] = []
    for revision, outcome, trigger in runs:
        ref, _ = await conveyor.start(
            declaration,
            variables={"Outcome": outcome},
            source_revisions=[SourceRevisionOverride(action_name="Checkout", revision_value=revision)],
            trigger=trigger,
        )
        await asyncio.wait_for(conveyor.wait(ref, interval=0.2), 60)
        refs.append(ref)
    one, two, three, four = (ref.execution_id for ref in refs)

    async def listed_with_attributes() -> None:  # visibility is eventually consistent
        # ... including each succeeded execution's close: one still indexed as running would be listed first.
        while (
            len(await ids(conveyor, name, source_revision=first)) < 2
            or len(await ids(conveyor, name)) < 4
            or await open_rows(conveyor, name) > 1
        ):
            await asyncio.sleep(0.2)

    await asyncio.wait_for(listed_with_attributes(), 20)

    # Visibility's order (SQL visibility has no ORDER BY): open workflows first, newest started first, then closed
    # ones, most recently closed first. The failed execution stays open for its retry window, so it leads.
    newest_first = [two, four, three, one]
    assert await ids(conveyor, name) == newest_first
    assert await ids(conveyor, name, status=ExecutionStatus.FAILED) == [two]
    assert await ids(conveyor, name, status="Succeeded") == [four, three, one]
    assert await ids(conveyor, name, trigger=TriggerType.WEBHOOK) == [two, four]
    assert await ids(conveyor, name, trigger="StartPipelineExecution") == [three, one]
    assert await ids(conveyor, name, succeeded_in="Build") == [four, three, one]
    assert await ids(conveyor, name, succeeded_in="Source") == newest_first
    assert await ids(conveyor, name, status="Succeeded", succeeded_in="Deploy") == [four, three, one]
    assert await ids(conveyor, name, source_revision=second) == [two, three]
    assert await ids(conveyor, name, source_revision=second[:7]) == [two, three]  # git's short id
    assert await ids(conveyor, name, source_revision=second[:12]) == [two, three]  # as `conveyor status` shows it
    assert await ids(conveyor, name, source_revision=first[:7], status="Succeeded", trigger="Webhook") == [four]
    assert await ids(conveyor, name, source_revision=second[:9]) == []  # an exact match, not a prefix search

    # A quote in a value is part of the literal: it cannot close it and add a condition that matches everything.
    for value in ("x' OR PipelineName != '", "Build' OR 'a' = 'a", "x\\' OR PipelineName != 'y", "it's"):
        assert await ids(conveyor, name, succeeded_in=value) == []
        assert await ids(conveyor, name, source_revision=value) == []

    page = await execution_history(conveyor, name, HistoryQuery(page_size=50))
    row = next(r for r in page.rows if r.execution_id == two)
    assert row.status == "Failed" and row.trigger == "Webhook" and row.pipeline_version == 1
    assert row.source_revisions == f"Checkout@{second[:12]}"
    assert row.open and not any(r.open for r in page.rows if r.execution_id != two)
    assert row.started_at and row.finished_at and row.duration_seconds is not None and row.duration_seconds > 0

    # Paging: every execution exactly once, in the same order as one page, whatever the page size.
    for size in (1, 2, 3):
        pages = await all_pages(conveyor, name, HistoryQuery(page_size=size))
        assert all(len(p.rows) <= size for p in pages)
        assert [r.execution_id for p in pages for r in p.rows] == newest_first
    filtered = await all_pages(conveyor, name, HistoryQuery(page_size=1, succeeded_in="Build"))
    assert [r.execution_id for p in filtered for r in p.rows] == [four, three, one]

    # A token pages through the filters it was given for: with others it is refused, not misapplied.
    token = filtered[0].next_token
    assert token is not None
    with pytest.raises(HistoryTokenError, match="start again from the first page"):
        await execution_history(conveyor, name, HistoryQuery(page_size=1, page_token=token))
    edited = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(HistoryTokenError, match="start again from the first page"):
        await execution_history(conveyor, name, HistoryQuery(page_size=1, succeeded_in="Build", page_token=edited))


async def test_a_token_the_history_did_not_give_is_refused_in_words(conveyor: ConveyorClient) -> None:
    for token in ("not base64!", "AAAA", "é"):
        with pytest.raises(HistoryTokenError, match="start again from the first page"):
            await execution_history(conveyor, "anything", HistoryQuery(page_token=token))


def test_the_query_names_each_filter_and_quotes_its_value() -> None:
    query = executions_query(
        ExecutionFilter(
            pipeline="shop",
            status=ExecutionStatus.FAILED,
            trigger=TriggerType.WEBHOOK,
            succeeded_in="Bu'ild",
            source_revision="a\\b",
        )
    )
    assert query == (
        "WorkflowType = 'PipelineExecution' AND PipelineName = 'shop' AND PipelineStatus = 'Failed' "
        "AND PipelineTrigger = 'Webhook' AND PipelineStagesSucceeded = 'Bu\\'ild' "
        "AND PipelineSourceRevisions = 'a\\\\b'"
    )
    assert executions_query(ExecutionFilter()) == "WorkflowType = 'PipelineExecution'"


def test_history_query_names_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="status"):
        HistoryQuery.model_validate({"status": "Exploded"})
    with pytest.raises(ValidationError, match="page_size"):
        HistoryQuery(page_size=0)
    with pytest.raises(ValidationError, match="page_size"):
        HistoryQuery(page_size=10_000)


async def test_the_benchmarks_fill_helper_makes_rows_like_real_ones(conveyor: ConveyorClient, worker: Worker) -> None:
    """bench/console_data.py, at tiny scale: real executions, then visibility-only copies that list as they do."""
    from bench.console_data import copy_history, fill_history, listed  # noqa: PLC0415 - bench is not the package

    filled = await asyncio.wait_for(fill_history(conveyor, 4, fail_every=2), 60)
    assert filled.statuses == {"Succeeded": 2, "Failed": 2}
    await copy_history(conveyor, filled, 8)  # each of the 4 real ones copied twice
    await listed(conveyor, filled.pipeline, 12, timeout=20)
    page = await execution_history(conveyor, filled.pipeline, HistoryQuery(page_size=50))
    assert len(page.rows) == 12 and not any(row.note for row in page.rows)  # not shown as terminated
    assert [row.status for row in page.rows].count("Failed") == 6
    failed = await execution_history(conveyor, filled.pipeline, HistoryQuery(status=ExecutionStatus.FAILED))
    assert len(failed.rows) == 6 and all(row.trigger for row in failed.rows)
