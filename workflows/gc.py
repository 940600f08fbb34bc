"""The `ConveyorGc` workflow: what one run of the daily garbage collection schedule does."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from conveyor.gc import GcRequest, GcSummary
    from conveyor.interface import Activity, WorkflowType


@workflow.defn(name=WorkflowType.GC.value)
class GarbageCollectionWorkflow:
    @workflow.run
    async def run(self, request: GcRequest) -> GcSummary:
        summary: GcSummary = await workflow.execute_activity(
            Activity.COLLECT_GARBAGE,
            request,
            result_type=GcSummary,
            start_to_close_timeout=timedelta(hours=1),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        return summary
