"""The `PipelineStage` workflow: one stage attempt of an execution.

Runs the stage's runOrder groups in ascending order, the actions of a group in parallel, each as an
activity (or, for a Manual approval, as a durable wait answered by the `approve` / `reject`
updates or signals). A failed action lets its group finish and starts no later group.
Deterministic: no I/O, no clocks but `workflow.now()`, no randomness but `workflow.uuid4()`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, is_cancelled_exception
from temporalio.exceptions import TimeoutError as ActivityTimeoutError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from conveyor.artifact_locations import locations_for_action
    from conveyor.aws.identity import action_identity
    from conveyor.bake import start_bake, wave_action_name, wave_configuration
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
        COMPENSATION_ARTIFACTS_DETAIL,
        EXTERNAL_DETAIL,
        PHASES_DETAIL,
        ActionAttempt,
        ActionContext,
        ActionOutcome,
        ActionState,
        ActionStatus,
        ApprovalDecision,
        ApprovalNotice,
        ApprovalResult,
        ApproverQuery,
        ApproverSnapshot,
        ArtifactRef,
        BakeState,
        BuildPhase,
        CompensationStep,
        ErrorDetails,
        SlackMessageRef,
        SourceRevision,
        StageInput,
        StageResult,
        StageState,
        StageStatus,
        StopRequest,
        WaveState,
    )
    from conveyor.providers.contract import ActionRequest, ProviderActivity, ProviderContract
    from conveyor.providers.manual import MANUAL
    from conveyor.providers.registry import PROVIDERS
    from conveyor.spec.declaration import Action, RetryPolicyExtension, Stage, Wave
    from conveyor.variables import UnresolvedVariableError, resolve
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
    from workflows.bake import bake
    from workflows.waves import run_waves

DEFAULT_APPROVAL_TIMEOUT = MANUAL.default_timeout
# Infrastructure failures (a dead worker's heartbeat timeout) are retried; an action's own failure
# is raised non-retryable by its activity, so it is not.
NOTIFICATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=5
)
INFRASTRUCTURE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10
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


def _transient(action: Action, error: ErrorDetails) -> bool:
    """Whether a declared retry policy retries this failure: its provider's transient errors (configuration
    errors, a missing artifact or output variable, an unresolvable variable fail at once)."""
    contract = PROVIDERS.get(action.action_type_id.provider)
    if contract is None:
        return False
    return error.code in contract.for_category(action.action_type_id.category).retried_failures


def _backoff(policy: RetryPolicyExtension, attempt: int) -> timedelta:
    seconds = policy.initial_interval_seconds * policy.backoff_coefficient ** (attempt - 1)
    if policy.maximum_interval_seconds is not None:
        seconds = min(seconds, policy.maximum_interval_seconds)
    return timedelta(seconds=seconds)


class ActionFailed(Exception):
    """An action ended unsuccessfully; carries what `status` shows."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.details = ErrorDetails(code=code, message=message)


@workflow.defn(name=WorkflowType.STAGE.value)
class StageWorkflow:
    @workflow.init
    def __init__(self, input: StageInput) -> None:
        # Built in init, so update validators can read it before `run` starts.
        self._stage = Stage.model_validate(input.stage)
        self._input = input
        self._state = initial_stage_state(self._stage, attempt=input.attempt)
        self._values: dict[str, dict[str, str]] = {ns: dict(v) for ns, v in input.variables.items()}
        self._artifacts: dict[str, ArtifactRef] = {ref.name: ref for ref in input.artifacts}
        self._outputs: dict[str, dict[str, str]] = {}
        self._produced: list[ArtifactRef] = []
        self._revisions: list[SourceRevision] = []
        self._approvals = ApprovalBook(self._stage.name, self._state.actions)
        self._stop: StopRequest | None = None
        self._notifications: list[asyncio.Task[None]] = []
        self._slack: list[asyncio.Task[None]] = []  # Slack posts and updates, each after the one before
        self._notices: dict[str, ApprovalNotice] = {}
        self._running: dict[str, ActivityHandle[ActionOutcome]] = {}
        self._compensations: list[CompensationStep] = []
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
            namespace = namespaces[before.action_name]
            if namespace:
                self._values[namespace] = before.output_variables
                self._outputs[namespace] = before.output_variables
            for ref in before.output_artifacts:
                self._artifacts[ref.name] = ref
                self._produced.append(ref)
            carried.add(before.action_name)
        # What the kept actions did is still to be undone if the stage is rolled back.
        self._compensations = [c for c in input.previous.compensations if c.action_name in carried]
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
            for handle in self._running.values():
                handle.cancel()

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

    @workflow.run
    async def run(self, input: StageInput) -> StageResult:
        self._state.status = StageStatus.IN_PROGRESS
        self._state.started_at = workflow.now()
        failed = False
        for run_order in sorted({a.run_order for a in self._stage.actions}):
            if self._stop is not None:
                break  # a stop starts nothing new
            group = [a for a in self._stage.actions if a.run_order == run_order and a.name not in self._carried]
            outcomes = await asyncio.gather(*(self._run_action(a) for a in group))
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
            raise ApplicationError(self._state.error.message, result, type="StageFailed", non_retryable=True)
        self._state.status = StageStatus.SUCCEEDED
        return result

    def _result(self) -> StageResult:
        return StageResult(
            state=self._state,
            output_variables=self._outputs,
            output_artifacts=self._produced,
            source_revisions=self._revisions,
            compensations=self._compensations,
        )

    def _notify(self, action_name: str, kind: NoticeKind, outcome: ApprovalOutcome | None = None) -> None:
        """Send the approval's notifications in the background: their failures are retried and logged,
        and never fail the approval wait. Slack messages go out in order (an update needs the post's ts)."""
        base = self._notices.get(action_name)
        if base is None:
            return
        state = self._action_state(action_name)
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

    def _action_state(self, name: str) -> ActionState:
        return next(a for a in self._state.actions if a.action_name == name)

    async def _run_action(self, action: Action) -> bool:
        state = self._action_state(action.name)
        state.status = ActionStatus.IN_PROGRESS
        state.started_at = workflow.now()
        policy = action.conveyor.retry
        while True:
            # No `finally` here: an evicted workflow's coroutines are closed outside the workflow loop.
            try:
                outcome = await self._dispatch(action, state)
                break
            except (ActionFailed, ActivityError) as failure:
                error = failure.details if isinstance(failure, ActionFailed) else _activity_error(failure)
                state.phases = _failed_phases(failure)
                state.external_url = _failed_external(failure)
                self._keep_for_compensation(action.name, _compensation_artifacts(failure), state)
            if self._stop is not None and (self._stop.abandon or error.code == "ApprovalCancelled"):
                state.status, state.error, state.finished_at = ActionStatus.ABANDONED, error, workflow.now()
                return True  # not a failure of the stage: the stop decides what happens next
            if policy is None or state.attempt >= policy.maximum_attempts or not _transient(action, error):
                state.status, state.error, state.finished_at = ActionStatus.FAILED, error, workflow.now()
                return False
            # A declared retry: record this attempt (status shows each one), back off durably, go again.
            failed = ActionAttempt(
                attempt=state.attempt, started_at=state.started_at, finished_at=workflow.now(), error=error
            )
            state.attempts.append(failed)
            await workflow.sleep(_backoff(policy, state.attempt))
            state.attempt += 1
            state.started_at = workflow.now()
        state.finished_at = workflow.now()
        state.status = ActionStatus.SUCCEEDED
        state.summary = outcome.summary
        state.external_url = outcome.external_url
        state.output_variables = outcome.output_variables
        state.output_artifacts = outcome.output_artifacts
        state.phases = outcome.phases
        state.review = outcome.review
        self._keep_for_compensation(action.name, outcome.compensation_artifacts, state)
        if action.namespace:
            self._values[action.namespace] = outcome.output_variables
            self._outputs[action.namespace] = outcome.output_variables
        for ref in outcome.output_artifacts:
            self._artifacts[ref.name] = ref
            self._produced.append(ref)
        if outcome.source_revision is not None:
            self._revisions.append(outcome.source_revision)
        return True

    def _resolve(self, text: str) -> str:
        try:
            return resolve(text, self._values)
        except UnresolvedVariableError as err:
            raise ActionFailed("VariableError", str(err)) from None

    def _context(self, action: Action) -> ActionContext:
        return ActionContext(
            pipeline_name=self._input.pipeline_name,
            execution_id=self._input.execution_id,
            stage_name=self._stage.name,
            action_name=action.name,
            stage_attempt=self._input.attempt,
            action_attempt=self._action_state(action.name).attempt,
            artifact_stores=locations_for_action(self._input.artifact_stores, action.region),
        )

    def _timeout(self, action: Action, default: timedelta) -> timedelta:
        minutes = action.conveyor.timeout_minutes or action.timeout_in_minutes
        return timedelta(minutes=minutes) if minutes else default

    async def _dispatch(self, action: Action, state: ActionState) -> ActionOutcome:
        """Run the action as its provider's contract says: its activity, or (Manual) a wait for a decision."""
        configuration = {key: self._resolve(value) for key, value in action.configuration.items()}
        state.resolved_configuration = configuration
        provider = action.action_type_id.provider
        registered = PROVIDERS.get(provider)
        if registered is None:  # validation refuses unknown providers; this guards a hand-made input
            raise ActionFailed("ConfigurationError", f"provider '{provider}' is not supported")
        contract = registered.for_category(action.action_type_id.category)
        run = contract.activity
        if run is None:  # a durable wait for a decision, not an activity
            return await self._wait_for_approval(action, state, configuration)
        if action.conveyor.waves:
            return await run_waves(
                action,
                state,
                lambda declared, wave: self._run_wave(action, contract, run, configuration, declared, wave),
                _failure_error,
            )
        outcome = await self._run_activity(action, contract, run, configuration, self._context(action))
        state.bake = None
        if action.conveyor.bake is not None:
            self._keep_for_compensation(action.name, outcome.compensation_artifacts, state)
            outcome.compensation_artifacts = []  # kept already: a failed bake still compensates them
            state.bake = start_bake(action.conveyor.bake.minutes, action.conveyor.bake.alarms, workflow.now())
            await self._bake(action, action, state.bake)
        return outcome

    async def _run_wave(
        self,
        action: Action,
        contract: ProviderContract,
        run: ProviderActivity,
        configuration: dict[str, str],
        declared: Wave,
        wave: WaveState,
    ) -> ActionOutcome:
        """One wave: the action with the wave's target and configuration, under its own name (its logs, its
        idempotency key, its compensation step), then its bake."""
        overrides = {key: self._resolve(value) for key, value in declared.configuration.items()}
        targeted = action.model_copy(
            update={
                "name": wave_action_name(action.name, wave.name),
                "region": wave.region,
                "role_arn": wave.role_arn,
                "configuration": wave_configuration(action.configuration, declared.configuration),
            }
        )
        context = self._context(action).model_copy(
            update={
                "action_name": targeted.name,
                "artifact_stores": locations_for_action(self._input.artifact_stores, wave.region),
            }
        )
        state = self._action_state(action.name)
        try:
            outcome = await self._run_activity(
                targeted,
                contract,
                run,
                wave_configuration(configuration, overrides),
                context,
                wave=wave.name,
                owner=action.name,
            )
        except ActivityError as failure:
            self._keep_for_compensation(action.name, _compensation_artifacts(failure), state, wave=wave.name)
            raise
        self._keep_for_compensation(action.name, outcome.compensation_artifacts, state, wave=wave.name)
        outcome.compensation_artifacts = []
        if action.conveyor.bake is not None:
            wave.bake = start_bake(action.conveyor.bake.minutes, action.conveyor.bake.alarms, workflow.now())
            await self._bake(action, targeted, wave.bake)
        return outcome

    async def _bake(self, action: Action, target: Action, state: BakeState) -> None:
        """Watch the declared alarms as the target (the action, or one wave of it: its role and region) until the
        bake ends; an alarm in a watched state fails the action."""
        declared = action.conveyor.bake
        assert declared is not None
        context = self._context(action)
        identity = action_identity(context, target.role_arn, self._input.pipeline_role_arn, target.region)
        failure = await bake(
            declared,
            identity,
            f"{self._stage.name}.{target.name}",
            state,
            lambda: self._stop is not None and self._stop.abandon,
        )
        if failure is not None:
            raise ActionFailed(failure.code, failure.message)

    async def _run_activity(
        self,
        action: Action,
        contract: ProviderContract,
        run: ProviderActivity,
        configuration: dict[str, str],
        context: ActionContext,
        wave: str | None = None,
        owner: str | None = None,
    ) -> ActionOutcome:
        """The action's activity (a wave's: `owner` is the stage's action, `wave` the wave's name)."""
        override = next((r for r in self._input.source_revisions if r.action_name == action.name), None)
        request = ActionRequest(
            action=action,
            context=context,
            configuration=configuration,
            timeout=self._timeout(action, contract.default_timeout),
            revision_override=override.revision_value if override else None,
            resolve=self._resolve,
            artifact=lambda name: self._artifact(action, name),
            pipeline_role_arn=self._input.pipeline_role_arn,
            revision_type=override.revision_type if override else None,
            codebuild_runner=self._input.codebuild_runner,
            source_revisions=(*self._input.source_revisions_seen, *self._revisions),
        )
        activity_input = run.build_input(request)
        self._register_compensation(contract, request, activity_input, owner or action.name, wave)
        return await self._start(action, run, activity_input, request.timeout, self._heartbeat(action, contract))

    def _heartbeat(self, action: Action, contract: ProviderContract) -> timedelta:
        if action.conveyor.heartbeat_timeout_seconds:
            return timedelta(seconds=action.conveyor.heartbeat_timeout_seconds)
        return contract.heartbeat_timeout or timedelta(seconds=self._input.default_heartbeat_seconds)

    def _register_compensation(
        self,
        contract: ProviderContract,
        request: ActionRequest,
        activity_input: BaseModel,
        owner: str,
        wave: str | None,
    ) -> None:
        """Registered before the action (or each of its waves) runs: a half-applied action is undone too."""
        compensation = contract.compensation
        action_name = owner
        if compensation is None or (action_name, wave) in {(c.action_name, c.wave) for c in self._compensations}:
            return
        step = compensation.register(request, activity_input, len(self._compensations) + 1)
        if step is not None:
            step.action_name, step.wave = action_name, wave  # the stage's action, whose state shows the undo
            self._compensations.append(step)

    def _keep_for_compensation(
        self, action_name: str, refs: list[ArtifactRef], state: ActionState, wave: str | None = None
    ) -> None:
        """What the action saved for its compensation (a stack's previous template), whether it succeeded or failed,
        joins its registered step (the first attempt's first: the state before the action changed anything) and its
        state (garbage collection keeps it)."""
        step = next((c for c in self._compensations if c.action_name == action_name and c.wave == wave), None)
        kept = {ref.digest for ref in state.compensation_artifacts}
        refs = [ref for ref in refs if ref.digest not in kept]
        if step is not None and refs:
            step.input_artifacts = [*step.input_artifacts, *refs]
            state.compensation_artifacts = [*state.compensation_artifacts, *refs]

    async def _start(
        self, action: Action, run: ProviderActivity, activity_input: BaseModel, timeout: timedelta, heartbeat: timedelta
    ) -> ActionOutcome:
        handle = workflow.start_activity(
            run.name,
            activity_input,
            result_type=ActionOutcome,
            start_to_close_timeout=timeout + run.timeout_margin,
            heartbeat_timeout=heartbeat,
            retry_policy=INFRASTRUCTURE_RETRY,
            # An abandoned action is over only when its processes are gone.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{self._stage.name}/{action.name}",
        )
        self._running[action.name] = handle
        try:
            outcome: ActionOutcome = await handle
            return outcome
        finally:
            self._running.pop(action.name, None)

    def _artifact(self, action: Action, name: str) -> ArtifactRef:
        ref = self._artifacts.get(name)
        if ref is None:
            raise ActionFailed("ArtifactError", f"input artifact '{name}' of action '{action.name}' is not available")
        return ref

    async def _wait_for_approval(
        self, action: Action, state: ActionState, configuration: dict[str, str]
    ) -> ActionOutcome:
        timeout = self._timeout(action, DEFAULT_APPROVAL_TIMEOUT)
        policy = action.conveyor.approval
        # An approval with a policy resolves its approvers (groups, emails, the identity directory) when it opens.
        membership = policy is not None
        if not membership:
            state.token = str(workflow.uuid4())
        state.external_url = configuration.get("ExternalEntityLink")
        request = approval_request(policy, self._input, self._artifacts, configuration.get("CustomData"))
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


def failure_details(err: BaseException) -> ErrorDetails:
    """The innermost cause of a received failure (an activity's or a child's own error, not the
    "activity task failed" wrapped around it): its type and message."""
    innermost: BaseException = err
    while isinstance(innermost, FailureError) and innermost.cause is not None:
        innermost = innermost.cause
    code = getattr(innermost, "type", None) if isinstance(innermost, ApplicationError) else None
    message = getattr(innermost, "message", None) or str(innermost) or type(innermost).__name__
    return ErrorDetails(code=code or type(innermost).__name__, message=message)


def failure_reason(err: BaseException) -> str:
    return failure_details(err).message


def _failure_detail(err: BaseException, key: str) -> object:
    """What a failed activity put under `key` in its ApplicationError's details (a dict), if anything."""
    cause = err.cause if isinstance(err, ActivityError) else None
    if not isinstance(cause, ApplicationError):
        return None
    for detail in cause.details:
        if isinstance(detail, dict) and key in detail:
            return detail[key]
    return None


def _failed_phases(err: BaseException) -> list[BuildPhase]:
    """A failed build's phases, which its runner put in the failure's details."""
    found = _failure_detail(err, PHASES_DETAIL)
    try:
        return [BuildPhase.model_validate(item) for item in found] if isinstance(found, list) else []
    except ValidationError:
        return []


def _failed_external(err: BaseException) -> str | None:
    """A failed action's external link or execution id, which its activity put in the failure's details."""
    found = _failure_detail(err, EXTERNAL_DETAIL)
    return found if isinstance(found, str) else None


def _compensation_artifacts(err: BaseException) -> list[ArtifactRef]:
    """What a failed action kept for its compensation (a stack as it was), which it put in the failure's details."""
    found = _failure_detail(err, COMPENSATION_ARTIFACTS_DETAIL)
    try:
        return [ArtifactRef.model_validate(item) for item in found] if isinstance(found, list) else []
    except ValidationError:
        return []


def _failure_error(err: Exception) -> ErrorDetails:
    """What status shows of an action's (or a wave's) failure."""
    if isinstance(err, ActionFailed):
        return err.details
    if isinstance(err, ActivityError):
        return _activity_error(err)
    return ErrorDetails(code="ActionError", message=str(err))


def _activity_error(err: ActivityError) -> ErrorDetails:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return ErrorDetails(code=cause.type or "ActionError", message=cause.message)
    if isinstance(cause, ActivityTimeoutError):
        return ErrorDetails(
            code="ActionTimeout", message=f"activity timed out ({cause.type.name if cause.type else ''})"
        )
    if is_cancelled_exception(err):
        return ErrorDetails(code="ActionCancelled", message="the action was cancelled")
    return ErrorDetails(code="ActionError", message=str(cause or err))
