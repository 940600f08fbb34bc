"""The `PipelineStage` workflow: one stage attempt of an execution.

Runs the stage's runOrder groups in ascending order, the actions of a group in parallel, each by the stage's
`ActionRunner` (workflows/action.py: its activity, retries, waves, bake, compensation) or, for a Manual approval,
as a durable wait answered by the `approve` / `reject` updates or signals. A failed action lets its group finish
and starts no later group; a stop starts nothing new. A FAILED_ACTIONS retry keeps what succeeded before.
Deterministic: no I/O, no clocks but `workflow.now()`, no randomness but `workflow.uuid4()`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from conveyor.event_states import action_event_state
    from conveyor.events import EventScope
    from conveyor.interface import (
        Activity,
        ApprovalOutcome,
        ApprovalStatus,
        NoticeKind,
        Query,
        RetryMode,
        Signal,
        Update,
        WorkflowType,
    )
    from conveyor.model import (
        ActionOutcome,
        ActionState,
        ActionStatus,
        ApprovalDecision,
        ApprovalNotice,
        ApprovalResult,
        ApproverQuery,
        ApproverSnapshot,
        ErrorDetails,
        SlackMessageRef,
        StageInput,
        StageResult,
        StageState,
        StageStatus,
        StopRequest,
    )
    from conveyor.providers.manual import MANUAL
    from conveyor.spec.declaration import Action, Stage
    from workflows.action import ActionRunner, action_state, action_timeout
    from workflows.approvals import (
        ApprovalBook,
        ApprovalRefused,
        apply_snapshot,
        approval_request,
        notice_channels,
        outcome_of,
        progress_notice,
        stopped,
        timed_out,
    )
    from workflows.failures import ActionFailed
    from workflows.ledger import StageLedger
    from workflows.outbox import STAGE_DRAIN_TIMEOUT, STAGE_HOLD, Outbox, action_type, stage_origin

STAGE_FAILED = "StageFailed"  # the failure type whose details carry the StageResult
DEFAULT_APPROVAL_TIMEOUT = MANUAL.default_timeout
NOTIFICATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=5
)


def initial_stage_state(stage: Stage, attempt: int = 0) -> StageState:
    """A stage's state before anything in it ran: every action listed, none started."""
    return StageState(
        stage_name=stage.name,
        attempt=attempt,
        actions=[
            ActionState(
                action_name=a.name,
                provider=a.action_type_id.provider,
                category=a.action_type_id.category.value,
                run_order=a.run_order,
                max_attempts=a.conveyor.retry.maximum_attempts if a.conveyor.retry else None,
            )
            for a in stage.actions
        ],
    )


@workflow.defn(name=WorkflowType.STAGE.value)
class StageWorkflow:
    @workflow.init
    def __init__(self, input: StageInput) -> None:
        # Built in init, so update validators can read it before `run` starts.
        self._stage = Stage.model_validate(input.stage)
        self._input = input
        self._state = initial_stage_state(self._stage, attempt=input.attempt)
        self._ledger = StageLedger(
            values={ns: dict(v) for ns, v in input.variables.items()},
            artifacts={ref.name: ref for ref in input.artifacts},
        )
        self._approvals = ApprovalBook(self._stage.name, self._state.actions)
        self._stop: StopRequest | None = None
        self._notifications: list[asyncio.Task[None]] = []
        self._slack: list[asyncio.Task[None]] = []  # Slack posts and updates, each after the one before
        self._notices: dict[str, ApprovalNotice] = {}
        # Its actions' events leave from here, as each action changes state (the execution sends the stage's).
        self._events = Outbox(
            input.pipeline_name,
            input.execution_id,
            stage_origin(self._stage.name, input.attempt),
            input.pipeline_version,
            hold=STAGE_HOLD,
        )
        self._events.sinks = list(input.event_sinks)
        self._actions = ActionRunner(
            self._stage.name,
            input,
            self._state,
            self._ledger,
            lambda: self._stop,
            self._wait_for_approval,
            self._action_changed,
        )
        self._carried = self._carry_over(input)

    def _carry_over(self, input: StageInput) -> set[str]:
        """A FAILED_ACTIONS retry keeps what succeeded before: its state, variables and artifacts."""
        if input.retry_mode != RetryMode.FAILED_ACTIONS or input.previous is None:
            return set()
        carried: set[str] = set()
        namespaces = {a.name: a.namespace for a in self._stage.actions}
        for before in input.previous.state.actions:
            if before.status != ActionStatus.SUCCEEDED or before.action_name not in namespaces:
                continue
            index = next(i for i, a in enumerate(self._state.actions) if a.action_name == before.action_name)
            self._state.actions[index] = before.model_copy(deep=True)
            self._ledger.carry(before, namespaces[before.action_name])
            carried.add(before.action_name)
        # What the kept actions did is still to be undone if the stage is rolled back.
        self._ledger.compensations = [c for c in input.previous.compensations if c.action_name in carried]
        return carried

    # --- queries and approval messages ----------------------------------------------------------

    @workflow.query(name=Query.STATE)
    def state(self) -> StageState:
        return self._state

    @workflow.update(name=Update.APPROVE)
    async def approve(self, decision: ApprovalDecision) -> ApprovalResult:
        return self._decide(decision, ApprovalStatus.APPROVED)

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision)

    @workflow.update(name=Update.REJECT)
    async def reject(self, decision: ApprovalDecision) -> ApprovalResult:
        return self._decide(decision, ApprovalStatus.REJECTED)

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision)

    @workflow.signal(name=Signal.APPROVE)
    def approve_signal(self, decision: ApprovalDecision) -> None:
        self._decide_from_signal(decision, ApprovalStatus.APPROVED)

    @workflow.signal(name=Signal.REJECT)
    def reject_signal(self, decision: ApprovalDecision) -> None:
        self._decide_from_signal(decision, ApprovalStatus.REJECTED)

    @workflow.signal(name=Signal.STOP)
    def stop(self, request: StopRequest) -> None:
        """From the execution: start nothing new; with `abandon`, cancel what runs now."""
        if self._stop is None or (request.abandon and not self._stop.abandon):
            self._stop = request
        if request.abandon:
            self._actions.cancel_running()

    def _check_decision(self, decision: ApprovalDecision) -> None:
        """Refuse (in the update's validator, so nothing is written) what the policy does not allow."""
        try:
            self._approvals.check(decision)
        except ApprovalRefused as refused:
            raise ApplicationError(refused.message) from None

    def _decide(self, decision: ApprovalDecision, status: ApprovalStatus) -> ApprovalResult:
        try:
            return self._record_decision(decision, status)
        except ApprovalRefused as refused:
            raise ApplicationError(refused.message) from None

    def _decide_from_signal(self, decision: ApprovalDecision, status: ApprovalStatus) -> None:
        try:
            self._record_decision(decision, status)
        except ApprovalRefused as refused:
            # A signal cannot be refused to its sender; show the refusal in `status` instead.
            self._approvals.record_refusal(decision, status, refused)
            workflow.logger.warning("approval signal refused: %s", refused)

    def _record_decision(self, decision: ApprovalDecision, status: ApprovalStatus) -> ApprovalResult:
        # Checked again and recorded before any await: two concurrent decisions can never both pass.
        result = self._approvals.decide(decision, status, workflow.now())
        if result.status == ApprovalStatus.PENDING:  # counted towards the quorum
            self._notify(result.action_name, NoticeKind.PROGRESS)
        return result

    # --- the stage ------------------------------------------------------------------------------

    def _action_changed(self, action: Action, state: ActionState) -> None:
        assert state.status is not None
        self._events.add(
            EventScope.ACTION,
            action_event_state(state.status),
            workflow.now(),
            stage=self._stage.name,
            action=action.name,
            action_type=action_type(action),
            summary=state.error.message if state.error and state.status != ActionStatus.SUCCEEDED else None,
        )

    @workflow.run
    async def run(self, input: StageInput) -> StageResult:
        try:
            result = await self._run(input)
        except BaseException as err:
            # A failed stage's result (in the failure's details) carries its last events; without one (cancelled),
            # they leave from here before it ends (not on a bug failing the task: that is replayed).
            carried = isinstance(err, ApplicationError) and err.type == STAGE_FAILED
            if carried:
                await self._events.settle()  # the cancel of the batch in flight goes out before the failure
            elif isinstance(err, FailureError) or is_cancelled_exception(err):
                await self._events.drain(STAGE_DRAIN_TIMEOUT)
            raise
        await self._events.settle()  # the cancel of the batch in flight goes out before the result
        return result

    async def _run(self, input: StageInput) -> StageResult:
        self._state.status = StageStatus.IN_PROGRESS
        self._state.started_at = workflow.now()
        failed = False
        for run_order in sorted({a.run_order for a in self._stage.actions}):
            if self._stop is not None:
                break  # a stop starts nothing new
            group = [a for a in self._stage.actions if a.run_order == run_order and a.name not in self._carried]
            outcomes = await asyncio.gather(*(self._actions.run(a) for a in group))
            if not all(outcomes):
                failed = True
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._slack:  # the message's last update goes out before the stage ends
            await asyncio.gather(*self._slack)
        self._state.finished_at = workflow.now()
        if self._stop is not None:
            self._state.status = StageStatus.STOPPED
            how = "abandoned" if self._stop.abandon else "stopped"
            self._state.error = ErrorDetails(code="Stopped", message=f"{how}: {self._stop.reason or 'no reason given'}")
            return self._result()
        result = self._result()
        if failed:
            self._state.status = StageStatus.FAILED
            first = next(a for a in self._state.actions if a.status == ActionStatus.FAILED)
            assert first.error is not None
            self._state.error = ErrorDetails(
                code=first.error.code, message=f"action '{first.action_name}' failed: {first.error.message}"
            )
            raise ApplicationError(self._state.error.message, result, type=STAGE_FAILED, non_retryable=True)
        self._state.status = StageStatus.SUCCEEDED
        return result

    def _result(self) -> StageResult:
        """Built as the stage ends (no await follows): its actions' events not yet delivered go with it, and the
        execution sends them before the stage's own event, so the stage never waits for a delivery round trip."""
        return StageResult(
            state=self._state,
            output_variables=self._ledger.outputs,
            output_artifacts=self._ledger.produced,
            source_revisions=self._ledger.revisions,
            compensations=self._ledger.compensations,
            undelivered_events=self._events.hand_off(),
        )

    def _notify(self, action_name: str, kind: NoticeKind, outcome: ApprovalOutcome | None = None) -> None:
        """Send the approval's notifications in the background: their failures are retried and logged,
        and never fail the approval wait. Slack messages go out in order (an update needs the post's ts)."""
        base = self._notices.get(action_name)
        if base is None:
            return
        state = action_state(self._state, action_name)
        request = state.approval_request
        assert request is not None
        notice = progress_notice(base, kind, state, outcome)

        async def send(activity: Activity, previous: asyncio.Task[None] | None) -> None:
            if previous is not None:
                await previous
            try:
                if activity == Activity.NOTIFY_SLACK:
                    posted = await workflow.execute_activity(
                        activity,
                        notice.model_copy(update={"slack_message": request.slack_message}),
                        result_type=SlackMessageRef,
                        start_to_close_timeout=timedelta(seconds=30),
                        retry_policy=NOTIFICATION_RETRY,
                    )
                    request.slack_message = posted or request.slack_message
                else:
                    await workflow.execute_activity(
                        activity, notice, start_to_close_timeout=timedelta(seconds=30), retry_policy=NOTIFICATION_RETRY
                    )
            except ActivityError as err:
                state.notification_errors.append(f"{kind}: {getattr(err.cause, 'message', None) or err}")
                workflow.logger.warning("approval notification failed: %s", err.cause)

        for channel in notice_channels(notice):
            if channel == Activity.NOTIFY_SLACK:
                previous = self._slack[-1] if self._slack else None
                self._slack.append(asyncio.create_task(send(channel, previous)))
            else:
                self._notifications.append(asyncio.create_task(send(channel, None)))

    async def _wait_for_approval(
        self, action: Action, state: ActionState, configuration: dict[str, str]
    ) -> ActionOutcome:
        """A Manual action: its approval request opened and announced, then a durable wait for a decision (with
        reminders), the timeout or a stop; called by the `ActionRunner` as the action's attempt."""
        timeout = action_timeout(action, DEFAULT_APPROVAL_TIMEOUT)
        policy = action.conveyor.approval
        # An approval with a policy resolves its approvers (groups, emails, the identity directory) when it opens.
        membership = policy is not None
        if not membership:
            state.token = str(workflow.uuid4())
        state.external_url = configuration.get("ExternalEntityLink")
        request = approval_request(policy, self._input, self._ledger.artifacts, configuration.get("CustomData"))
        request.reviews = [
            *self._input.reviews,
            *(f"{a.action_name}: {a.review}" for a in self._state.actions if a.review),
        ]
        if membership:
            # Who may decide, resolved once; the token exists only then, so no decision predates the snapshot.
            snapshot = await workflow.execute_activity(
                Activity.RESOLVE_APPROVERS,
                ApproverQuery(approvers=request.approvers, excluded=request.excluded),
                result_type=ApproverSnapshot,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=NOTIFICATION_RETRY,
                summary=f"approvers of {self._stage.name}/{action.name}",
            )
            unresolved = apply_snapshot(request, snapshot)
            if unresolved is not None:
                state.approval_request = request
                raise ActionFailed(unresolved.code, unresolved.message)
            state.token = str(workflow.uuid4())
        state.approval_request = request
        deadline = workflow.now() + timeout
        notice = self._approvals.notice(self._input, policy, state, configuration, deadline)
        if notice is not None:
            self._notices[action.name] = notice
            self._notify(action.name, NoticeKind.OPENED)
        reminder = timedelta(minutes=policy.reminder_minutes) if policy and policy.reminder_minutes else None
        decisions = self._approvals.decisions
        while True:
            remaining = deadline - workflow.now()
            try:
                await workflow.wait_condition(
                    lambda: action.name in decisions or self._stop is not None,
                    timeout=min(remaining, reminder) if reminder else remaining,
                )
                break
            except TimeoutError:
                if reminder is None or workflow.now() >= deadline:
                    state.token = None
                    self._notify(action.name, NoticeKind.CLOSED, ApprovalOutcome.TIMED_OUT)
                    failure = timed_out(int(timeout.total_seconds() // 60))
                    raise ActionFailed(failure.code, failure.message) from None
                self._notify(action.name, NoticeKind.REMINDER)
        if action.name not in decisions:  # a stop (wait or abandon) cancels a pending approval
            state.token = None
            self._notify(action.name, NoticeKind.CLOSED, ApprovalOutcome.STOPPED)
            failure = stopped()
            raise ActionFailed(failure.code, failure.message)
        decision = decisions[action.name]
        self._notify(action.name, NoticeKind.CLOSED, ApprovalOutcome(decision.status))
        outcome = outcome_of(decision)
        if isinstance(outcome, ErrorDetails):
            raise ActionFailed(outcome.code, outcome.message)
        return outcome
