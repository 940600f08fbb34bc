"""The compensation saga: undo what a failed stage (and, if declared, the stages before it) did.

Steps run in reverse order of start, each up to `COMPENSATION_ATTEMPTS` times with a growing pause; a step
that still fails is recorded and the remaining ones run. Shielded: a cancel waits for the saga to end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from conveyor.model import (
        ActionContext,
        ActionOutcome,
        CompensationStatus,
        CompensationStep,
        ErrorDetails,
        StageResult,
    )
    from conveyor.providers.registry import compensation_call
    from conveyor.settings import compensation_log_name
    from conveyor.spec.declaration import Pipeline
    from workflows.action import INFRASTRUCTURE_RETRY
    from workflows.recorder import Recorder

COMPENSATION_ATTEMPTS = 3


class CompensationSaga:
    def __init__(self, pipeline: Pipeline, recorder: Recorder, results: Mapping[str, StageResult]) -> None:
        self._pipeline = pipeline
        self._recorder = recorder
        self._results = results  # each stage's last result: the compensations it registered

    async def compensate(self, failed_index: int, *, earlier: bool) -> None:
        """Undo what was done, in reverse order of start: the failed stage's started actions, then (a saga
        across stages) the stages completed before it. Shielded: a cancel does not interrupt it."""
        steps: list[CompensationStep] = []
        indexes = range(failed_index, -1, -1) if earlier else [failed_index]
        for i in indexes:
            result = self._results.get(self._pipeline.stages[i].name)
            if result is not None:
                steps += sorted(result.compensations, key=lambda c: c.sequence, reverse=True)
        if not steps:
            return
        task = asyncio.create_task(self._run_all(steps))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task  # keep compensating, then let the cancellation through
            raise

    async def _run_all(self, steps: list[CompensationStep]) -> None:
        state = self._recorder.state
        for step in steps:
            stage_state = state.stage(step.stage_name)
            assert stage_state is not None
            action = next(a for a in stage_state.actions if a.action_name == step.action_name)
            progress = self._recorder.compensation_started(stage_state, action)
            while True:
                context = ActionContext(
                    pipeline_name=self._pipeline.name,
                    execution_id=state.execution_id,
                    stage_name=step.stage_name,
                    action_name=compensation_log_name(step.action_name),
                    stage_attempt=stage_state.attempt,
                    action_attempt=progress.attempt,
                )
                try:
                    await self._run_step(step, context)
                    status = CompensationStatus.SUCCEEDED
                    break
                except ActivityError as err:
                    cause = err.cause
                    progress.error = ErrorDetails(
                        code=getattr(cause, "type", None) or "CompensationError",
                        message=getattr(cause, "message", None) or str(cause or err),
                    )
                    if progress.attempt >= COMPENSATION_ATTEMPTS:
                        status = CompensationStatus.FAILED  # recorded; the remaining compensations still run
                        break
                    await workflow.sleep(timedelta(seconds=2**progress.attempt))
                    progress.attempt += 1
            self._recorder.compensation_finished(stage_state, progress, status)

    async def _run_step(self, step: CompensationStep, context: ActionContext) -> None:
        """One attempt of one compensation step (its activity retries only infrastructure failures)."""
        call = compensation_call(step, context)  # the step's provider says which activity undoes it
        await workflow.execute_activity(
            call.activity,
            call.input,
            result_type=ActionOutcome,
            start_to_close_timeout=call.timeout,
            heartbeat_timeout=timedelta(seconds=self._pipeline.conveyor.heartbeat_timeout_seconds),
            retry_policy=INFRASTRUCTURE_RETRY,
        )
