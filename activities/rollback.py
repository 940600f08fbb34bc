"""Starting ROLLBACK executions: a workflow can start another top-level workflow only through an activity."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from conveyor.model import RollbackStart, TriggerType
from conveyor.rollback import RollbackRefused, rollback_spec, start_rollback_execution, target_state
from conveyor.spec.validation import parse_pipeline


class RollbackActivities:
    @activity.defn(name="start_rollback")
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
