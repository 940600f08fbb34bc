"""Running one action of a stage: the `ActionRunner` the `PipelineStage` workflow holds.

An action runs as its provider's contract says: the activity the contract names, with the input its pure builder
makes (or, for a Manual approval, the stage's durable wait for a decision); over its waves, one activity per wave;
then its bake. Its compensation is registered before it runs. A failure it may retry (its declared
`conveyor.retry`, the provider's transient errors) is retried after a durable backoff, each attempt kept in its
state. Deterministic: no I/O, no clocks but `workflow.now()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from conveyor.artifact_locations import locations_for_action
    from conveyor.aws.identity import action_identity
    from conveyor.bake import start_bake, wave_action_name, wave_configuration
    from conveyor.model import (
        ActionAttempt,
        ActionContext,
        ActionOutcome,
        ActionState,
        ActionStatus,
        BakeState,
        ErrorDetails,
        StageInput,
        StageState,
        StopRequest,
        WaveState,
    )
    from conveyor.providers.contract import ActionRequest, ProviderActivity, ProviderContract
    from conveyor.providers.registry import PROVIDERS
    from conveyor.spec.declaration import Action, RetryPolicyExtension, Wave
    from workflows.bake import bake
    from workflows.failures import (
        ActionFailed,
        activity_error,
        compensation_artifacts,
        failed_external,
        failed_phases,
        failure_error,
    )
    from workflows.ledger import StageLedger
    from workflows.waves import run_waves

# Infrastructure failures (a dead worker's heartbeat timeout) are retried; an action's own failure
# is raised non-retryable by its activity, so it is not.
INFRASTRUCTURE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10
)

# The stage's durable wait for a Manual action's decision: (action, its state, its resolved configuration).
ApprovalWait = Callable[[Action, ActionState, dict[str, str]], Awaitable[ActionOutcome]]


def transient(action: Action, error: ErrorDetails) -> bool:
    """Whether a declared retry policy retries this failure: its provider's transient errors (configuration
    errors, a missing artifact or output variable, an unresolvable variable fail at once)."""
    contract = PROVIDERS.get(action.action_type_id.provider)
    if contract is None:
        return False
    return error.code in contract.for_category(action.action_type_id.category).retried_failures


def backoff(policy: RetryPolicyExtension, attempt: int) -> timedelta:
    """The durable pause after failed attempt `attempt` (1-based) of a declared retry."""
    seconds = policy.initial_interval_seconds * policy.backoff_coefficient ** (attempt - 1)
    if policy.maximum_interval_seconds is not None:
        seconds = min(seconds, policy.maximum_interval_seconds)
    return timedelta(seconds=seconds)


def action_timeout(action: Action, default: timedelta) -> timedelta:
    """The action's own timeout (`conveyor.timeoutMinutes`, else CodePipeline's `timeoutInMinutes`), else `default`."""
    minutes = action.conveyor.timeout_minutes or action.timeout_in_minutes
    return timedelta(minutes=minutes) if minutes else default


def heartbeat_timeout(action: Action, contract: ProviderContract, default_seconds: int) -> timedelta:
    """The action's declared heartbeat timeout, else its provider's, else the pipeline's."""
    if action.conveyor.heartbeat_timeout_seconds:
        return timedelta(seconds=action.conveyor.heartbeat_timeout_seconds)
    return contract.heartbeat_timeout or timedelta(seconds=default_seconds)


def action_state(state: StageState, name: str) -> ActionState:
    return next(a for a in state.actions if a.action_name == name)


class ActionRunner:
    """Runs the stage's actions, one call of `run` per action; the stage's state, ledger and stop are shared."""

    def __init__(
        self,
        stage_name: str,
        input: StageInput,
        state: StageState,
        ledger: StageLedger,
        stop: Callable[[], StopRequest | None],
        wait_for_approval: ApprovalWait,
        changed: Callable[[Action, ActionState], None] | None = None,
    ) -> None:
        self._changed = changed or (lambda action, state: None)  # told each status change (the stage's events)
        self._stage_name = stage_name
        self._input = input
        self._state = state
        self._ledger = ledger
        self._stop = stop  # the stage's stop request, if one came
        self._wait_for_approval = wait_for_approval
        self._running: dict[str, ActivityHandle[ActionOutcome]] = {}  # by action (or wave) name

    def cancel_running(self) -> None:
        """An abandon: cancel every activity running now (each ends when its processes are gone)."""
        for handle in self._running.values():
            handle.cancel()

    async def run(self, action: Action) -> bool:
        """Run the action to its end, retrying as declared; False when it failed (its state says why). True also
        when a stop abandoned it: the stop decides what happens next, not the action."""
        state = action_state(self._state, action.name)
        state.status = ActionStatus.IN_PROGRESS
        state.started_at = workflow.now()
        self._changed(action, state)
        policy = action.conveyor.retry
        while True:
            # No `finally` here: an evicted workflow's coroutines are closed outside the workflow loop.
            try:
                outcome = await self._dispatch(action, state)
                break
            except (ActionFailed, ActivityError) as failure:
                error = failure.details if isinstance(failure, ActionFailed) else activity_error(failure)
                state.phases = failed_phases(failure)
                state.external_url = failed_external(failure)
                self._ledger.keep_for_compensation(action.name, compensation_artifacts(failure), state)
            stop = self._stop()
            if stop is not None and (stop.abandon or error.code == "ApprovalCancelled"):
                state.status, state.error, state.finished_at = ActionStatus.ABANDONED, error, workflow.now()
                self._changed(action, state)
                return True
            if policy is None or state.attempt >= policy.maximum_attempts or not transient(action, error):
                state.status, state.error, state.finished_at = ActionStatus.FAILED, error, workflow.now()
                self._changed(action, state)
                return False
            # A declared retry: record this attempt (status shows each one), back off durably, go again.
            failed = ActionAttempt(
                attempt=state.attempt, started_at=state.started_at, finished_at=workflow.now(), error=error
            )
            state.attempts.append(failed)
            await workflow.sleep(backoff(policy, state.attempt))
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
        self._ledger.keep_for_compensation(action.name, outcome.compensation_artifacts, state)
        self._ledger.record(action, outcome)
        self._changed(action, state)
        return True

    async def _dispatch(self, action: Action, state: ActionState) -> ActionOutcome:
        """One attempt, as the provider's contract says: its activity (over the waves, if declared) then the bake,
        or (Manual) the stage's wait for a decision."""
        configuration = {key: self._ledger.resolve(value) for key, value in action.configuration.items()}
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
                failure_error,
            )
        outcome = await self._run_activity(action, contract, run, configuration, self._context(action))
        state.bake = None
        if action.conveyor.bake is not None:
            self._ledger.keep_for_compensation(action.name, outcome.compensation_artifacts, state)
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
        overrides = {key: self._ledger.resolve(value) for key, value in declared.configuration.items()}
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
        state = action_state(self._state, action.name)
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
            self._ledger.keep_for_compensation(action.name, compensation_artifacts(failure), state, wave=wave.name)
            raise
        self._ledger.keep_for_compensation(action.name, outcome.compensation_artifacts, state, wave=wave.name)
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
            f"{self._stage_name}.{target.name}",
            state,
            lambda: (stop := self._stop()) is not None and stop.abandon,
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
            timeout=action_timeout(action, contract.default_timeout),
            revision_override=override.revision_value if override else None,
            resolve=self._ledger.resolve,
            artifact=lambda name: self._ledger.artifact(action, name),
            pipeline_role_arn=self._input.pipeline_role_arn,
            revision_type=override.revision_type if override else None,
            codebuild_runner=self._input.codebuild_runner,
            source_revisions=(*self._input.source_revisions_seen, *self._ledger.revisions),
        )
        activity_input = run.build_input(request)
        self._ledger.register_compensation(contract, request, activity_input, owner or action.name, wave)
        heartbeat = heartbeat_timeout(action, contract, self._input.default_heartbeat_seconds)
        return await self._start(action, run, activity_input, request.timeout, heartbeat)

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
            summary=f"{self._stage_name}/{action.name}",
        )
        self._running[action.name] = handle
        try:
            outcome: ActionOutcome = await handle
            return outcome
        finally:
            self._running.pop(action.name, None)

    def _context(self, action: Action) -> ActionContext:
        return ActionContext(
            pipeline_name=self._input.pipeline_name,
            execution_id=self._input.execution_id,
            stage_name=self._stage_name,
            action_name=action.name,
            stage_attempt=self._input.attempt,
            action_attempt=action_state(self._state, action.name).attempt,
            artifact_stores=locations_for_action(self._input.artifact_stores, action.region),
        )
