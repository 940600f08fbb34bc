"""Scheduled and polled starts: Temporal Schedules per pipeline, and what each scheduled run does.

`sync_triggers` makes a pipeline's schedules (`<pipeline>/schedule` for its cron, `<pipeline>/poll`
for polling its source) match the declaration each time a version is applied. Each run of a
schedule starts a small `PipelineTrigger` workflow whose `fire_trigger` activity starts an execution
of the current version; for a poll, the execution id derives from the source's current revision (a Git
commit, an S3 object version, an ECR image digest: each source's contract names the function that reads it),
so a revision never starts twice and the id itself is the durable last-seen marker.
"""

from __future__ import annotations

import asyncio
import importlib
import json
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
from conveyor.providers.contract import PolledRevision, PollRequest, ProviderContract
from conveyor.providers.polling import poll_request, polled_source
from conveyor.settings import Settings
from conveyor.spec.declaration import Pipeline
from conveyor.spec.validation import parse_pipeline
from conveyor.starter import start_execution
from conveyor.stores.artifacts import ArtifactStore


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
            found = polled_source(pipeline)
            if found is None:
                raise ApplicationError(
                    f"pipeline '{pipeline.name}' has no Source action to poll (one whose provider can be polled, "
                    "without PollForSourceChanges: false or DetectChanges: false)",
                    non_retryable=True,
                )
            source, contract = found
            revision = await self._current_revision(contract, poll_request(pipeline, source))
            assert contract.poll is not None
            execution, started = await start_execution(
                client,
                task_queue,
                declaration,
                token=f"poll:{revision.revision_id}",  # a revision never starts twice
                source_revisions=[
                    SourceRevisionOverride(
                        action_name=source.name,
                        revision_type=contract.poll.revision_type,
                        revision_value=revision.revision_id,
                    )
                ],
                trigger=Trigger(trigger_type=TriggerType.POLL_FOR_SOURCE_CHANGES, trigger_detail=revision.detail),
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

    async def _current_revision(self, contract: ProviderContract, request: PollRequest) -> PolledRevision:
        """The source's current revision, read by the poll function its contract names in its activities module."""
        assert contract.poll is not None and contract.activity is not None
        read = getattr(importlib.import_module(contract.activity.module), contract.poll.function)
        revision: PolledRevision = await read(self.settings, request)
        return revision

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
