"""The recorder's metrics and spans: each recorded status change that starts or ends an execution, a stage or an
action is also counted or timed (conveyor/metrics.py), and an end is a span when tracing is on (workflows/tracing.py).
The meter is the workflow's, which records nothing while history is replayed; None (the recorder's unit tests)
records nothing."""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.common import MetricMeter

with workflow.unsafe.imports_passed_through():
    from conveyor import metrics
    from conveyor.interface import ActionCategory
    from conveyor.model import ActionState, ActionStatus, ExecutionStatus, StageState, StageStatus
    from workflows import tracing

_OPEN_STAGE = (StageStatus.IN_PROGRESS, StageStatus.STOPPING)


class TransitionMetrics:
    def __init__(self, meter: MetricMeter | None) -> None:
        self._meter = meter

    def pipeline(self, pipeline: str, before: ExecutionStatus | None, after: ExecutionStatus) -> None:
        if self._meter is None:
            return
        if before is None:
            metrics.execution_started(self._meter, pipeline)
        if after.is_terminal:
            metrics.execution_finished(self._meter, pipeline, after.value)
            tracing.finished("Pipeline", pipeline, {"conveyor.pipeline": pipeline, "conveyor.status": after.value})

    def stage(self, pipeline: str, stage: StageState, after: StageStatus, now: datetime) -> None:
        """A stage attempt that ran (a skipped stage never started: no duration) reached a final status."""
        if self._meter is None or after in _OPEN_STAGE or stage.started_at is None:
            return
        took = (stage.finished_at or now) - stage.started_at
        metrics.stage_finished(self._meter, pipeline, stage.stage_name, after.value, took)
        tracing.finished(
            "Stage",
            stage.stage_name,
            {
                "conveyor.pipeline": pipeline,
                "conveyor.stage": stage.stage_name,
                "conveyor.status": after.value,
                "conveyor.duration_seconds": took.total_seconds(),
            },
        )

    def action(self, pipeline: str, stage: str, action: ActionState, after: ActionStatus, now: datetime) -> None:
        if self._meter is None or after == ActionStatus.IN_PROGRESS or action.started_at is None:
            return
        took = (action.finished_at or now) - action.started_at
        metrics.action_finished(self._meter, pipeline, stage, action.action_name, action.provider, after.value, took)
        tracing.finished(
            "Action",
            action.action_name,
            {
                "conveyor.pipeline": pipeline,
                "conveyor.stage": stage,
                "conveyor.action": action.action_name,
                "conveyor.provider": action.provider,
                "conveyor.status": after.value,
                "conveyor.duration_seconds": took.total_seconds(),
            },
        )
        if action.category == ActionCategory.APPROVAL:
            outcome = action.approval.status.value if action.approval else after.value
            metrics.approval_decided(self._meter, pipeline, stage, action.action_name, outcome, took)
