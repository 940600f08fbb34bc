"""The `Pipeline` workflow: one long-lived coordinator per pipeline (workflow id `<pipeline>`).

It keeps what is true across executions: the pipeline's versions (digests of declarations kept in
the document store, never the declarations themselves), per stage the lock holder, the executions
waiting in front of it, the inbound transition, the last execution that succeeded in it and the
newest that entered it. Executions ask to enter a stage with the `enter_stage` update, answered at once
when the answer is known (the stage is free) and by a `stage_decision` signal only when they must wait;
the `request_entry` signal asks the same and is always answered by that signal (the activity falls back
to it when the update gets no answer in time). They report leaving with `release_stage`, or, between two
stages, with the `leaving` part of the next stage's request (one message per stage boundary). PARALLEL
executions send nothing: they read the disabled transitions from this workflow's memo and ask only to be
held at one (`holdAtTransition`), let in when it is enabled; their facts are read from visibility. It is
never the parent of an execution, and it continues-as-new every `continueAsNewEvery` messages, so its
history stays small however many executions pass through it.

It lives only while it has something to keep: with no registered version (so no schedule or trigger,
which follow the current version), no execution holding, waiting or held at a stage and no disabled
transition for `idleMinutes`, it saves its state in the store and closes (returning that state). The
next message starts a new run (signal- or update-with-start), which reads the saved state before it
handles anything: the facts (last succeeded, newest entered) outlive the close.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta
from functools import partial
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from conveyor import metrics
    from conveyor.interface import (
        Activity,
        EntryDecision,
        ExecutionMode,
        Query,
        Signal,
        Update,
        WorkflowType,
        split_execution_workflow_id,
    )
    from conveyor.memo import CoordinatorMemoField, coordinator_memo, coordinator_memo_fields
    from conveyor.model import (
        ApplyRequest,
        ApplyResult,
        CoordinatorInput,
        CoordinatorState,
        ManualRollbackStart,
        PipelineVersion,
        RollbackRequest,
        StageEntryDecision,
        StageEntryRequest,
        StageRelease,
        StoreDocumentInput,
        TransitionChange,
        TransitionState,
        TriggerSync,
        nullable,
    )
    from conveyor.providers.polling import polled_source
    from conveyor.spec.validation import validate_pipeline
    from workflows.locks import Decision, StageLocks


def declaration_digest(canonical: str) -> str:
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def canonical_declaration(pipeline: dict[str, Any]) -> str:
    """Stable JSON of a declaration without its `version`, so re-applying the same content is a no-op."""
    content = {k: v for k, v in pipeline.items() if k != "version"}
    return json.dumps(content, sort_keys=True, separators=(",", ":"))


@workflow.defn(name=WorkflowType.COORDINATOR.value)
class PipelineWorkflow:
    @workflow.init
    def __init__(self, input: CoordinatorInput) -> None:
        self._input = input
        self._state = input.state or CoordinatorState(
            pipeline_name=input.pipeline_name, execution_mode=input.execution_mode
        )
        self._state.handled = 0  # counts every message this run handles; the loop wakes on each
        # A continued run gets its state in the input; a started one reads what the last run saved
        # first, and messages wait for it (they arrive with the start).
        self._restored = input.state is not None
        self._outbox: list[Decision] = []
        self._apply_lock = asyncio.Lock()
        self._check_interval = input.liveness_check_seconds
        self._idle_clock: asyncio.Task[None] | None = None  # see _arm_idle_clock
        self._idle_since = 0  # messages handled when the idle clock was armed

    # --- queries --------------------------------------------------------------------------------

    @workflow.query(name=Query.STATE)
    def state(self) -> CoordinatorState:
        return self._state

    # --- messages from executions ---------------------------------------------------------------

    @workflow.signal(name=Signal.REQUEST_ENTRY)
    async def request_entry(self, request: StageEntryRequest) -> None:
        await self._until_restored()
        self._request_entry(request)

    def _request_entry(self, request: StageEntryRequest) -> None:
        self._outbox += self._entry_decisions(request)

    def _entry_decisions(self, request: StageEntryRequest) -> list[Decision]:
        if request.leaving is not None:  # the stage it leaves on its way in: one more message handled
            self._state.handled += 1
        self._state.handled += 1
        self._check_interval = self._input.liveness_check_seconds  # the queue changed: look again soon
        return self._locks.request_entry(request, workflow.now())

    @workflow.update(name=Update.ENTER_STAGE)
    async def enter_stage(self, request: StageEntryRequest) -> StageEntryDecision | None:
        """`request_entry` answered at once when the answer is already known (the stage is free, or the
        request is superseded); None when the execution must wait for its `stage_decision` signal."""
        await self._until_restored()
        produced = self._entry_decisions(request)
        # Only the answers this request produced: one queued before (for a signalled request the
        # activity fell back to) still goes out as a signal.

        def for_caller(message: Decision) -> bool:
            return message[0] == request.execution.workflow_id and message[1].stage_name == request.stage_name

        self._outbox += [m for m in produced if not for_caller(m)]
        answers = [m[1] for m in produced if for_caller(m)]
        return answers[-1] if answers else None

    @workflow.signal(name=Signal.RELEASE_STAGE)
    async def release_stage(self, release: StageRelease) -> None:
        await self._until_restored()
        self._state.handled += 1
        self._outbox += self._locks.release(release, workflow.now())

    @property
    def _locks(self) -> StageLocks:
        """The lock rules over the current state (replaced when a started run restores the saved one)."""
        return StageLocks(self._state)

    # --- operators ------------------------------------------------------------------------------

    @workflow.update(name=Update.DISABLE_TRANSITION)
    async def disable_transition(self, change: TransitionChange) -> TransitionState:
        await self._until_restored()
        transition = self._locks.disable_transition(change, workflow.now())
        self._state.handled += 1
        self._publish_transitions()
        return transition

    @disable_transition.validator
    def _validate_disable(self, change: TransitionChange) -> None:
        self._check_stage(change.stage_name)

    @workflow.update(name=Update.ENABLE_TRANSITION)
    async def enable_transition(self, change: TransitionChange) -> TransitionState:
        await self._until_restored()
        transition, decisions = self._locks.enable_transition(change, workflow.now())
        self._state.handled += 1
        self._publish_transitions()
        self._outbox += decisions  # the next waiter, and the PARALLEL executions held at the transition
        return transition

    @enable_transition.validator
    def _validate_enable(self, change: TransitionChange) -> None:
        self._check_stage(change.stage_name)

    def _publish_transitions(self) -> None:
        """The disabled transitions, in the memo: PARALLEL executions read them with a describe, which
        needs no task of this workflow, so they enter stages without messaging it."""
        workflow.upsert_memo(self._memo("disabled_transitions"))

    def _memo(self, *fields: CoordinatorMemoField) -> dict[str, Any]:
        """The coordinator's memo (the current version, the execution mode, the disabled transitions), or
        only the named fields of it."""
        disabled = self._locks.disabled_transitions()
        if fields:
            return coordinator_memo_fields(self._state, disabled, *fields)
        return coordinator_memo(self._state, disabled)

    def _check_stage(self, name: str) -> None:
        current = self._state.current
        known = {s.stage_name for s in self._state.stages} | set(current.stage_names if current else [])
        if current is not None and name not in known:
            raise ApplicationError(
                f"pipeline '{self._state.pipeline_name}' has no stage '{name}' "
                f"(stages: {', '.join(current.stage_names)})"
            )

    @workflow.update(name=Update.APPLY)
    async def apply(self, request: ApplyRequest) -> ApplyResult:
        await self._until_restored()
        async with self._apply_lock:  # two applies at once get consecutive versions
            pipeline = validate_pipeline(request.pipeline).pipeline
            assert pipeline is not None  # the validator refused anything else
            document = pipeline.model_dump(mode="json", exclude_none=True)
            canonical = canonical_declaration(document)
            digest = declaration_digest(canonical)
            current = self._state.current
            if current is not None and current.digest == digest:
                return ApplyResult(version=current, changed=False)
            await workflow.execute_activity(
                Activity.STORE_DOCUMENT,
                StoreDocumentInput(data=canonical, digest=digest),
                start_to_close_timeout=timedelta(minutes=1),
            )
            version = PipelineVersion(
                version=(current.version + 1) if current else 1,
                digest=digest,
                applied_at=workflow.now(),
                applied_by=request.by,
                stage_names=[s.name for s in pipeline.stages],
            )
            # The pipeline's cron and poll schedules follow its current version.
            extension = pipeline.conveyor
            await workflow.execute_activity(
                Activity.SYNC_TRIGGERS,
                TriggerSync(
                    pipeline_name=pipeline.name,
                    cron=extension.schedule.cron if extension.schedule else None,
                    time_zone=extension.schedule.time_zone if extension.schedule else "UTC",
                    # No poll schedule without a source that can be polled (PollForSourceChanges: false opts out).
                    poll_seconds=extension.poll.interval_seconds
                    if extension.poll and polled_source(pipeline)
                    else None,
                ),
                start_to_close_timeout=timedelta(minutes=1),
            )
            self._state.versions.append(version)
            self._state.execution_mode = pipeline.execution_mode
            self._state.handled += 1
            workflow.upsert_memo(self._memo("current", "mode"))
            return ApplyResult(version=version, changed=True)

    @apply.validator
    def _validate_apply(self, request: ApplyRequest) -> None:
        report = validate_pipeline(request.pipeline)
        if not report.ok:
            raise ApplicationError("\n".join(issue.render("<apply>") for issue in report.errors))
        assert report.pipeline is not None
        if report.pipeline.name != self._state.pipeline_name:
            raise ApplicationError(
                f"this is pipeline '{self._state.pipeline_name}'; the declaration is named '{report.pipeline.name}'"
            )

    @workflow.update(name=Update.ROLLBACK_STAGE)
    async def rollback_stage(self, request: RollbackRequest) -> str:
        """Manual rollback: a new ROLLBACK execution re-runs the stage with the target's inputs. The
        target-specific rules (it succeeded there, same version, not itself a rollback) are checked
        by the activity, which reads the target's recorded state."""
        await self._until_restored()
        current = self._state.current
        assert current is not None  # the validator refused otherwise
        self._state.handled += 1
        execution_id: str = await workflow.execute_activity(
            Activity.START_MANUAL_ROLLBACK,
            ManualRollbackStart(
                pipeline_name=self._state.pipeline_name, digest=current.digest, version=current.version, request=request
            ),
            result_type=str,
            start_to_close_timeout=timedelta(minutes=1),
        )
        return execution_id

    @rollback_stage.validator
    def _validate_rollback(self, request: RollbackRequest) -> None:
        if self._state.current is None:
            raise ApplicationError(
                f"pipeline '{self._state.pipeline_name}' has no applied version: `conveyor apply FILE` registers it"
            )
        if self._state.execution_mode == ExecutionMode.PARALLEL:
            raise ApplicationError("stage rollback is not available in PARALLEL pipelines")
        self._check_stage(request.stage_name)

    # --- the loop ---------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: CoordinatorInput) -> CoordinatorState:
        if not self._restored:
            await self._restore()
        while True:
            seen, timed_out = self._state.handled, False
            self._arm_idle_clock()
            try:
                # Wakes on every message, and when the idle clock rings. Only while someone waits behind a
                # holder can an ended holder hurt: check then, soon at first and less often the longer
                # nothing changes (approvals wait for days).
                await workflow.wait_condition(partial(self._should_wake, seen), timeout=self._liveness_timeout())
            except TimeoutError:
                timed_out = self._state.handled == seen  # a message in the same activation counts
            await self._flush_outbox()
            self._report_waiting()
            if timed_out and self._locks.someone_waits_behind_a_holder():
                await self._reclaim_abandoned_locks(only_waited_for=True)
                self._check_interval = min(self._check_interval * 2, input.liveness_check_max_seconds)
                await self._flush_outbox()
            if self._idle_clock_rang():
                quiet = self._state.handled == self._idle_since  # no message for a whole idle period
                self._idle_clock = None
                if quiet and self._idle():
                    if await self._saved_and_still_idle():
                        return self._state  # nothing may await between the check and here
                elif quiet and self._idle(but_for_holders=True):
                    await self._reclaim_abandoned_locks(only_waited_for=False)  # a holder may have ended unannounced
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._flush_outbox()
                self._state.runs += 1
                # A new run starts with an empty memo unless given one: carry what readers rely on.
                workflow.continue_as_new(input.model_copy(update={"state": self._state}), memo=self._memo())

    def _report_waiting(self) -> None:
        """conveyor_executions_waiting per stage: set on every wake (a replayed run sets nothing, so a restarted
        worker reports again on the next message)."""
        meter = workflow.metric_meter()
        for lock in self._state.stages:
            metrics.executions_waiting(
                meter, self._state.pipeline_name, lock.stage_name, len(lock.waiting) + len(lock.held)
            )

    def _should_wake(self, handled_before: int) -> bool:
        return (
            self._state.handled != handled_before
            or bool(self._outbox)
            or self._should_continue_as_new()
            or self._idle_clock_rang()
        )

    def _arm_idle_clock(self) -> None:
        """With nothing to keep but perhaps holders, one timer per idle period (not one per message: each
        costs history events on a path every stage boundary takes); it closes the workflow when it rings
        after a period with no message (so between one and two idle periods after the last one)."""
        if self._idle_clock is None and self._idle(but_for_holders=True):
            self._idle_since = self._state.handled
            self._idle_clock = asyncio.create_task(workflow.sleep(timedelta(minutes=self._input.idle_minutes)))

    def _idle_clock_rang(self) -> bool:
        return self._idle_clock is not None and self._idle_clock.done()

    async def _until_restored(self) -> None:
        if not self._restored:
            await workflow.wait_condition(lambda: self._restored)

    async def _restore(self) -> None:
        """Start from what the last run saved when it closed (nothing, for a new pipeline)."""
        saved: CoordinatorState | None = await workflow.execute_local_activity(
            Activity.SAVED_COORDINATOR_STATE,
            self._input.pipeline_name,
            result_type=nullable(CoordinatorState),
            start_to_close_timeout=timedelta(seconds=30),
        )
        if saved is not None:
            # The mode is the starter's (the execution's or the applied declaration's): the newest word.
            self._state = saved.model_copy(
                update={"execution_mode": self._input.execution_mode, "handled": 0, "runs": saved.runs + 1}
            )
        self._restored = True

    def _liveness_timeout(self) -> timedelta | None:
        return timedelta(seconds=self._check_interval) if self._locks.someone_waits_behind_a_holder() else None

    def _idle(self, *, but_for_holders: bool = False) -> bool:
        """Nothing to keep this workflow running for: no registered version (nor so any schedule or
        trigger), no answer to send, no execution holding (unless `but_for_holders`), waiting or held
        at a stage, no disabled transition."""
        return not self._state.versions and not self._outbox and self._locks.at_rest(but_for_holders=but_for_holders)

    async def _saved_and_still_idle(self) -> bool:
        """Save the state for the next run, then tell whether closing now loses nothing. A message handled
        meanwhile says no (the loop goes on, and saves again when idle again). One that arrives after
        this, while the run completes, fails the completion (a signal), or is retried by the server on
        a new run (an update-with-start), which starts from what was saved."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        handled = self._state.handled
        if not self._idle():
            return False
        try:
            await workflow.execute_local_activity(
                Activity.SAVE_COORDINATOR_STATE,
                self._state,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
            )
        except ActivityError as err:  # stay open, rather than close without it: tried again when idle again
            workflow.logger.warning("coordinator state not saved: staying open", extra={"error": str(err.cause)})
            return False
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._state.handled == handled and self._idle()

    def _should_continue_as_new(self) -> bool:
        return (
            self._state.handled >= self._input.continue_as_new_every or workflow.info().is_continue_as_new_suggested()
        )

    async def _flush_outbox(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            results = await asyncio.gather(
                *(
                    workflow.get_external_workflow_handle(workflow_id).signal(Signal.STAGE_DECISION, decision)
                    for workflow_id, decision in batch
                ),
                return_exceptions=True,
            )
            for (workflow_id, decision), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException) and decision.decision == EntryDecision.ENTER:
                    # The execution is gone (terminated while it waited): take the stage back.
                    self._outbox += self._locks.drop(decision.stage_name, _execution_id(workflow_id), workflow.now())

    async def _reclaim_abandoned_locks(self, *, only_waited_for: bool) -> None:
        """A holder that ended without releasing (terminated, say) must not block the stage, nor keep
        this workflow running."""
        closed: list[str] = await workflow.execute_local_activity(
            Activity.CLOSED_WORKFLOWS,
            self._locks.holders_to_check(only_waited_for=only_waited_for),
            result_type=list[str],
            start_to_close_timeout=timedelta(seconds=30),
        )
        reclaimed, decisions = self._locks.reclaim(closed, workflow.now())
        for lock in reclaimed:
            workflow.logger.warning(
                "stage lock taken back from an ended execution",
                extra={"stage": lock.stage_name, "execution": lock.execution_id},
            )
        self._outbox += decisions


def _execution_id(workflow_id: str) -> str:
    return split_execution_workflow_id(workflow_id)[1]
