"""The execution page's timeline: pure functions of an `ExecutionState` and `now`. States built field by field as the
recorder and the action workflow fill them in (offsets, a declared retry's attempts and back-off, an approval's wait,
a deployment window, a bake, a compensation, a running action ending at `now`), and one from a real run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.worker import Worker

from conveyor.bake import start_bake
from conveyor.client import ConveyorClient
from conveyor.console.timeline import RowKind, Segment, SegmentKind, TimelineRow, build_timeline
from conveyor.interface import ApprovalStatus, ConditionKind
from conveyor.model import (
    ActionAttempt,
    ActionState,
    ActionStatus,
    ApprovalRequest,
    ApprovalResult,
    ArtifactRef,
    BakeStatus,
    CompensationState,
    CompensationStatus,
    ConditionState,
    ConditionStatus,
    ErrorDetails,
    ExecutionState,
    ExecutionStatus,
    RuleState,
    SourceRevision,
    StageAttempt,
    StageState,
    StageStatus,
)
from tests.helpers import pipeline, waiting_token

T0 = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def row(rows: list[TimelineRow], stage: str, action: str | None = None) -> TimelineRow:
    return next(r for r in rows if r.stage_name == stage and r.action_name == action)


def kinds(found: TimelineRow, kind: SegmentKind) -> list[Segment]:
    return [s for s in found.segments if s.kind == kind]


def failed_then_waiting() -> ExecutionState:
    """Build: a declared retry (attempt 1 failed at 10 s, back-off to 15 s, attempt 2 from 15 s to 20 s), an artifact.
    Prod: a beforeEntry window waited from 20 s to 30 s, then an approval waiting since 31 s with one of two approvals
    counted at 40 s, and a deployment that bakes from 25 s, still running."""
    error = ErrorDetails(code="CommandFailed", message="exit 1")
    compile_ = ActionState(
        action_name="Compile",
        provider="Commands",
        category="Build",
        status=ActionStatus.SUCCEEDED,
        attempt=2,
        max_attempts=3,
        attempts=[ActionAttempt(attempt=1, started_at=at(1), finished_at=at(10), error=error)],
        started_at=at(15),
        finished_at=at(20),
        summary="1 commands succeeded",
        output_artifacts=[ArtifactRef(name="App", digest="sha256:ab", location="file:///x", size=123)],
        output_variables={"VERSION": "1.2.3"},
    )
    build = StageState(
        stage_name="Build",
        status=StageStatus.SUCCEEDED,
        attempt=1,
        started_at=at(0.5),
        finished_at=at(20),
        actions=[compile_],
    )
    window = ConditionState(
        kind=ConditionKind.BEFORE_ENTRY,
        result="FAIL",
        status=ConditionStatus.SUCCEEDED,
        started_at=at(20),
        finished_at=at(30),
        rules=[
            RuleState(
                rule_name="Hours",
                provider="DeploymentWindow",
                status=ConditionStatus.SUCCEEDED,
                opens_at=at(30),
                time_zone="Europe/Paris",
                started_at=at(20),
                finished_at=at(30),
            )
        ],
    )
    gate = ActionState(
        action_name="Gate",
        provider="Manual",
        category="Approval",
        status=ActionStatus.IN_PROGRESS,
        started_at=at(31),
        token="tok",
        approval_request=ApprovalRequest(approvers=["ann", "bob", "cy"], quorum=2),
        approvals=[
            ApprovalResult(
                action_name="Gate",
                status=ApprovalStatus.PENDING,
                summary="looks good",
                by="ann",
                decided_at=at(40),
                source="cli",
                approvals=1,
                quorum=2,
            )
        ],
    )
    deploy = ActionState(
        action_name="Deploy",
        provider="Commands",
        category="Deploy",
        run_order=2,
        status=ActionStatus.IN_PROGRESS,
        started_at=at(21),
        bake=start_bake(5, ["errors"], at(25)),
    )
    prod = StageState(
        stage_name="Prod",
        status=StageStatus.IN_PROGRESS,
        attempt=1,
        started_at=at(30),
        conditions=[window],
        actions=[gate, deploy],
    )
    return ExecutionState(
        pipeline_name="shop",
        execution_id="e-1",
        started_at=T0,
        variables={"Greeting": "hi"},
        source_revisions=[SourceRevision(action_name="Checkout", revision_id="0123456789abcdef", revision_summary="x")],
        stages=[build, prod],
    )


def test_offsets_retries_and_the_retry_back_off() -> None:
    timeline = build_timeline(failed_then_waiting(), now=at(50))
    assert timeline.length == 50 and timeline.status == "InProgress"
    build = row(timeline.rows, "Build")
    assert (build.kind, build.start, build.end, build.running) == (RowKind.STAGE, 0.5, 20, False)
    compile_ = row(timeline.rows, "Build", "Compile")
    assert (compile_.start, compile_.end, compile_.running, compile_.attempt) == (1, 20, False, 2)
    attempts = kinds(compile_, SegmentKind.ATTEMPT)
    assert [(s.label, s.start, s.end, s.status) for s in attempts] == [
        ("attempt 1", 1, 10, "Failed"),
        ("attempt 2", 15, 20, "Succeeded"),
    ]
    assert attempts[0].detail == "CommandFailed: exit 1" and attempts[1].detail == "attempt 2 of 3"
    assert [(s.start, s.end) for s in kinds(compile_, SegmentKind.RETRY_WAIT)] == [(10, 15)]
    assert compile_.log_names == ["Compile"]


def test_an_approval_waits_until_now_and_says_who_may_still_decide() -> None:
    timeline = build_timeline(failed_then_waiting(), now=at(50))
    gate = row(timeline.rows, "Prod", "Gate")
    [wait] = kinds(gate, SegmentKind.APPROVAL_WAIT)
    assert (wait.start, wait.end, wait.running) == (31, 50, True)
    assert wait.detail == "waiting for approval, 1 of 2"
    assert gate.running and gate.end == 50 and gate.log_names == []  # an approval writes no log
    assert gate.summary == "waiting for approval (1 of 2); may decide: bob, cy"
    decided, waiting = timeline.approvals
    assert (decided.by, decided.decided_at, decided.summary, decided.status) == ("ann", at(40), "looks good", "Pending")
    assert (waiting.status, waiting.approvals, waiting.quorum, waiting.may_decide) == ("Waiting", 1, 2, "bob, cy")
    # later, decided: the wait ends at the final decision
    state = failed_then_waiting()
    gate_state = state.stages[1].actions[0]
    final = gate_state.approvals[0].model_copy(update={"status": ApprovalStatus.APPROVED, "decided_at": at(45)})
    gate_state.token, gate_state.approval = None, final
    gate_state.status, gate_state.finished_at = ActionStatus.SUCCEEDED, at(45)
    [wait] = kinds(row(build_timeline(state, now=at(60)).rows, "Prod", "Gate"), SegmentKind.APPROVAL_WAIT)
    assert (wait.start, wait.end, wait.running, wait.detail) == (31, 45, False, "Approved by ann")


def test_windows_bakes_and_the_lists_beside_the_timeline() -> None:
    timeline = build_timeline(failed_then_waiting(), now=at(50))
    prod = row(timeline.rows, "Prod")
    [window] = kinds(prod, SegmentKind.WINDOW_WAIT)
    assert (window.start, window.end, window.running) == (20, 30, False)
    assert (
        window.detail == "waiting for the window to open at 2026-11-20 09:00:30, Europe/Paris (2026-11-20 08:00:30 UTC)"
    )
    [condition] = kinds(prod, SegmentKind.CONDITION)
    assert (condition.start, condition.end, condition.status) == (20, 30, "Succeeded")
    assert (prod.start, prod.end, prod.running) == (20, 50, True)  # from its condition, still running
    deploy = row(timeline.rows, "Prod", "Deploy")
    [bake] = kinds(deploy, SegmentKind.BAKE)
    assert (bake.start, bake.end, bake.running, bake.status) == (25, 50, True, BakeStatus.BAKING.value)
    assert bake.detail is not None and bake.detail.startswith("baking, 4.6 min left")
    assert [(a.name, a.digest, a.size, a.action_name) for a in timeline.artifacts] == [
        ("App", "sha256:ab", 123, "Compile")
    ]
    assert [(v.name, v.value) for v in timeline.output_variables] == [("VERSION", "1.2.3")]
    assert timeline.variables == {"Greeting": "hi"}
    assert [r.revision_id for r in timeline.source_revisions] == ["0123456789abcdef"]
    [condition_row] = timeline.conditions
    assert (condition_row.stage_name, condition_row.kind, condition_row.status) == ("Prod", "beforeEntry", "Succeeded")
    assert [r.rule_name for r in condition_row.rules] == ["Hours"]
    # The rows come stage first, then its actions by run order.
    assert [(r.stage_name, r.action_name) for r in timeline.rows] == [
        ("Build", None),
        ("Build", "Compile"),
        ("Prod", None),
        ("Prod", "Gate"),
        ("Prod", "Deploy"),
    ]


def test_a_failed_execution_ends_at_its_end_with_its_compensation_retry_and_rollback_link() -> None:
    state = failed_then_waiting()
    prod = state.stages[1]
    prod.previous_attempts = [
        StageAttempt(attempt=1, status=StageStatus.FAILED, started_at=at(30), finished_at=at(32), retried_by="ann")
    ]
    prod.attempt, prod.started_at = 2, at(33)
    deploy = prod.actions[1]
    deploy.bake = None
    deploy.compensation = CompensationState(
        status=CompensationStatus.SUCCEEDED, attempt=1, started_at=at(36), finished_at=at(38)
    )
    state.close_unfinished(at(35), ErrorDetails(code="Failed", message="deploy failed"))
    state.status, state.finished_at, state.rollback_execution = ExecutionStatus.FAILED, at(40), "e-2"
    timeline = build_timeline(state, now=at(500))
    assert timeline.length == 40  # a finished execution's axis ends at its end, not at `now`
    deploy_row = row(timeline.rows, "Prod", "Deploy")
    assert (deploy_row.start, deploy_row.end, deploy_row.running) == (21, 38, False)
    [compensation] = kinds(deploy_row, SegmentKind.COMPENSATION)
    assert (compensation.start, compensation.end, compensation.status) == (36, 38, "Succeeded")
    assert deploy_row.log_names == ["Deploy", "Deploy.rollback"]
    assert [(c.action_name, c.status, c.log_name) for c in timeline.compensations] == [
        ("Deploy", "Succeeded", "Deploy.rollback")
    ]
    stage_attempts = kinds(row(timeline.rows, "Prod"), SegmentKind.ATTEMPT)
    assert [(s.label, s.start, s.end) for s in stage_attempts] == [("attempt 1", 30, 32), ("attempt 2", 33, 35)]
    assert stage_attempts[0].detail == "retried by ann"
    assert (timeline.rollback.rolled_back_by, timeline.rollback.rollback_of) == ("e-2", None)
    rollback = ExecutionState(
        pipeline_name="shop", execution_id="e-2", execution_type="ROLLBACK", rollback_of="e-1", rollback_stage="Prod"
    )
    links = build_timeline(rollback, now=T0).rollback
    assert (links.rollback_of, links.rollback_stage, links.rolled_back_by) == ("e-1", "Prod", None)


def test_waiting_in_front_of_a_stage_runs_from_the_end_of_the_stage_before() -> None:
    state = failed_then_waiting()
    state.stages[1] = StageState(stage_name="Prod")
    state.waiting_for_stage, state.waiting_reason = "Prod", "transition disabled: freeze"
    prod = row(build_timeline(state, now=at(70)).rows, "Prod")
    [wait] = kinds(prod, SegmentKind.STAGE_WAIT)
    assert (wait.start, wait.end, wait.running, wait.detail) == (20, 70, True, "transition disabled: freeze")
    assert prod.start is None and prod.status is None  # not entered


RETRIED_AND_APPROVED = """
name: timeline
stages:
  - name: Build
    actions:
      - name: Flaky
        provider: Commands
        conveyor:
          retry: {{maximumAttempts: 3, initialIntervalSeconds: 0.5}}
        commands:
          - echo x >> {counter}
          - test "$(wc -l < {counter})" -ge 2
  - name: Prod
    actions:
      - {{name: Gate, provider: Manual}}
"""


async def test_a_real_runs_timeline(conveyor: ConveyorClient, worker: Worker, tmp_path: Path) -> None:
    declaration = pipeline(RETRIED_AND_APPROVED.format(counter=tmp_path / "count"))
    ref, _ = await conveyor.start(declaration)
    token = await waiting_token(conveyor, ref, "Prod", "Gate")
    await asyncio.sleep(0.5)
    waiting = build_timeline(await conveyor.state(ref), now=datetime.now(UTC))
    [wait] = kinds(row(waiting.rows, "Prod", "Gate"), SegmentKind.APPROVAL_WAIT)
    assert wait.running and wait.end - wait.start >= 0.4
    await conveyor.decide(ref, "Prod", "Gate", approve=True, summary="ship it", token=token, by="lead")
    state = await asyncio.wait_for(conveyor.wait(ref, interval=0.2), 30)
    timeline = build_timeline(state, now=datetime.now(UTC) + timedelta(hours=1))
    flaky = row(timeline.rows, "Build", "Flaky")
    first, second = kinds(flaky, SegmentKind.ATTEMPT)
    [back_off] = kinds(flaky, SegmentKind.RETRY_WAIT)
    assert 0 <= first.start < first.end <= back_off.start < back_off.end <= second.start < second.end
    assert back_off.end - back_off.start >= 0.5  # the declared initial interval
    [wait] = kinds(row(timeline.rows, "Prod", "Gate"), SegmentKind.APPROVAL_WAIT)
    assert not wait.running and second.end <= wait.start < wait.end <= timeline.length
    assert [(a.by, a.summary, a.status) for a in timeline.approvals] == [("lead", "ship it", "Approved")]
    assert not any(r.running for r in timeline.rows)
