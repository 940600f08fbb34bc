"""The execution's recorder: the only code in the execution workflow that changes an execution's or a stage's
status, or writes its memo and search attributes. Each status change is also kept as a typed `Transition`
(pipeline, stage or action; from, to, when, why): the diagnostic `transitions` query returns them, and
issue 18 turns them into events. They stay out of `ExecutionState` and the memo.

Memo writes are batched as the workflow always did: `later=True` keeps fields for the next upsert (or the
next wait, `flush_memo`), one visibility write instead of two. Writes go through a `VisibilityWriter`, which the
workflow implements with `workflow.upsert_memo`/`upsert_search_attributes` and a unit test with a list.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from temporalio import workflow
from temporalio.common import MetricMeter, SearchAttributeUpdate, TypedSearchAttributes

with workflow.unsafe.imports_passed_through():
    from conveyor.memo import execution_memo, stage_memo
    from conveyor.model import (
        ActionState,
        ActionStatus,
        CompensationState,
        CompensationStatus,
        ConditionOverride,
        ConditionStatus,
        ErrorDetails,
        ExecutionState,
        ExecutionStatus,
        RollbackSpec,
        StageAttempt,
        StageResult,
        StageRetryRequest,
        StageState,
        StageStatus,
        Transition,
        TransitionScope,
    )
    from conveyor.search_attributes import (
        PIPELINE_NAME,
        PIPELINE_SOURCE_REVISIONS,
        PIPELINE_STAGES_SUCCEEDED,
        PIPELINE_STATUS,
        PIPELINE_TRIGGER,
        PIPELINE_VERSION,
        revision_keys,
    )
    from conveyor.spec.declaration import Pipeline
    from workflows.transition_metrics import TransitionMetrics


class VisibilityWriter(Protocol):
    """Where the recorder writes: the workflow's memo, search attributes, clock and log."""

    def now(self) -> datetime: ...

    def search_attributes(self) -> TypedSearchAttributes: ...

    def upsert_memo(self, fields: dict[str, Any]) -> None: ...

    def upsert_search_attributes(self, updates: list[SearchAttributeUpdate[Any]]) -> None: ...

    def log(self, event: str, **fields: str) -> None: ...


class WorkflowWriter:
    """The workflow's own memo and search attributes (deterministic: commands recorded in history)."""

    def now(self) -> datetime:
        return workflow.now()

    def search_attributes(self) -> TypedSearchAttributes:
        return workflow.info().typed_search_attributes

    def upsert_memo(self, fields: dict[str, Any]) -> None:
        workflow.upsert_memo(fields)

    def upsert_search_attributes(self, updates: list[SearchAttributeUpdate[Any]]) -> None:
        workflow.upsert_search_attributes(updates)

    def log(self, event: str, **fields: str) -> None:
        # workflow.logger is replay-safe: nothing is logged again when history is replayed.
        workflow.logger.info(event, extra=fields)


ActionMark = tuple[ActionStatus | None, datetime | None]  # an action's status and start, before a stage attempt


class Recorder:
    def __init__(
        self,
        writer: VisibilityWriter,
        meter: MetricMeter | None = None,
        told: Callable[[Transition], None] | None = None,
    ) -> None:
        self._writer = writer
        self._metrics = TransitionMetrics(meter)  # conveyor_* metrics from the same status changes
        self._told = told  # hears each pipeline and stage transition as it is recorded (the events' outbox)
        self._state: ExecutionState | None = None
        self._memo_pending: dict[str, Any] = {}  # memo fields to upsert with the next upsert
        self._succeeded_stages: list[str] = []
        self._actions_before: dict[str, dict[str, ActionMark]] = {}  # stage -> action -> mark, at its entry
        self.transitions: list[Transition] = []

    @property
    def state(self) -> ExecutionState:
        assert self._state is not None, "the execution has no state yet"
        return self._state

    @property
    def has_state(self) -> bool:
        return self._state is not None

    def begin(self, state: ExecutionState) -> None:
        """The state to record into (replaced once the input is validated: the same execution, better known)."""
        self._state = state

    # --- memo batching ------------------------------------------------------------------------------

    def upsert_memo(self, fields: dict[str, Any], *, later: bool = False) -> None:
        """Upsert memo fields, with any kept for later; `later` keeps these for the next upsert (or the
        next wait, `flush_memo`): one visibility write instead of two."""
        self._memo_pending |= fields
        if not later:
            self.flush_memo()

    def flush_memo(self) -> None:
        if self._memo_pending:
            self._writer.upsert_memo(self._memo_pending)
            self._memo_pending = {}

    def stage_changed(self, stage: StageState) -> None:
        """Something in the stage changed (a condition's rules, a compensation's attempt): write its memo key."""
        self.upsert_memo(stage_memo(stage))

    # --- the execution ------------------------------------------------------------------------------

    def started(self, pipeline: Pipeline) -> None:
        """Search attributes the starter did not set (`conveyor start` sets them all: one visibility write
        fewer), and the whole memo with the first stage's entry."""
        state = self.state
        attributes: list[SearchAttributeUpdate[Any]] = [
            PIPELINE_NAME.value_set(pipeline.name),
            PIPELINE_VERSION.value_set(state.pipeline_version),
            PIPELINE_STATUS.value_set(ExecutionStatus.IN_PROGRESS.value),
            PIPELINE_TRIGGER.value_set(state.trigger.trigger_type.value),
        ]
        present = self._writer.search_attributes()
        attributes = [pair for pair in attributes if present.get(pair.key) != pair.value]
        if attributes:
            self._writer.upsert_search_attributes(attributes)
        self._pipeline_transition(None, ExecutionStatus.IN_PROGRESS, "started")
        self.upsert_memo(execution_memo(state), later=True)  # with the first stage's entry

    def rolling_back(self, rollback: RollbackSpec) -> None:
        """A ROLLBACK execution: which execution's inputs it re-runs which stage with."""
        state = self.state
        state.execution_type, state.rollback_of = "ROLLBACK", rollback.target_execution_id
        state.rollback_stage = rollback.stage_name
        state.source_revisions = list(rollback.source_revisions)
        self._sources_resolved()
        self.upsert_memo(execution_memo(state, with_stages=False))

    def waiting_for(self, stage_name: str | None) -> None:
        """Waiting in front of a stage (its lock, or a disabled transition), or no longer (None)."""
        self.state.waiting_for_stage = stage_name
        if stage_name is not None:
            self.flush_memo()  # the wait may be long: the memo must be current

    def stopping(self, summary: str) -> None:
        """A stop was asked for while the execution runs: Stopping until its running actions finish."""
        state = self.state
        if state.status != ExecutionStatus.IN_PROGRESS:
            return
        self._pipeline_transition(state.status, ExecutionStatus.STOPPING, summary)
        state.status = ExecutionStatus.STOPPING
        state.status_summary = summary
        self._writer.upsert_search_attributes([PIPELINE_STATUS.value_set(ExecutionStatus.STOPPING.value)])

    def resumed(self, retry: StageRetryRequest) -> None:
        """A failed execution retried within its retry window: in progress again."""
        state = self.state
        summary = f"stage '{retry.stage_name}' retried ({retry.retry_mode}) by {retry.by or 'unknown'}"
        self._pipeline_transition(state.status, ExecutionStatus.IN_PROGRESS, summary)
        state.status = ExecutionStatus.IN_PROGRESS
        state.status_summary = summary
        state.finished_at = None
        self._writer.upsert_search_attributes([PIPELINE_STATUS.value_set(ExecutionStatus.IN_PROGRESS.value)])
        self.upsert_memo(execution_memo(state, with_stages=False))

    def rollback_started(self, rollback_execution_id: str) -> None:
        self.state.rollback_execution = rollback_execution_id

    def failed(self, error: ErrorDetails) -> None:
        """Failed, with the reason; whatever was under way (a stage, its actions, a condition) is closed,
        so no duration keeps growing."""
        state = self.state
        before = {s.stage_name: (s.status, self._marks(s)) for s in state.stages}
        for stage in state.close_unfinished(self._writer.now(), error):
            status, marks = before[stage.stage_name]
            self._stage_transition(stage, status, error.message)
            self._action_transitions(stage, marks)
            self.upsert_memo(stage_memo(stage), later=True)  # with the execution's, below
        self.finished(ExecutionStatus.FAILED, f"execution failed: {error.message}")

    def finished(self, status: ExecutionStatus, summary: str | None) -> None:
        state = self.state
        self._writer.log(
            "execution finished", pipeline=state.pipeline_name, execution=state.execution_id, status=status.value
        )
        self._pipeline_transition(state.status, status, summary)
        state.status = status
        state.status_summary = summary
        state.finished_at = self._writer.now()
        self._writer.upsert_search_attributes([PIPELINE_STATUS.value_set(status.value)])
        self.upsert_memo(execution_memo(state, with_stages=False))

    # --- stages -------------------------------------------------------------------------------------

    def stage_started(self, index: int, retry: StageRetryRequest | None, previous: StageResult | None) -> StageState:
        """A stage attempt begins (a retry keeps a summary of the attempt before it)."""
        stage = self.state.stages[index]
        if previous is not None:
            assert retry is not None
            stage.previous_attempts.append(_attempt_summary(previous.state, retry))
            stage.error = None
        self._actions_before[stage.stage_name] = self._marks(stage)
        reason = f"retried ({retry.retry_mode}) by {retry.by or 'unknown'}" if retry else None
        self._stage_transition(stage, stage.status, reason, StageStatus.IN_PROGRESS)
        stage.status = StageStatus.IN_PROGRESS
        stage.attempt += 1
        stage.started_at = self._writer.now()
        self.upsert_memo(stage_memo(stage))
        return stage

    def stage_cancelled(self, stage: StageState) -> None:
        """The stage child was cancelled with the execution (Temporal's cancel: an abandon)."""
        self._stage_transition(stage, stage.status, "cancelled", StageStatus.STOPPED)
        stage.status = StageStatus.STOPPED

    def stage_errored(self, stage: StageState, message: str) -> StageResult:
        """The stage child failed without a result of its own."""
        stage.status = StageStatus.FAILED
        stage.finished_at = self._writer.now()
        stage.error = ErrorDetails(code="StageError", message=message)
        return StageResult(state=stage)

    def stage_finished(self, index: int, result: StageResult) -> None:
        """The stage child's result replaces the stage's state (keeping what only the execution knows)."""
        state = self.state
        stage = state.stages[index]
        result.state.previous_attempts = stage.previous_attempts
        result.state.conditions = stage.conditions
        state.stages[index] = result.state
        state.source_revisions.extend(result.source_revisions)
        if result.source_revisions:
            self._sources_resolved()
        marks = self._actions_before.pop(stage.stage_name, {})
        self._action_transitions(result.state, marks)
        reason = result.state.error.message if result.state.error else None
        self._stage_transition(result.state, StageStatus.IN_PROGRESS, reason)
        # A success is told with whatever comes next (the next stage's entry, its conditions, the end).
        self.upsert_memo(stage_memo(result.state), later=result.state.status == StageStatus.SUCCEEDED)

    def _sources_resolved(self) -> None:
        """PipelineSourceRevisions: the execution history is filtered by a revision id, full or short."""
        keys = revision_keys([revision.revision_id for revision in self.state.source_revisions])
        if keys:
            self._writer.upsert_search_attributes([PIPELINE_SOURCE_REVISIONS.value_set(keys)])

    def stage_succeeded(self, stage_name: str) -> None:
        self._succeeded_stages.append(stage_name)
        self._writer.upsert_search_attributes([PIPELINE_STAGES_SUCCEEDED.value_set(self._succeeded_stages)])

    def stage_failed_condition(self, stage: StageState, error: ErrorDetails) -> None:
        """A stage's onSuccess condition failed (or its beforeEntry one, the stage never run): the stage failed."""
        self._stage_transition(stage, stage.status, error.message, StageStatus.FAILED)
        stage.status = StageStatus.FAILED
        stage.error = error
        self.upsert_memo(stage_memo(stage))

    def stage_skipped(self, stage: StageState, reason: str, *, keep_error: bool) -> None:
        """A beforeEntry condition's SKIP (the stage never ran: no error), or onFailure SKIP (it failed)."""
        self._stage_transition(stage, stage.status, reason, StageStatus.SKIPPED)
        stage.status = StageStatus.SKIPPED
        if not keep_error:
            stage.error = None
        self.upsert_memo(stage_memo(stage))

    def condition_overridden(self, stage: StageState, override: ConditionOverride) -> None:
        if stage.conditions:
            condition = stage.conditions[-1]
            condition.status = ConditionStatus.OVERRIDDEN
            condition.overridden_by = override.by
            condition.overridden_at = self._writer.now()
            condition.override_reason = override.reason
        self.stage_changed(stage)

    # --- compensation -------------------------------------------------------------------------------

    def compensation_started(self, stage: StageState, action: ActionState) -> CompensationState:
        action.compensation = CompensationState(status=CompensationStatus.IN_PROGRESS, started_at=self._writer.now())
        self.stage_changed(stage)
        return action.compensation

    def compensation_finished(self, stage: StageState, progress: CompensationState, status: CompensationStatus) -> None:
        progress.status = status
        progress.finished_at = self._writer.now()
        self.stage_changed(stage)

    # --- transitions --------------------------------------------------------------------------------

    def _pipeline_transition(self, before: ExecutionStatus | None, after: ExecutionStatus, reason: str | None) -> None:
        if before != after:
            self._metrics.pipeline(self.state.pipeline_name, before, after)
            self._record(
                Transition(
                    scope=TransitionScope.PIPELINE,
                    from_status=before,
                    to_status=after,
                    at=self._writer.now(),
                    reason=reason,
                )
            )

    def _stage_transition(
        self, stage: StageState, before: StageStatus | None, reason: str | None, after: StageStatus | None = None
    ) -> None:
        """`after` defaults to the stage's status now (when the change was already made)."""
        to_status = after if after is not None else stage.status
        if to_status is not None and before != to_status:
            self._metrics.stage(self.state.pipeline_name, stage, to_status, self._writer.now())
            self._record(
                Transition(
                    scope=TransitionScope.STAGE,
                    stage_name=stage.stage_name,
                    from_status=before,
                    to_status=to_status,
                    at=self._writer.now(),
                    reason=reason,
                )
            )

    def _record(self, transition: Transition) -> None:
        self.transitions.append(transition)
        if self._told is not None:
            self._told(transition)

    @staticmethod
    def _marks(stage: StageState) -> dict[str, ActionMark]:
        return {a.action_name: (a.status, a.started_at) for a in stage.actions}

    def _action_transitions(self, stage: StageState, before: dict[str, ActionMark]) -> None:
        """The stage child reports its actions' end states, not each change: an action that started since
        `before` went to InProgress (at its start), then to where it is now (at its end), in time order."""
        found: list[Transition] = []
        for action in stage.actions:
            was, started = before.get(action.action_name, (None, None))
            if action.status is None or (action.status == was and action.started_at == started):
                continue
            if action.started_at != started and was != ActionStatus.IN_PROGRESS:
                found.append(self._action(stage, action, was, ActionStatus.IN_PROGRESS, action.started_at, None))
                was = ActionStatus.IN_PROGRESS
            if action.status != was:
                at = action.finished_at or action.started_at
                why = action.error.message if action.error else None
                found.append(self._action(stage, action, was, action.status, at, why))
        self.transitions += sorted(found, key=lambda t: t.at)

    def _action(
        self,
        stage: StageState,
        action: ActionState,
        before: ActionStatus | None,
        after: ActionStatus,
        at: datetime | None,
        reason: str | None,
    ) -> Transition:
        self._metrics.action(self.state.pipeline_name, stage.stage_name, action, after, self._writer.now())
        return Transition(
            scope=TransitionScope.ACTION,
            stage_name=stage.stage_name,
            action_name=action.action_name,
            from_status=before,
            to_status=after,
            at=at or self._writer.now(),
            reason=reason,
        )


def _attempt_summary(state: StageState, retry: StageRetryRequest) -> StageAttempt:
    return StageAttempt(
        attempt=state.attempt,
        status=state.status,
        started_at=state.started_at,
        finished_at=state.finished_at,
        error=state.error,
        retried_by=retry.by,
        retry_mode=retry.retry_mode,
    )
