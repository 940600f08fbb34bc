"""Facts about a pipeline's stages read from Temporal visibility (search attributes and memos).

PARALLEL executions do not report to the pipeline's coordinator (they never wait for each other, and
one coordinator per pipeline would serialize them all), so for them the coordinator's exact facts
(newest execution to enter a stage, last to succeed in it) are read from what each execution already
records: its `PipelineName`/`PipelineStagesSucceeded` search attributes and its per-stage memo. Visibility
is eventually consistent: an execution that entered a stage a moment ago may not be listed yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client

from conveyor import search_attributes as sa
from conveyor.interface import split_execution_workflow_id
from conveyor.memo import STAGE_KEY_PREFIX, header_from_memo, stage_from_memo
from conveyor.model import ExecutionStatus, StageFact, TriggerType

EXECUTIONS = "WorkflowType = 'PipelineExecution'"
SCAN_LIMIT = 500  # executions read at most to find a stage's newest entry
SCAN_PAGE = 50  # rows per visibility page while scanning (the scan usually ends in the first)


def quote(value: str) -> str:
    """A string literal for a visibility query."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


class ExecutionFilter(BaseModel):
    """Which executions a listing keeps (every field optional: None keeps all)."""

    pipeline: str | None = None
    status: ExecutionStatus | None = None
    trigger: TriggerType | None = None
    succeeded_in: str | None = None  # a stage the execution succeeded in
    source_revision: str | None = None  # a source revision id, full or short (search_attributes.revision_keys)


def matches_nothing(selected: ExecutionFilter) -> bool:
    """A keyword-list value with a double quote: SQLite visibility matches keyword lists with a full-text query
    that such a value breaks (the server answers "unterminated string" as Unavailable, which the client retries
    until its deadline), and no stage name or revision id holds one, so the listing is empty without asking."""
    return any('"' in (value or "") for value in (selected.succeeded_in, selected.source_revision))


def executions_query(selected: ExecutionFilter) -> str:
    """The visibility query for executions `selected` keeps: the one query builder (`conveyor list`, the
    console's history). Every value is a quoted literal: a quote in it cannot end the literal or widen the query."""
    conditions = [EXECUTIONS]
    equal: list[tuple[str, str | None]] = [
        (sa.PIPELINE_NAME.name, selected.pipeline),
        (sa.PIPELINE_STATUS.name, selected.status.value if selected.status else None),
        (sa.PIPELINE_TRIGGER.name, selected.trigger.value if selected.trigger else None),
        (sa.PIPELINE_STAGES_SUCCEEDED.name, selected.succeeded_in),
        (sa.PIPELINE_SOURCE_REVISIONS.name, selected.source_revision),
    ]
    conditions += [f"{name} = '{quote(value)}'" for name, value in equal if value]
    return " AND ".join(conditions)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def newest_entered(
    client: Client, pipeline_name: str, stage_name: str, *, started_after: datetime | None = None
) -> StageFact | None:
    """The execution that entered `stage_name` last, among those started after `started_after`."""
    return (await newest_entries(client, pipeline_name, [stage_name], started_after=started_after)).get(stage_name)


async def newest_entries(
    client: Client, pipeline_name: str, stage_names: list[str], *, started_after: datetime | None = None
) -> dict[str, StageFact]:
    """Per stage, the execution that entered it last, among those started after `started_after`; one
    pass over the SCAN_LIMIT most recent executions (a pipeline's history of executions can be long)."""
    query = f"{EXECUTIONS} AND PipelineName = '{quote(pipeline_name)}'"
    if started_after is not None:
        query += f" AND StartTime > '{_rfc3339(started_after)}'"
    newest: dict[str, StageFact] = {}
    # Visibility lists open executions first, then closed ones by close time, newest first (Temporal's order for
    # every store). A closed execution entered its stages before it closed, so once every stage has an entry newer
    # than the close time in hand, nothing listed after it can be newer: the scan ends there, usually within a
    # page, instead of reading SCAN_LIMIT memos (the console's pipeline page does this every second it is open).
    # page_size: the SDK's default page is 1,000 rows, read and sent whole however few are kept.
    async for listed in client.list_workflows(query, limit=SCAN_LIMIT, page_size=SCAN_PAGE):
        closed_at = listed.close_time
        if closed_at is not None and len(newest) == len(stage_names):
            if all(fact.at >= closed_at for fact in newest.values()):
                break
        memo = await listed.memo()
        for stage_name in stage_names:
            entered = _stage_started_at(memo, stage_name)
            if entered is not None and (stage_name not in newest or entered > newest[stage_name].at):
                newest[stage_name] = _fact(listed.id, memo, entered)
    return newest


def _stage_started_at(memo: Mapping[str, Any], stage_name: str) -> datetime | None:
    """A stage's start from its memo key without validating the whole stage (its actions): this runs for
    each stage of up to SCAN_LIMIT executions on every pipeline page."""
    entry = memo.get(STAGE_KEY_PREFIX + stage_name)
    started = entry.get("startedAt") if isinstance(entry, dict) else None
    if not isinstance(started, str):
        stage = stage_from_memo(memo, stage_name)  # an unexpected shape: the model decides
        return stage.started_at if stage else None
    return datetime.fromisoformat(started)


async def last_succeeded(client: Client, pipeline_name: str, stage_name: str) -> StageFact | None:
    """The newest-started execution that succeeded in `stage_name`."""
    query = (
        f"{EXECUTIONS} AND PipelineName = '{quote(pipeline_name)}' AND PipelineStagesSucceeded = '{quote(stage_name)}'"
    )
    async for listed in client.list_workflows(query, limit=1, page_size=1):
        memo = await listed.memo()
        stage = stage_from_memo(memo, stage_name)
        finished = stage.finished_at if stage else None
        return _fact(listed.id, memo, finished or listed.close_time or listed.start_time)
    return None


def _fact(workflow_id: str, memo: Mapping[str, Any], at: datetime) -> StageFact:
    header = header_from_memo(memo)
    return StageFact(
        execution_id=split_execution_workflow_id(workflow_id)[1],
        pipeline_version=header.pipeline_version if header else 1,
        at=at,
    )
