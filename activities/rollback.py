"""Starting ROLLBACK executions: a workflow can start another top-level workflow only through an activity."""

from __future__ import annotations

import asyncio
import json

from temporalio import activity
from temporalio.exceptions import ApplicationError

from conveyor.interface import (
    Activity,
)
from conveyor.model import ManualRollbackStart, RollbackStart, TriggerType
from conveyor.rollback import RollbackRefused, check_rollback, rollback_spec, start_rollback_execution, target_state
from conveyor.spec.validation import parse_pipeline
from conveyor.stores.artifacts import ArtifactStore


class RollbackActivities:
    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    @activity.defn(name=Activity.START_MANUAL_ROLLBACK)
    async def start_manual_rollback(self, start: ManualRollbackStart) -> str:
        """`rollback_stage` on the coordinator: check CodePipeline's rules, then start the execution."""
        text = await asyncio.to_thread(self.store.get_document, start.digest)
        declaration = json.loads(text) | {"version": start.version}
        pipeline = parse_pipeline(declaration, f"{start.pipeline_name} (version {start.version})")
        client = activity.client()
        request = start.request
        try:
            target = await target_state(client, pipeline.name, request.target_execution_id)
            check_rollback(pipeline, request.stage_name, target, start.version)
        except RollbackRefused as refused:
            raise ApplicationError(str(refused), type="RollbackRefused", non_retryable=True) from None
        spec = rollback_spec(pipeline, request.stage_name, target, failed=None)
        return await start_rollback_execution(
            client,
            activity.info().task_queue,
            declaration,
            spec,
            target,
            trigger=TriggerType.MANUAL_ROLLBACK,
            started_by=request.by,
        )

    @activity.defn(name=Activity.START_ROLLBACK)
    async def start_rollback(self, request: RollbackStart) -> str:
        """After `onFailure: ROLLBACK`: re-run the stage with its last successful execution's inputs."""
        pipeline = parse_pipeline(request.pipeline, "<rollback>")
        client = activity.client()
        try:
            target = await target_state(client, pipeline.name, request.target_execution_id)
        except RollbackRefused as refused:
            raise ApplicationError(str(refused), type="RollbackRefused", non_retryable=True) from None
        spec = rollback_spec(pipeline, request.stage_name, target, request.failed_execution_id)
        return await start_rollback_execution(
            client,
            activity.info().task_queue,
            request.pipeline,
            spec,
            target,
            trigger=TriggerType.AUTOMATED_ROLLBACK,
            started_by=request.started_by,
        )
