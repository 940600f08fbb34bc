"""The `PipelineTrigger` workflow: what one run of a pipeline's schedule (cron or poll) does."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from conveyor.interface import (
        Activity,
        WorkflowType,
    )
    from conveyor.model import TriggerFire, nullable


@workflow.defn(name=WorkflowType.TRIGGER.value)
class PipelineTriggerWorkflow:
    @workflow.run
    async def run(self, fire: TriggerFire) -> str | None:
        """The execution started (PIPELINE/EXECUTION-ID), or None when there was nothing new."""
        started: str | None = await workflow.execute_activity(
            Activity.FIRE_TRIGGER, fire, result_type=nullable(str), start_to_close_timeout=timedelta(minutes=2)
        )
        return started
