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

from temporalio.client import Client

from conveyor.interface import split_execution_workflow_id
from conveyor.memo import header_from_memo, stage_from_memo
from conveyor.model import StageFact

EXECUTIONS = "WorkflowType = 'PipelineExecution'"
SCAN_LIMIT = 500  # executions read at most to find a stage's newest entry


def quote(value: str) -> str:
    """A string literal for a visibility query."""
    return value.replace("\\", "\\\\").replace("'", "\\'")


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
    async for listed in client.list_workflows(query, limit=SCAN_LIMIT):
        memo = await listed.memo()
        for stage_name in stage_names:
            stage = stage_from_memo(memo, stage_name)
            entered = stage.started_at if stage else None
            if entered is not None and (stage_name not in newest or entered > newest[stage_name].at):
                newest[stage_name] = _fact(listed.id, memo, entered)
    return newest


async def last_succeeded(client: Client, pipeline_name: str, stage_name: str) -> StageFact | None:
    """The newest-started execution that succeeded in `stage_name`."""
    query = (
        f"{EXECUTIONS} AND PipelineName = '{quote(pipeline_name)}' AND PipelineStagesSucceeded = '{quote(stage_name)}'"
    )
    async for listed in client.list_workflows(query, limit=1):
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
