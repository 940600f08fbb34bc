"""Stage conditions (beforeEntry, onSuccess, onFailure) evaluated inside the execution workflow.

A condition fails when any of its rules fails; the caller applies the failing condition's result.
A rule that cannot be evaluated (an unknown time zone, an invalid regular expression, an unresolvable
variable, a rule activity's own error) is Errored, and an Errored condition fails its stage whatever
its result: an erroring check must never skip, or roll back, a stage on its own.
Rules: `DeploymentWindow` waits durably (a timer, not a poll) until the window opens; `VariableCheck`
compares resolved variables (MATCHES runs RE2 in a local activity); `Commands` runs commands like a
Commands action and passes on exit 0. Cron and time-zone arithmetic happen in a local activity given
`workflow.now()`, because zoneinfo does not load in the sandbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from conveyor.alarms import AlarmAnswer, AlarmCheck, alarm_names, alarm_states, wait_minutes
    from conveyor.aws.identity import AwsIdentity, action_identity, session_name
    from conveyor.interface import (
        Activity,
        ConditionKind,
    )
    from conveyor.model import (
        ActionContext,
        ActionOutcome,
        ArtifactRef,
        CommandsInput,
        ConditionState,
        ConditionStatus,
        RegexCheck,
        RuleState,
        WindowAnswer,
        WindowCheck,
    )
    from conveyor.providers.commands import ACTIVITY as COMMANDS_ACTIVITY
    from conveyor.providers.lambda_invoke import LambdaRuleAnswer, LambdaRuleInput
    from conveyor.providers.rules import CLOUDWATCH_ALARM, DEPLOYMENT_WINDOW, LAMBDA_INVOKE, VARIABLE_CHECK
    from conveyor.providers.rules import COMMANDS as COMMANDS_RULE
    from conveyor.spec.declaration import Condition, Rule
    from conveyor.text import shorten
    from conveyor.variables import UnresolvedVariableError, resolve
    from workflows.action import INFRASTRUCTURE_RETRY
    from workflows.failures import failure_reason

LOCAL = timedelta(seconds=30)
# What an Errored condition does, whatever its declared result.
ERRORED_RESULT = "FAIL"


@dataclass(frozen=True)
class RuleOutcome:
    status: ConditionStatus  # Succeeded, Failed, Errored, or Overridden (while it waited)
    summary: str


@dataclass
class ConditionContext:
    pipeline_name: str
    execution_id: str
    stage_name: str
    stage_attempt: int
    values: dict[str, dict[str, str]]
    artifacts: dict[str, ArtifactRef]
    heartbeat_seconds: int
    overridden: Callable[[], bool]  # an operator's `override_condition` for this stage and kind
    changed: Callable[[], None]  # state changed: write it to the memo
    pipeline_role_arn: str | None = None  # the pipeline's roleArn: AWS rules' identity when they declare none


async def evaluate(
    kind: ConditionKind, conditions: list[Condition], ctx: ConditionContext, into: list[ConditionState]
) -> str | None:
    """None when every condition passed (or was overridden); else what follows: the failing
    condition's result, or FAIL for a condition that errored."""
    for condition in conditions:
        state = ConditionState(
            kind=kind,
            result=condition.result,
            started_at=workflow.now(),
            rules=[
                RuleState(rule_name=r.name, provider=r.rule_type_id.provider, status=ConditionStatus.PENDING)
                for r in condition.rules
            ],
        )
        into.append(state)
        ctx.changed()
        verdict = ConditionStatus.SUCCEEDED
        for rule, rule_state in zip(condition.rules, state.rules, strict=True):
            if ctx.overridden():
                break
            rule_state.status, rule_state.started_at = ConditionStatus.IN_PROGRESS, workflow.now()
            ctx.changed()
            outcome = await _rule(rule, rule_state, ctx)
            rule_state.status, rule_state.summary = outcome.status, outcome.summary
            rule_state.finished_at = workflow.now()
            if outcome.status != ConditionStatus.SUCCEEDED:
                verdict = outcome.status
                break
        state.finished_at = workflow.now()
        if ctx.overridden():
            state.status = ConditionStatus.OVERRIDDEN
            for rule_state in state.rules:
                if rule_state.status.is_open:
                    rule_state.status = ConditionStatus.OVERRIDDEN
            ctx.changed()
            return None
        state.status = verdict
        ctx.changed()
        if verdict == ConditionStatus.ERRORED:
            return ERRORED_RESULT
        if verdict == ConditionStatus.FAILED:
            return condition.result or "FAIL"
    return None


async def _rule(rule: Rule, state: RuleState, ctx: ConditionContext) -> RuleOutcome:
    provider = rule.rule_type_id.provider
    try:
        configuration = {key: resolve(value, ctx.values) for key, value in rule.configuration.items()}
        evaluator = EVALUATORS.get(provider)
        if evaluator is not None:
            return await evaluator(rule, configuration, state, ctx)
    except UnresolvedVariableError as err:
        return RuleOutcome(ConditionStatus.ERRORED, str(err))
    except FailureError as err:  # a local activity's own failure arrives as its ApplicationError, unwrapped
        if is_cancelled_exception(err):
            raise
        return RuleOutcome(ConditionStatus.ERRORED, failure_reason(err))
    return RuleOutcome(ConditionStatus.ERRORED, f"rule provider '{provider}' is not supported")


async def _deployment_window(
    rule: Rule, configuration: dict[str, str], state: RuleState, ctx: ConditionContext
) -> RuleOutcome:
    cron, zone = configuration["Cron"], configuration.get("TimeZone", "UTC")
    while True:
        answer: WindowAnswer = await workflow.execute_local_activity(
            Activity.DEPLOYMENT_WINDOW,
            WindowCheck(cron=cron, time_zone=zone, now=workflow.now()),
            result_type=WindowAnswer,
            start_to_close_timeout=LOCAL,
        )
        if answer.inside:
            return RuleOutcome(ConditionStatus.SUCCEEDED, f"inside the window '{cron}' ({zone})")
        if answer.opens_at is None:
            never = f"the window '{cron}' ({zone}) does not open in the next 5 years"
            return RuleOutcome(ConditionStatus.FAILED, never)
        state.summary = f"waiting for the window to open at {answer.opens_at.isoformat()}"
        state.opens_at, state.time_zone = answer.opens_at, zone
        ctx.changed()
        wait = max(answer.opens_at - workflow.now(), timedelta(seconds=1))
        try:
            # A durable timer; an operator's override ends the wait early.
            await workflow.wait_condition(ctx.overridden, timeout=wait)
            return RuleOutcome(ConditionStatus.OVERRIDDEN, "overridden while waiting for the window")
        except TimeoutError:
            continue  # re-check: the window may have closed again, or opened


async def _variable_check(
    rule: Rule, configuration: dict[str, str], state: RuleState, ctx: ConditionContext
) -> RuleOutcome:
    variable, value, operator = configuration["Variable"], configuration["Value"], configuration["Operator"]
    if operator == "EQ":
        passed = variable == value
    elif operator == "NE":
        passed = variable != value
    elif operator == "CONTAINS":
        passed = value in variable
    else:  # MATCHES
        passed = await workflow.execute_local_activity(
            Activity.REGEX_MATCHES,
            RegexCheck(pattern=value, value=variable),
            result_type=bool,
            start_to_close_timeout=LOCAL,
        )
    status = ConditionStatus.SUCCEEDED if passed else ConditionStatus.FAILED
    return RuleOutcome(status, f"'{shorten(variable)}' {operator} '{shorten(value)}': {'true' if passed else 'false'}")


async def _commands(rule: Rule, configuration: dict[str, str], state: RuleState, ctx: ConditionContext) -> RuleOutcome:
    missing = [i.name for i in rule.input_artifacts if i.name not in ctx.artifacts]
    if missing:
        return RuleOutcome(ConditionStatus.ERRORED, f"input artifact '{missing[0]}' is not available")
    timeout = timedelta(minutes=rule.timeout_in_minutes or 55)
    try:
        await workflow.execute_activity(
            COMMANDS_ACTIVITY,
            CommandsInput(
                context=ActionContext(
                    pipeline_name=ctx.pipeline_name,
                    execution_id=ctx.execution_id,
                    stage_name=ctx.stage_name,
                    action_name=f"{rule.name}.rule",
                    stage_attempt=ctx.stage_attempt,
                ),
                commands=[resolve(c, ctx.values) for c in rule.commands or []],
                input_artifacts=[ctx.artifacts[i.name] for i in rule.input_artifacts],
                timeout_seconds=int(timeout.total_seconds()),
            ),
            result_type=ActionOutcome,
            start_to_close_timeout=timeout + timedelta(minutes=1),
            heartbeat_timeout=timedelta(seconds=ctx.heartbeat_seconds),
            retry_policy=INFRASTRUCTURE_RETRY,
        )
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise
        # A non-zero exit is the check's answer; anything else (a timeout, a missing artifact) is an error.
        answered = isinstance(err.cause, ApplicationError) and err.cause.type == "CommandFailed"
        return RuleOutcome(ConditionStatus.FAILED if answered else ConditionStatus.ERRORED, failure_reason(err))
    return RuleOutcome(ConditionStatus.SUCCEEDED, f"{len(rule.commands or [])} commands succeeded")


async def _lambda_invoke(
    rule: Rule, configuration: dict[str, str], state: RuleState, ctx: ConditionContext
) -> RuleOutcome:
    context = ActionContext(
        pipeline_name=ctx.pipeline_name,
        execution_id=ctx.execution_id,
        stage_name=ctx.stage_name,
        action_name=f"{rule.name}.rule",
        stage_attempt=ctx.stage_attempt,
    )
    timeout = timedelta(minutes=rule.timeout_in_minutes or 15)  # Lambda's own limit is 15 minutes
    try:
        answer: LambdaRuleAnswer = await workflow.execute_activity(
            Activity.LAMBDA_INVOKE_RULE,
            LambdaRuleInput(
                context=context,
                identity=action_identity(context, rule.role_arn, ctx.pipeline_role_arn, rule.region),
                function_name=configuration["FunctionName"],
                user_parameters=configuration.get("UserParameters"),
            ),
            result_type=LambdaRuleAnswer,
            start_to_close_timeout=timeout,
            retry_policy=INFRASTRUCTURE_RETRY,
        )
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise
        return RuleOutcome(ConditionStatus.ERRORED, failure_reason(err))  # AWS refused or could not be reached
    return RuleOutcome(ConditionStatus.SUCCEEDED if answer.passed else ConditionStatus.FAILED, answer.summary)


async def _cloudwatch_alarm(
    rule: Rule, configuration: dict[str, str], state: RuleState, ctx: ConditionContext
) -> RuleOutcome:
    """Watches the alarms for WaitTime: a DescribeAlarms activity, then a durable timer until the next look (the
    worker's interval, returned with each answer), ending early when an alarm trips or an operator overrides."""
    names = alarm_names(configuration["AlarmName"])
    try:
        states, minutes = alarm_states(configuration.get("AlarmStates")), wait_minutes(configuration.get("WaitTime"))
    except ValueError as err:
        return RuleOutcome(ConditionStatus.ERRORED, f"configuration: {err}")
    if not names:
        return RuleOutcome(ConditionStatus.ERRORED, "AlarmName names no alarm")
    check = AlarmCheck(
        alarm_names=names,
        states=states,
        identity=AwsIdentity(
            role_arn=rule.role_arn or None,
            pipeline_role_arn=ctx.pipeline_role_arn,
            region=rule.region or None,
            session_name=session_name(ctx.pipeline_name, ctx.execution_id),
        ),
        who=f"{ctx.stage_name}.{rule.name}",
    )
    deadline = workflow.now() + timedelta(minutes=minutes)
    watched = ", ".join(s.value for s in states)
    while True:
        answer: AlarmAnswer = await workflow.execute_activity(
            Activity.CHECK_ALARMS,
            check,
            result_type=AlarmAnswer,
            start_to_close_timeout=LOCAL,
            retry_policy=INFRASTRUCTURE_RETRY,
        )
        if answer.missing:
            return RuleOutcome(
                ConditionStatus.ERRORED, f"alarm {', '.join(repr(n) for n in answer.missing)} does not exist"
            )
        if answer.tripped:
            tripped = ", ".join(f"'{name}' is {value.value}" for name, value in answer.tripped.items())
            return RuleOutcome(ConditionStatus.FAILED, f"alarm {tripped}")
        left = deadline - workflow.now()
        if left <= timedelta(0):
            return RuleOutcome(
                ConditionStatus.SUCCEEDED, f"{len(names)} alarms not in {watched} for {_minutes(minutes)} min"
            )
        state.summary = f"watching {len(names)} alarms, {_minutes(left.total_seconds() / 60)} min left"
        ctx.changed()
        try:
            await workflow.wait_condition(
                ctx.overridden, timeout=min(left, timedelta(seconds=answer.next_check_seconds))
            )
            return RuleOutcome(ConditionStatus.OVERRIDDEN, "overridden while watching the alarms")
        except TimeoutError:
            continue


def _minutes(minutes: float) -> str:
    return f"{minutes:.0f}" if minutes >= 10 else f"{minutes:.1f}".removesuffix(".0")


# How each rule type of the registry (conveyor.providers.rules.RULES) is evaluated, keyed by its name.
Evaluator = Callable[[Rule, dict[str, str], RuleState, ConditionContext], Awaitable[RuleOutcome]]
EVALUATORS: dict[str, Evaluator] = {
    DEPLOYMENT_WINDOW.name: _deployment_window,
    VARIABLE_CHECK.name: _variable_check,
    COMMANDS_RULE.name: _commands,
    LAMBDA_INVOKE.name: _lambda_invoke,
    CLOUDWATCH_ALARM.name: _cloudwatch_alarm,
}
