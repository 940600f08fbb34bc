"""An execution as a timeline for the console's execution page: pure functions from `ExecutionState` (what the
recorder records, what `conveyor status` shows) to a `Timeline`: one row per stage and per action, each a bar from
its start to its end in seconds from the execution's start (a running one ends at `now`, given), with segments for
what the state shows happened inside it: attempts and the back-off between them, an approval's wait, a condition's
evaluation and a deployment window's wait, a bake, waves, build phases, a compensation; and the lists the page
shows beside it. Nothing here reads a clock or the network: the same state and `now` give the same timeline.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from conveyor.bake import bake_summary, wave_line
from conveyor.identities import who_may_decide
from conveyor.interface import ApprovalStatus
from conveyor.model import (
    ActionState,
    ActionStatus,
    ApprovalResult,
    BakeState,
    ConditionState,
    ConditionStatus,
    ExecutionState,
    SourceRevision,
    StageState,
    StageStatus,
)
from conveyor.settings import compensation_log_name
from conveyor.text import window_opening

APPROVAL_CATEGORY = "Approval"


class RowKind(StrEnum):
    STAGE = "stage"
    ACTION = "action"


class SegmentKind(StrEnum):
    ATTEMPT = "attempt"  # an attempt that ran (a stage's, or an action's declared retry)
    RETRY_WAIT = "retryWait"  # the back-off between an action's failed attempt and its next
    APPROVAL_WAIT = "approvalWait"  # a Manual approval waiting for its decisions
    CONDITION = "condition"  # a stage condition being evaluated
    WINDOW_WAIT = "windowWait"  # a DeploymentWindow rule waiting for its window to open
    STAGE_WAIT = "stageWait"  # waiting in front of the stage (its lock, or a disabled transition)
    BAKE = "bake"  # watching alarms after a deployment
    WAVE = "wave"  # one wave of an action deployed in waves
    PHASE = "phase"  # a build's phase (CodeBuild)
    COMPENSATION = "compensation"  # the action's rollback commands


class Segment(BaseModel):
    kind: SegmentKind
    label: str  # short, for the bar ("attempt 2", "bake", "BUILD")
    start: float  # seconds from the execution's start
    end: float
    running: bool = False  # still going: `end` is `now`
    status: str | None = None
    detail: str | None = None  # a sentence for the tooltip ("failed: ...", "waiting for the window to open at ...")


class TimelineRow(BaseModel):
    kind: RowKind
    stage_name: str
    action_name: str | None = None
    provider: str | None = None
    run_order: int | None = None
    status: str | None = None  # None: not started
    attempt: int = 0
    start: float | None = None  # None: not started
    end: float | None = None
    running: bool = False
    summary: str | None = None
    error: str | None = None
    external_url: str | None = None
    log_names: list[str] = Field(default_factory=list)  # the logs it wrote (console/logs.py follows them)
    segments: list[Segment] = Field(default_factory=list)


class ArtifactRow(BaseModel):
    stage_name: str
    action_name: str
    name: str
    digest: str
    size: int


class OutputVariableRow(BaseModel):
    stage_name: str
    action_name: str
    name: str
    value: str


class RuleRow(BaseModel):
    rule_name: str
    provider: str
    status: str
    summary: str | None = None
    window_opens: str | None = None  # a DeploymentWindow waiting: when, in the window's time zone


class ConditionRow(BaseModel):
    stage_name: str
    kind: str  # beforeEntry | onSuccess | onFailure
    result: str | None = None  # FAIL | SKIP | ROLLBACK
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    overridden_by: str | None = None
    overridden_at: datetime | None = None
    override_reason: str | None = None
    rules: list[RuleRow] = Field(default_factory=list)


class ApprovalRow(BaseModel):
    """One decision (who, when, summary), or an approval still waiting (status Waiting, no decider yet)."""

    stage_name: str
    action_name: str
    status: str  # Approved, Rejected, Pending (an approval counted toward a quorum), or Waiting
    by: str | None = None
    decided_at: datetime | None = None
    summary: str | None = None
    source: str | None = None  # the channel: cli, slack, api, ...
    approvals: int = 0  # counted so far, when it was decided
    quorum: int = 1
    may_decide: str | None = None  # waiting: who may still decide, in words


class CompensationRow(BaseModel):
    stage_name: str
    action_name: str
    status: str
    attempt: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    log_name: str  # `<Action>.rollback`


class RollbackLinks(BaseModel):
    rollback_of: str | None = None  # this is a rollback: the execution whose stage inputs it re-runs
    rollback_stage: str | None = None  # ... and the stage it re-runs
    rolled_back_by: str | None = None  # this execution failed and started this automatic rollback


class Timeline(BaseModel):
    pipeline_name: str
    execution_id: str
    pipeline_version: int
    status: str
    status_summary: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    now: datetime
    length: float  # seconds the axis spans: to the end, or to `now` while it runs
    waiting_for_stage: str | None = None
    waiting_reason: str | None = None
    rows: list[TimelineRow]
    source_revisions: list[SourceRevision]
    variables: dict[str, str]  # the execution's resolved pipeline-level variables
    output_variables: list[OutputVariableRow]
    artifacts: list[ArtifactRow]
    conditions: list[ConditionRow]
    approvals: list[ApprovalRow]
    compensations: list[CompensationRow]
    rollback: RollbackLinks


class _Clock:
    """Offsets from the execution's start; an open end is `now` (or the execution's end once it ended)."""

    def __init__(self, state: ExecutionState, now: datetime) -> None:
        self.origin = state.started_at or _earliest(state) or now
        self.stop = state.finished_at if state.status.is_terminal and state.finished_at else now

    def at(self, moment: datetime) -> float:
        return round((moment - self.origin).total_seconds(), 3)

    def span(self, start: datetime, end: datetime | None) -> tuple[float, float, bool]:
        """(start, end, running) of something that began at `start` and ended at `end` (None: not yet)."""
        finish = end or max(self.stop, start)
        return self.at(start), self.at(finish), end is None

    def segment(
        self,
        kind: SegmentKind,
        label: str,
        start: datetime,
        end: datetime | None,
        *,
        status: str | None = None,
        detail: str | None = None,
    ) -> Segment:
        """A segment from `start` to `end` (None: still going)."""
        offset, finish, running = self.span(start, end)
        return Segment(kind=kind, label=label, start=offset, end=finish, running=running, status=status, detail=detail)


def build_timeline(state: ExecutionState, now: datetime) -> Timeline:
    """The execution page's timeline and lists for `state` as of `now` (timezone-aware)."""
    clock = _Clock(state, now)
    rows: list[TimelineRow] = []
    previous_end: datetime | None = state.started_at
    for stage in state.stages:
        rows.append(_stage_row(state, stage, clock, previous_end))
        rows += [_action_row(stage, action, clock, now) for action in sorted(stage.actions, key=lambda a: a.run_order)]
        previous_end = stage.finished_at or previous_end
    return Timeline(
        pipeline_name=state.pipeline_name,
        execution_id=state.execution_id,
        pipeline_version=state.pipeline_version,
        status=state.status.value,
        status_summary=state.status_summary,
        started_at=state.started_at,
        finished_at=state.finished_at,
        now=now,
        length=max(clock.at(clock.stop), 0.0),
        waiting_for_stage=state.waiting_for_stage,
        waiting_reason=state.waiting_reason,
        rows=rows,
        source_revisions=list(state.source_revisions),
        variables=dict(state.variables),
        output_variables=output_variables(state),
        artifacts=artifacts(state),
        conditions=conditions(state),
        approvals=approvals(state),
        compensations=compensations(state),
        rollback=RollbackLinks(
            rollback_of=state.rollback_of,
            rollback_stage=state.rollback_stage if state.rollback_of else None,
            rolled_back_by=state.rollback_execution,
        ),
    )


# --- rows ------------------------------------------------------------------------------------------


def _stage_row(state: ExecutionState, stage: StageState, clock: _Clock, previous_end: datetime | None) -> TimelineRow:
    row = TimelineRow(
        kind=RowKind.STAGE,
        stage_name=stage.stage_name,
        status=stage.status.value if stage.status else None,
        attempt=stage.attempt,
        error=stage.error.message if stage.error else None,
    )
    segments = row.segments
    for attempt in stage.previous_attempts:
        if attempt.started_at is None:
            continue
        status = attempt.status.value if attempt.status else None
        mode = f" ({attempt.retry_mode})" if attempt.retry_mode else ""
        detail = f"retried by {attempt.retried_by or 'unknown'}{mode}"
        if attempt.error is not None:
            detail = f"{attempt.error.message}; {detail}"
        segments.append(
            clock.segment(
                SegmentKind.ATTEMPT,
                f"attempt {attempt.attempt}",
                attempt.started_at,
                attempt.finished_at,
                status=status,
                detail=detail,
            )
        )
    if stage.started_at is not None and stage.previous_attempts:
        segments.append(
            clock.segment(
                SegmentKind.ATTEMPT, f"attempt {stage.attempt}", stage.started_at, stage.finished_at, status=row.status
            )
        )
    segments += [_condition_segment(condition, clock) for condition in stage.conditions if condition.started_at]
    segments += [_window_segment(condition, clock) for condition in stage.conditions if _waiting_window(condition)]
    if state.waiting_for_stage == stage.stage_name and not state.status.is_terminal and previous_end is not None:
        # Not recorded: when the wait began. It began when the stage before it ended (or the execution started).
        segments.append(
            clock.segment(
                SegmentKind.STAGE_WAIT,
                "waiting",
                previous_end,
                None,
                detail=state.waiting_reason or f"waiting to enter {stage.stage_name}",
            )
        )
    starts = [
        moment for moment in (stage.started_at, *(a.started_at for a in stage.previous_attempts)) if moment is not None
    ]
    starts += [c.started_at for c in stage.conditions if c.started_at is not None]
    if starts:
        first = min(starts)
        ends = [c.finished_at for c in stage.conditions if c.finished_at is not None]
        open_ = stage.status in (StageStatus.IN_PROGRESS, StageStatus.STOPPING) or any(
            c.status.is_open for c in stage.conditions
        )
        last = None if open_ else max([m for m in (stage.finished_at, *ends) if m is not None], default=first)
        row.start, row.end, row.running = clock.span(first, last)
    return row


def _action_row(stage: StageState, action: ActionState, clock: _Clock, now: datetime) -> TimelineRow:
    row = TimelineRow(
        kind=RowKind.ACTION,
        stage_name=stage.stage_name,
        action_name=action.action_name,
        provider=action.provider,
        run_order=action.run_order,
        status=action.status.value if action.status else None,
        attempt=action.attempt if action.status else 0,
        summary=_action_summary(action),
        error=f"{action.error.code}: {action.error.message}" if action.error else None,
        external_url=action.external_url,
    )
    if action.status is not None and action.category != APPROVAL_CATEGORY:
        row.log_names.append(action.action_name)
    if action.compensation is not None:
        row.log_names.append(compensation_log_name(action.action_name))
    first_start = action.attempts[0].started_at if action.attempts else action.started_at
    if first_start is None or action.started_at is None:
        return row
    running = action.status == ActionStatus.IN_PROGRESS
    end = None if running else (action.finished_at or clock.stop)
    row.start, row.end, row.running = clock.span(first_start, end)
    row.segments = _attempt_segments(action, clock)
    if action.category == APPROVAL_CATEGORY:
        row.segments.append(_approval_segment(action, clock))
    row.segments += _bake_wave_phase_segments(action, clock, now)
    compensation = action.compensation
    if compensation is not None and compensation.started_at is not None:
        segment = clock.segment(
            SegmentKind.COMPENSATION,
            "compensation",
            compensation.started_at,
            compensation.finished_at,
            status=compensation.status.value,
            detail=f"attempt {compensation.attempt}"
            + (f": {compensation.error.code}: {compensation.error.message}" if compensation.error else ""),
        )
        row.segments.append(segment)
        row.end = max(row.end or segment.end, segment.end)
        row.running = row.running or segment.running
    return row


def _attempt_segments(action: ActionState, clock: _Clock) -> list[Segment]:
    """A declared retry's attempts, each followed by its back-off; none when it ran once."""
    if not action.attempts:
        return []
    segments: list[Segment] = []
    for index, attempt in enumerate(action.attempts):
        if attempt.started_at is None:
            continue
        segments.append(
            clock.segment(
                SegmentKind.ATTEMPT,
                f"attempt {attempt.attempt}",
                attempt.started_at,
                attempt.finished_at,
                status=ActionStatus.FAILED.value,
                detail=f"{attempt.error.code}: {attempt.error.message}",
            )
        )
        following = action.attempts[index + 1].started_at if index + 1 < len(action.attempts) else action.started_at
        if attempt.finished_at is not None and following is not None and following > attempt.finished_at:
            segments.append(
                Segment(
                    kind=SegmentKind.RETRY_WAIT,
                    label="retry back-off",
                    start=clock.at(attempt.finished_at),
                    end=clock.at(following),
                )
            )
    assert action.started_at is not None
    running = action.status == ActionStatus.IN_PROGRESS
    start, end, going = clock.span(action.started_at, None if running else (action.finished_at or clock.stop))
    of = f" of {action.max_attempts}" if action.max_attempts else ""
    segments.append(
        Segment(
            kind=SegmentKind.ATTEMPT,
            label=f"attempt {action.attempt}",
            start=start,
            end=end,
            running=going,
            status=action.status.value if action.status else None,
            detail=f"attempt {action.attempt}{of}",
        )
    )
    return segments


def _approval_segment(action: ActionState, clock: _Clock) -> Segment:
    """From the approval's start to its final decision (or its end, or now while it waits)."""
    assert action.started_at is not None
    decided = action.approval.decided_at if action.approval else None
    waiting = action.token is not None
    start, end, running = clock.span(action.started_at, None if waiting else (decided or action.finished_at))
    if waiting:
        request = action.approval_request
        counted = _counted(action)
        quorum = request.quorum if request else 1
        detail = f"waiting for approval, {len(counted)} of {quorum}"
    elif action.approval is not None:
        detail = f"{action.approval.status} by {action.approval.by or 'unknown'}"
    else:
        detail = "closed without a decision"
    return Segment(
        kind=SegmentKind.APPROVAL_WAIT,
        label="approval",
        start=start,
        end=end,
        running=running,
        status=action.approval.status if action.approval else None,
        detail=detail,
    )


def _bake_wave_phase_segments(action: ActionState, clock: _Clock, now: datetime) -> list[Segment]:
    segments: list[Segment] = []
    for wave in action.waves:
        if wave.started_at is None:
            continue
        segments.append(
            clock.segment(
                SegmentKind.WAVE,
                f"wave {wave.name}",
                wave.started_at,
                wave.finished_at,
                status=wave.status.value if wave.status else None,
                detail=wave_line(wave, now),
            )
        )
        if wave.bake is not None:
            segments.append(_bake_segment(wave.bake, clock, now, label=f"bake {wave.name}"))
    if action.bake is not None:
        segments.append(_bake_segment(action.bake, clock, now, label="bake"))
    for phase in action.phases:
        if phase.started_at is None:
            continue
        start, end, running = clock.span(phase.started_at, phase.finished_at)
        segments.append(
            Segment(
                kind=SegmentKind.PHASE,
                label=phase.name,
                start=start,
                end=end,
                running=running and action.status == ActionStatus.IN_PROGRESS,
                status=phase.status,
            )
        )
    return segments


def _bake_segment(bake: BakeState, clock: _Clock, now: datetime, *, label: str) -> Segment:
    return clock.segment(
        SegmentKind.BAKE,
        label,
        bake.started_at,
        bake.finished_at,
        status=bake.status.value,
        detail=bake_summary(bake, now),
    )


def _condition_segment(condition: ConditionState, clock: _Clock) -> Segment:
    assert condition.started_at is not None
    return clock.segment(
        SegmentKind.CONDITION,
        f"{condition.kind.declared} condition",
        condition.started_at,
        None if condition.status.is_open else condition.finished_at,
        status=condition.status.value,
        detail=", ".join(f"{r.rule_name}: {r.status.value}" for r in condition.rules) or None,
    )


def _waiting_window(condition: ConditionState) -> bool:
    return any(
        r.opens_at is not None and r.started_at is not None and (r.status.is_open or r.finished_at is not None)
        for r in condition.rules
    )


def _window_segment(condition: ConditionState, clock: _Clock) -> Segment:
    """A DeploymentWindow rule's wait: from the rule's start to its end (or now)."""
    rule = next(r for r in condition.rules if r.opens_at is not None and r.started_at is not None)
    assert rule.started_at is not None and rule.opens_at is not None
    return clock.segment(
        SegmentKind.WINDOW_WAIT,
        f"window {rule.rule_name}",
        rule.started_at,
        None if rule.status.is_open else rule.finished_at,
        status=rule.status.value,
        detail=f"waiting for the window to open at {window_opening(rule.opens_at, rule.time_zone)}",
    )


def _action_summary(action: ActionState) -> str | None:
    if action.token is not None:
        request = action.approval_request
        counted = _counted(action)
        if request is None:
            return "waiting for approval"
        who = who_may_decide(request, counted)
        return f"waiting for approval ({len(counted)} of {request.quorum}); may decide: {who}"
    if action.approval is not None:
        why = f": {action.approval.summary}" if action.approval.summary else ""
        return f"{action.approval.status} by {action.approval.by or 'unknown'}{why}"
    return action.summary


def _counted(action: ActionState) -> list[ApprovalResult]:
    """The approvals counted toward the quorum so far."""
    return [d for d in action.approvals if d.status in (ApprovalStatus.APPROVED, ApprovalStatus.PENDING)]


def _earliest(state: ExecutionState) -> datetime | None:
    moments = [s.started_at for s in state.stages if s.started_at is not None]
    moments += [a.started_at for s in state.stages for a in s.previous_attempts if a.started_at is not None]
    return min(moments, default=None)


# --- the lists beside the timeline -----------------------------------------------------------------


def artifacts(state: ExecutionState) -> list[ArtifactRow]:
    """Every artifact an action produced: name, digest, size, and who produced it."""
    return [
        ArtifactRow(
            stage_name=stage.stage_name,
            action_name=action.action_name,
            name=artifact.name,
            digest=artifact.digest,
            size=artifact.size,
        )
        for stage in state.stages
        for action in stage.actions
        for artifact in action.output_artifacts
    ]


def output_variables(state: ExecutionState) -> list[OutputVariableRow]:
    return [
        OutputVariableRow(stage_name=stage.stage_name, action_name=action.action_name, name=name, value=value)
        for stage in state.stages
        for action in stage.actions
        for name, value in sorted(action.output_variables.items())
    ]


def conditions(state: ExecutionState) -> list[ConditionRow]:
    return [
        ConditionRow(
            stage_name=stage.stage_name,
            kind=condition.kind.declared,
            result=condition.result,
            status=condition.status.value,
            started_at=condition.started_at,
            finished_at=condition.finished_at,
            overridden_by=condition.overridden_by,
            overridden_at=condition.overridden_at,
            override_reason=condition.override_reason,
            rules=[
                RuleRow(
                    rule_name=rule.rule_name,
                    provider=rule.provider,
                    status=rule.status.value,
                    summary=rule.summary,
                    window_opens=window_opening(rule.opens_at, rule.time_zone)
                    if rule.opens_at is not None and rule.status == ConditionStatus.IN_PROGRESS
                    else None,
                )
                for rule in condition.rules
            ],
        )
        for stage in state.stages
        for condition in stage.conditions
    ]


def approvals(state: ExecutionState) -> list[ApprovalRow]:
    """Every accepted decision in order (who, when, summary), then each approval still waiting."""
    rows: list[ApprovalRow] = []
    for stage in state.stages:
        for action in stage.actions:
            rows += [_decision_row(stage.stage_name, action.action_name, d) for d in action.approvals]
            if action.token is not None:
                request = action.approval_request
                counted = _counted(action)
                rows.append(
                    ApprovalRow(
                        stage_name=stage.stage_name,
                        action_name=action.action_name,
                        status="Waiting",
                        approvals=len(counted),
                        quorum=request.quorum if request else 1,
                        may_decide=who_may_decide(request, counted) if request else "anyone with access",
                    )
                )
    return rows


def _decision_row(stage_name: str, action_name: str, decision: ApprovalResult) -> ApprovalRow:
    return ApprovalRow(
        stage_name=stage_name,
        action_name=action_name,
        status=decision.status,
        by=decision.by,
        decided_at=decision.decided_at,
        summary=decision.summary or None,
        source=decision.source,
        approvals=decision.approvals,
        quorum=decision.quorum,
    )


def compensations(state: ExecutionState) -> list[CompensationRow]:
    return [
        CompensationRow(
            stage_name=stage.stage_name,
            action_name=action.action_name,
            status=action.compensation.status.value,
            attempt=action.compensation.attempt,
            started_at=action.compensation.started_at,
            finished_at=action.compensation.finished_at,
            error=f"{action.compensation.error.code}: {action.compensation.error.message}"
            if action.compensation.error
            else None,
            log_name=compensation_log_name(action.action_name),
        )
        for stage in state.stages
        for action in stage.actions
        if action.compensation is not None
    ]
