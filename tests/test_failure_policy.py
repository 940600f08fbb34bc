"""The failure policy's table: what follows a stage's result, without a server (workflows/failure_policy.py)."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.model import StageStatus
from conveyor.spec.declaration import Pipeline, Stage
from workflows.failure_policy import (
    Next,
    StageOutcome,
    Verdict,
    after_stage,
    automatic_retry,
    before_entry,
    redeploys,
    without_rollback_target,
)

FAILED, SUCCEEDED, STOPPED = StageStatus.FAILED, StageStatus.SUCCEEDED, StageStatus.STOPPED


def declared(on_failure: dict[str, Any] | None = None, **conveyor: Any) -> tuple[Stage, Pipeline]:
    stage: dict[str, Any] = {
        "name": "Deploy",
        "actions": [{"name": "Go", "provider": "Commands", "commands": ["true"]}],
    }
    if on_failure is not None:
        stage["onFailure"] = on_failure
    source = {"name": "Source", "actions": [{"name": "Src", "provider": "Commands", "commands": ["true"]}]}
    pipeline = Pipeline.model_validate({"name": "p", "conveyor": conveyor, "stages": [source, stage]})
    return pipeline.stages[1], pipeline


WAIT = Verdict(Next.WAIT_FOR_MANUAL_RETRY)
ROLLS_BACK = Verdict(Next.ROLL_BACK)  # a ROLLBACK execution redeploys: nothing is compensated as well
COMPENSATES = Verdict(Next.WAIT_FOR_MANUAL_RETRY, compensate=True)

AFTER_STAGE: list[tuple[str, dict[str, Any] | None, dict[str, Any], StageOutcome, Verdict]] = [
    ("success continues", None, {}, StageOutcome(SUCCEEDED), Verdict(Next.CONTINUE)),
    (
        "success continues, retries left or not",
        {"result": "RETRY"},
        {},
        StageOutcome(SUCCEEDED, retries_left=1),
        Verdict(Next.CONTINUE),
    ),
    ("a stopped stage stops the execution", None, {}, StageOutcome(STOPPED), Verdict(Next.STOP)),
    (
        "a stopped stage stops, whatever onFailure",
        {"result": "ROLLBACK"},
        {},
        StageOutcome(STOPPED),
        Verdict(Next.STOP),
    ),
    (
        "an abandoned stage rolling back on failure is compensated",
        {"result": "ROLLBACK"},
        {},
        StageOutcome(STOPPED, stopping=True, abandoned=True),
        Verdict(Next.STOP, compensate=True),
    ),
    (
        "an abandoned stage of a cross-stage saga: the earlier stages too",
        {"result": "ROLLBACK"},
        {"compensateEarlierStages": True},
        StageOutcome(STOPPED, stopping=True, abandoned=True),
        Verdict(Next.STOP, compensate=True, compensate_earlier_stages=True),
    ),
    (
        "an abandoned stage without onFailure ROLLBACK is left as it is",
        None,
        {"compensateEarlierStages": True},
        StageOutcome(STOPPED, stopping=True, abandoned=True),
        Verdict(Next.STOP),
    ),
    ("no onFailure: fails, open for its retry window", None, {}, StageOutcome(FAILED), WAIT),
    ("FAIL: open for its retry window", {"result": "FAIL"}, {}, StageOutcome(FAILED), WAIT),
    (
        "FAIL without a retry window: fails for good",
        {"result": "FAIL"},
        {"retryWindowMinutes": 0},
        StageOutcome(FAILED),
        Verdict(Next.FAIL),
    ),
    ("a stop asked for: no retry window", None, {}, StageOutcome(FAILED, stopping=True), Verdict(Next.FAIL)),
    ("SKIP: on to the next stage", {"result": "SKIP"}, {}, StageOutcome(FAILED), Verdict(Next.SKIP)),
    (
        "SKIP wins over a condition's ROLLBACK",
        {"result": "SKIP"},
        {},
        StageOutcome(FAILED, failed_condition="ROLLBACK"),
        Verdict(Next.SKIP),
    ),
    (
        "RETRY with automatic retries left",
        {"result": "RETRY"},
        {},
        StageOutcome(FAILED, retries_left=1),
        Verdict(Next.RETRY_AUTOMATICALLY),
    ),
    ("RETRY with none left: fails", {"result": "RETRY"}, {}, StageOutcome(FAILED, retries_left=0), WAIT),
    (
        "RETRY while stopping: no retry",
        {"result": "RETRY"},
        {},
        StageOutcome(FAILED, retries_left=1, stopping=True),
        Verdict(Next.FAIL),
    ),
    (
        "RETRY only retries a failure",
        {"result": "RETRY"},
        {},
        StageOutcome(StageStatus.CANCELLED, retries_left=1),
        WAIT,
    ),
    (
        "ROLLBACK: a ROLLBACK execution redeploys, nothing compensated",
        {"result": "ROLLBACK"},
        {},
        StageOutcome(FAILED),
        ROLLS_BACK,
    ),
    (
        "a ROLLBACK execution failing: compensates, starts no rollback",
        {"result": "ROLLBACK"},
        {},
        StageOutcome(FAILED, rollback_execution=True),
        Verdict(Next.WAIT_FOR_MANUAL_RETRY, compensate=True),
    ),
    (
        "an onFailure condition's ROLLBACK",
        {"result": "FAIL", "conditions": []},
        {},
        StageOutcome(FAILED, failed_condition="ROLLBACK"),
        ROLLS_BACK,
    ),
    (
        "an onSuccess condition failing with ROLLBACK",
        None,
        {},
        StageOutcome(FAILED, failed_condition="ROLLBACK"),
        ROLLS_BACK,
    ),
    ("an onSuccess condition failing with FAIL", None, {}, StageOutcome(FAILED, failed_condition="FAIL"), WAIT),
    (
        "compensateEarlierStages: a saga across stages",
        None,
        {"compensateEarlierStages": True},
        StageOutcome(FAILED),
        Verdict(Next.WAIT_FOR_MANUAL_RETRY, compensate=True, compensate_earlier_stages=True),
    ),
    (
        "compensateEarlierStages with ROLLBACK: the saga, not a ROLLBACK execution as well",
        {"result": "ROLLBACK"},
        {"compensateEarlierStages": True},
        StageOutcome(FAILED),
        Verdict(Next.WAIT_FOR_MANUAL_RETRY, compensate=True, compensate_earlier_stages=True),
    ),
    (
        "rollbackStrategy COMPENSATE: the failed stage's compensations, no ROLLBACK execution",
        {"result": "ROLLBACK"},
        {"rollbackStrategy": "COMPENSATE"},
        StageOutcome(FAILED),
        COMPENSATES,
    ),
    (
        "rollbackStrategy REDEPLOY, declared: a ROLLBACK execution",
        {"result": "ROLLBACK"},
        {"rollbackStrategy": "REDEPLOY"},
        StageOutcome(FAILED),
        ROLLS_BACK,
    ),
    (
        "a condition's ROLLBACK under COMPENSATE",
        None,
        {"rollbackStrategy": "COMPENSATE", "retryWindowMinutes": 0},
        StageOutcome(FAILED, failed_condition="ROLLBACK"),
        Verdict(Next.FAIL, compensate=True),
    ),
    (
        "compensateEarlierStages: not on success",
        None,
        {"compensateEarlierStages": True},
        StageOutcome(SUCCEEDED),
        Verdict(Next.CONTINUE),
    ),
]


@pytest.mark.parametrize(
    ("on_failure", "conveyor", "outcome", "expected"),
    [case[1:] for case in AFTER_STAGE],
    ids=[case[0] for case in AFTER_STAGE],
)
def test_after_stage(
    on_failure: dict[str, Any] | None, conveyor: dict[str, Any], outcome: StageOutcome, expected: Verdict
) -> None:
    stage, pipeline = declared(on_failure, **conveyor)
    assert after_stage(stage, pipeline, outcome) == expected


def test_a_parallel_pipeline_compensates_where_no_rollback_execution_can_run() -> None:
    stage, pipeline = declared({"result": "ROLLBACK"})
    parallel = pipeline.model_copy(update={"execution_mode": "PARALLEL"})
    assert after_stage(stage, parallel, StageOutcome(FAILED)) == COMPENSATES
    assert not redeploys(parallel) and redeploys(pipeline)


def test_a_rollback_without_an_earlier_success_compensates_and_fails() -> None:
    assert without_rollback_target() == Verdict(Next.FAIL, compensate=True)


@pytest.mark.parametrize(
    ("result", "conveyor", "stopping", "expected"),
    [
        ("SKIP", {}, False, Verdict(Next.SKIP)),
        ("FAIL", {}, False, WAIT),
        ("FAIL", {"retryWindowMinutes": 0}, False, Verdict(Next.FAIL)),
        ("FAIL", {}, True, Verdict(Next.FAIL)),
    ],
    ids=["SKIP", "FAIL in a retry window", "FAIL without one", "FAIL while stopping"],
)
def test_before_entry(result: str, conveyor: dict[str, Any], stopping: bool, expected: Verdict) -> None:
    _, pipeline = declared(**conveyor)
    verdict = before_entry(pipeline, result, stopping=stopping)
    assert verdict == expected and not verdict.compensate  # a stage that never ran has nothing to undo


def test_only_failing_verdicts_count_as_failed() -> None:
    assert {n for n in Next if Verdict(n).failed} == {Next.WAIT_FOR_MANUAL_RETRY, Next.ROLL_BACK, Next.FAIL}


def test_automatic_retry_uses_the_declared_retry_mode() -> None:
    stage, _ = declared({"result": "RETRY", "retryConfiguration": {"retryMode": "ALL_ACTIONS"}})
    request = automatic_retry(stage)
    assert (request.stage_name, request.retry_mode, request.by) == ("Deploy", "ALL_ACTIONS", "onFailure: RETRY")
    stage, _ = declared({"result": "RETRY"})
    assert automatic_retry(stage).retry_mode == "FAILED_ACTIONS"
