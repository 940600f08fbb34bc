"""Scheduled and polled starts: Temporal Schedules per pipeline, and what each scheduled run does.

`sync_triggers` makes a pipeline's schedules (`<pipeline>/schedule` for its cron, `<pipeline>/poll`
for polling its Git source) match the declaration each time a version is applied. Each run of a
schedule starts a small `PipelineTrigger` workflow whose `fire_trigger` activity starts an execution
of the current version; for a poll, the execution id derives from the commit, so a commit never
starts twice and the id itself is the durable last-seen marker.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from conveyor.interface import (
    Activity,
    Query,
    WorkflowType,
)
from conveyor.model import (
    CoordinatorState,
    SourceRevisionOverride,
    Trigger,
    TriggerFire,
    TriggerSync,
    TriggerType,
)
from conveyor.settings import Settings
from conveyor.spec.declaration import ActionCategory, Pipeline
from conveyor.spec.validation import parse_pipeline
from conveyor.starter import start_execution
from conveyor.stores.artifacts import ArtifactStore
from conveyor.variables import PIPELINE_VARIABLES, resolve


def schedule_id(pipeline: str, kind: str) -> str:
    return f"{pipeline}/{kind.lower()}"


class TriggerActivities:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store

    @activity.defn(name=Activity.SYNC_TRIGGERS)
    async def sync_triggers(self, sync: TriggerSync) -> None:
        client = activity.client()
        task_queue = activity.info().task_queue
        cron = ScheduleSpec(cron_expressions=[sync.cron], time_zone_name=sync.time_zone) if sync.cron else None
        poll = (
            ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=sync.poll_seconds))])
            if sync.poll_seconds
            else None
        )
        await _sync(client, task_queue, sync.pipeline_name, "Schedule", cron)
        await _sync(client, task_queue, sync.pipeline_name, "Poll", poll)

    @activity.defn(name=Activity.FIRE_TRIGGER)
    async def fire_trigger(self, fire: TriggerFire) -> str | None:
        """Start an execution of the pipeline's current version; a poll only when the branch moved."""
        client = activity.client()
        declaration, pipeline = await self._current(client, fire.pipeline_name)
        task_queue = activity.info().task_queue
        if fire.kind == "Poll":
            source, branch, commit = await _branch_head(pipeline)
            execution, started = await start_execution(
                client,
                task_queue,
                declaration,
                token=f"poll:{commit}",
                source_revisions=[SourceRevisionOverride(action_name=source, revision_value=commit)],
                trigger=Trigger(
                    trigger_type=TriggerType.POLL_FOR_SOURCE_CHANGES, trigger_detail=f"{branch} at {commit[:12]}"
                ),
                started_by="conveyor:poll",
                source_name=f"{fire.pipeline_name} (poll)",
            )
        else:
            execution, started = await start_execution(
                client,
                task_queue,
                declaration,
                token=f"schedule:{activity.info().workflow_id}",  # one execution per scheduled run
                trigger=Trigger(trigger_type=TriggerType.CLOUDWATCH_EVENT, trigger_detail="cron schedule"),
                started_by="conveyor:schedule",
                source_name=f"{fire.pipeline_name} (schedule)",
            )
        workflow_id = execution.workflow_id
        activity.logger.info("trigger %s: %s %s", fire.kind, workflow_id, "started" if started else "already started")
        return workflow_id if started else None

    async def _current(self, client: Client, name: str) -> tuple[dict[str, Any], Pipeline]:
        state = await client.get_workflow_handle(name).query(Query.STATE, result_type=CoordinatorState)
        current = state.current
        if current is None:
            raise ApplicationError(f"pipeline '{name}' has no applied version", non_retryable=True)
        text = await asyncio.to_thread(self.store.get_document, current.digest)
        declaration = json.loads(text) | {"version": current.version}
        return declaration, parse_pipeline(declaration, name)


async def _sync(client: Client, task_queue: str, pipeline: str, kind: str, spec: ScheduleSpec | None) -> None:
    handle = client.get_schedule_handle(schedule_id(pipeline, kind))
    if spec is None:
        try:
            await handle.delete()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        return
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            WorkflowType.TRIGGER.value,
            TriggerFire(pipeline_name=pipeline, kind=kind),
            id=f"{pipeline}/trigger-{kind.lower()}",
            task_queue=task_queue,
        ),
        spec=spec,
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(schedule_id(pipeline, kind), schedule)
    except Exception as err:  # noqa: BLE001 - already exists: update it in place (keeps its paused state)
        if "already" not in str(err).lower():
            raise

        def update(previous: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state = previous.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        await handle.update(update)


async def _branch_head(pipeline: Pipeline) -> tuple[str, str, str]:
    """(source action, branch, head commit) of the pipeline's Git source, read with `git ls-remote`."""
    source = next((a for a in pipeline.stages[0].actions if a.action_type_id.category == ActionCategory.SOURCE), None)
    if source is None or source.action_type_id.provider != "Git":
        raise ApplicationError(f"pipeline '{pipeline.name}' has no Git source action to poll", non_retryable=True)
    defaults = {PIPELINE_VARIABLES: {v.name: v.default_value or "" for v in pipeline.variables}}
    repository = resolve(source.configuration["RepositoryUrl"], defaults)
    branch = resolve(source.configuration.get("BranchName", "HEAD"), defaults)
    ref = branch if branch == "HEAD" else f"refs/heads/{branch}"
    process = await asyncio.create_subprocess_exec(
        "git",
        "ls-remote",
        repository,
        ref,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""), "GIT_TERMINAL_PROMPT": "0"},
    )
    out, err = await process.communicate()
    line = out.decode().split("\n", 1)[0].split()
    if process.returncode != 0 or not line:
        problem = err.decode().strip().splitlines()[0] if err.strip() else f"no branch '{branch}'"
        raise ApplicationError(f"cannot read {repository} {branch}: {problem}", type="SourceNotFound")
    return source.name, branch, line[0]
