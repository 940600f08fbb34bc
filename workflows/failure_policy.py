"""What follows a stage's result: CodePipeline's failure policy as a pure function.

The execution workflow asks, and applies the answer; nothing here waits, records or talks to Temporal
(no temporalio import), so every rule is table-tested without a server (tests/test_failure_policy.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from conveyor.interface import ExecutionMode
from conveyor.model import StageRetryRequest, StageStatus
from conveyor.spec.declaration import FailureResult, Pipeline, RetryConfiguration, RollbackStrategy, Stage


class Next(StrEnum):
    CONTINUE = "CONTINUE"  # the stage succeeded: on to the next one
    SKIP = "SKIP"  # the stage counts as Skipped: on to the next one
    RETRY_AUTOMATICALLY = "RETRY_AUTOMATICALLY"  # onFailure RETRY with automatic retries left
    WAIT_FOR_MANUAL_RETRY = "WAIT_FOR_MANUAL_RETRY"  # failed, open for `retry_stage` during the retry window
    ROLL_BACK = "ROLL_BACK"  # failed, and a ROLLBACK execution redeploys the stage's last successful release
    FAIL = "FAIL"  # failed, for good
    STOP = "STOP"  # the stage was stopped: so is the execution (an abandoned one compensated first, if `compensate`)


@dataclass(frozen=True)
class Verdict:
    next: Next
    compensate: bool = False  # run the compensation saga before anything else follows
    compensate_earlier_stages: bool = False  # ...across the stages completed before this one too

    @property
    def failed(self) -> bool:
        return self.next in (Next.WAIT_FOR_MANUAL_RETRY, Next.ROLL_BACK, Next.FAIL)


@dataclass(frozen=True)
class StageOutcome:
    """What the policy judges: the stage's status (Failed when its onSuccess condition failed), and around it."""

    status: StageStatus | None
    failed_condition: str | None = None  # the result of the onSuccess/onFailure condition that failed
    retries_left: int = 0  # automatic retries still allowed (none once conditions were evaluated)
    stopping: bool = False  # a stop was requested
    abandoned: bool = False  # ...with abandon: running actions were cancelled mid-way
    rollback_execution: bool = False  # this execution is itself a ROLLBACK execution


def after_stage(stage: Stage, pipeline: Pipeline, outcome: StageOutcome) -> Verdict:
    """What follows a stage that ran (and whose onSuccess/onFailure conditions were evaluated)."""
    if outcome.status == StageStatus.SUCCEEDED:
        return Verdict(Next.CONTINUE)
    on_failure = stage.on_failure.result if stage.on_failure else None
    if outcome.status == StageStatus.STOPPED:
        # An abandoned stage may have actions cut off mid-way: a stage that rolls back on failure has them undone by
        # its compensations when the rollback rule compensates (the execution skips them when a ROLLBACK execution
        # would redeploy instead: an abandon starts none). A plain stop lets actions finish: nothing half done.
        abandoned = outcome.abandoned and on_failure == FailureResult.ROLLBACK
        earlier = abandoned and pipeline.conveyor.compensate_earlier_stages
        return Verdict(Next.STOP, compensate=abandoned, compensate_earlier_stages=earlier)
    if on_failure == FailureResult.RETRY and _may_retry(outcome):
        return Verdict(Next.RETRY_AUTOMATICALLY)
    if on_failure == FailureResult.SKIP:
        return Verdict(Next.SKIP)
    rolls_back = outcome.failed_condition == FailureResult.ROLLBACK or on_failure == FailureResult.ROLLBACK
    earlier = pipeline.conveyor.compensate_earlier_stages
    if rolls_back and not outcome.rollback_execution and redeploys(pipeline):
        # One rollback, never two: the ROLLBACK execution redeploys, so nothing is compensated (unless no
        # execution can be started: `without_rollback_target`).
        return Verdict(Next.ROLL_BACK)
    compensate = rolls_back or earlier
    return Verdict(_failed(pipeline, outcome.stopping), compensate=compensate, compensate_earlier_stages=earlier)


def redeploys(pipeline: Pipeline) -> bool:
    """Whether a ROLLBACK result starts a ROLLBACK execution (else it runs the compensations, the saga)."""
    return (
        pipeline.conveyor.rollback_strategy == RollbackStrategy.REDEPLOY
        and pipeline.execution_mode != ExecutionMode.PARALLEL
        and not pipeline.conveyor.compensate_earlier_stages  # asks for the saga across stages
    )


def without_rollback_target() -> Verdict:
    """ROLL_BACK, but no earlier execution succeeded in the stage on this version (a first release): the
    stage's own compensations undo it instead, and the execution fails."""
    return Verdict(Next.FAIL, compensate=True)


def before_entry(pipeline: Pipeline, failed_condition: str, *, stopping: bool = False) -> Verdict:
    """A beforeEntry condition failed: the stage never runs; SKIP moves on, anything else fails the execution."""
    if failed_condition == FailureResult.SKIP:
        return Verdict(Next.SKIP)
    return Verdict(_failed(pipeline, stopping))


def automatic_retry(stage: Stage) -> StageRetryRequest:
    """The retry onFailure RETRY asks for, in its declared retry mode."""
    on_failure = stage.on_failure
    configuration = (on_failure.retry_configuration if on_failure else None) or RetryConfiguration()
    return StageRetryRequest(stage_name=stage.name, retry_mode=configuration.retry_mode, by="onFailure: RETRY")


def _may_retry(outcome: StageOutcome) -> bool:
    return outcome.status == StageStatus.FAILED and outcome.retries_left > 0 and not outcome.stopping


def _failed(pipeline: Pipeline, stopping: bool) -> Next:
    """A failed execution stays open for its retry window (unless it is being stopped)."""
    if pipeline.conveyor.retry_window_minutes > 0 and not stopping:
        return Next.WAIT_FOR_MANUAL_RETRY
    return Next.FAIL
