"""The memos as models (conveyor.memo), with no server: their JSON is what the README documents and recorded
histories hold, and reading a memo back gives what was written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from conveyor.interface import ExecutionMode
from conveyor.memo import (
    CoordinatorMemo,
    coordinator_from_memo,
    coordinator_memo,
    execution_memo,
    header_from_memo,
    stage_from_memo,
    state_from_memo,
)
from conveyor.model import (
    CoordinatorState,
    ExecutionState,
    ExecutionStatus,
    PipelineVersion,
    SourceRevision,
    StageLock,
    StageState,
    StageStatus,
    TransitionState,
    Trigger,
    TriggerType,
)

APPLIED = datetime(2026, 11, 29, 8, 9, 10, 123456, tzinfo=UTC)
VERSION = PipelineVersion(version=2, digest="sha256:" + "a" * 64, applied_at=APPLIED, stage_names=["Build", "Deploy"])


def disabled_of(state: CoordinatorState) -> list[str]:
    """As the lock rules (workflows/locks.py) list them: sorted."""
    return sorted(s.stage_name for s in state.stages if not s.transition.enabled)


def coordinator(*, disabled: list[str], versions: list[PipelineVersion]) -> CoordinatorState:
    locks = [
        StageLock(stage_name=n, transition=TransitionState(enabled=n not in disabled)) for n in ["Deploy", "Build"]
    ]
    return CoordinatorState(pipeline_name="shop", execution_mode=ExecutionMode.QUEUED, versions=versions, stages=locks)


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (
            coordinator(disabled=["Deploy", "Build"], versions=[VERSION]),
            {
                "current": {
                    "version": 2,
                    "digest": "sha256:" + "a" * 64,
                    "appliedAt": "2026-11-29T08:09:10.123456Z",
                    "appliedBy": None,
                    "stageNames": ["Build", "Deploy"],
                },
                "mode": "QUEUED",
                "disabledTransitions": ["Build", "Deploy"],
            },
        ),
        (
            coordinator(disabled=[], versions=[]),
            {"current": None, "mode": "QUEUED", "disabledTransitions": []},
        ),
    ],
)
def test_the_coordinators_memo_keeps_its_json(state: CoordinatorState, expected: dict[str, Any]) -> None:
    memo = coordinator_memo(state, disabled_of(state))
    assert json.dumps(memo) == json.dumps(expected)  # keys, order and values, as upserted


@pytest.mark.parametrize(
    "memo",
    [
        coordinator_memo(coordinator(disabled=["Deploy"], versions=[VERSION]), ["Deploy"]),
        {
            k: v
            for k, v in coordinator_memo(coordinator(disabled=[], versions=[VERSION]), []).items()
            if k != "disabledTransitions"
        },
        {},  # a coordinator whose first apply has not finished
    ],
)
def test_a_coordinators_memo_reads_back_as_it_was_written(memo: dict[str, Any]) -> None:
    assert json.dumps(coordinator_from_memo(memo).as_read()) == json.dumps(memo)


def test_the_coordinators_memo_reads_as_a_model() -> None:
    read = coordinator_from_memo(coordinator_memo(coordinator(disabled=["Deploy"], versions=[VERSION]), ["Deploy"]))
    assert read == CoordinatorMemo(current=VERSION, mode=ExecutionMode.QUEUED, disabled_transitions=["Deploy"])
    assert coordinator_from_memo({}) == CoordinatorMemo()  # nothing disabled, nothing applied


def execution() -> ExecutionState:
    return ExecutionState(
        pipeline_name="shop",
        pipeline_version=3,
        execution_id="e-1",
        status=ExecutionStatus.SUCCEEDED,
        started_at=APPLIED,
        finished_at=APPLIED,
        trigger=Trigger(trigger_type=TriggerType.WEBHOOK, trigger_detail="push"),
        source_revisions=[SourceRevision(action_name="Checkout", revision_id="abc")],
        stages=[
            StageState(stage_name="Build", status=StageStatus.SUCCEEDED, started_at=APPLIED),
            StageState(stage_name="Deploy"),
        ],
    )


def test_the_executions_memo_has_one_key_for_the_execution_and_one_per_stage() -> None:
    memo = json.loads(json.dumps(execution_memo(execution())))  # as a reader decodes it
    assert list(memo) == ["execution", "stage:Build", "stage:Deploy"]
    assert memo["execution"]["stageNames"] == ["Build", "Deploy"]
    assert "stages" not in memo["execution"] and "status" not in memo["stage:Deploy"]  # defaults left out
    assert state_from_memo(memo) == execution()


def test_the_executions_header_and_a_stage_read_alone() -> None:
    memo = json.loads(json.dumps(execution_memo(execution())))
    header = header_from_memo(memo)
    assert header == execution().model_copy(
        update={"stages": [StageState(stage_name="Build"), StageState(stage_name="Deploy")]}
    )
    assert "stageNames" in memo["execution"]  # reading the header leaves the memo as it was
    assert stage_from_memo(memo, "Build") == execution().stages[0]
    assert stage_from_memo(memo, "Missing") is None
    assert header_from_memo({}) is None and state_from_memo({}) is None  # before the first task
