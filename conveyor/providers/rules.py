"""THE condition rule registry: one contract per rule type (CodePipeline's ruleTypeId.provider).

A contract says which configuration keys a rule takes, what else validation checks, and how the rule is
evaluated; the evaluators themselves are workflow code (durable timers, local activities), in
workflows/conditions.py's table keyed by these names (tests/test_providers_registry.py checks both match).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from conveyor import alarms, quartz
from conveyor.patterns import pattern_problem
from conveyor.variables import REFERENCE

if TYPE_CHECKING:
    from conveyor.spec.declaration import Rule

# A problem found in a rule: (path below the rule, e.g. "configuration.Cron", message).
RuleProblem = tuple[str, str]
RuleCheck = Callable[["Rule"], list[RuleProblem]]

VARIABLE_CHECK_OPERATORS = ("EQ", "NE", "CONTAINS", "MATCHES")


def _no_problems(rule: Rule) -> list[RuleProblem]:
    return []


@dataclass(frozen=True)
class RuleContract:
    name: str
    required_keys: frozenset[str]
    optional_keys: frozenset[str] = frozenset()
    needs_commands: bool = False
    evaluation: str = ""  # how it is evaluated, for people (docs/providers.md)
    # Pure checks of the declared values (run by `conveyor validate` and inside the execution workflow).
    check: RuleCheck = _no_problems
    # Checks that need this machine (the time-zone database, RE2): not in workflows, where a bad value
    # errors the rule when it runs.
    value_check: RuleCheck = _no_problems

    @property
    def allowed_keys(self) -> frozenset[str]:
        return self.required_keys | self.optional_keys


def _literal(value: str | None) -> bool:
    """A value known at declaration time (a `#{...}` reference is known at run time only)."""
    return value is not None and not REFERENCE.search(value)


def _cron_syntax(rule: Rule) -> list[RuleProblem]:
    if "Cron" not in rule.configuration:
        return []
    try:
        quartz.parse(rule.configuration["Cron"])
    except quartz.CronError as err:
        return [("configuration.Cron", str(err))]
    return []


def _time_zone(rule: Rule) -> list[RuleProblem]:
    zone = rule.configuration.get("TimeZone")
    if zone is None or not _literal(zone):
        return []
    try:
        quartz.time_zone(zone)
    except quartz.TimeZoneError as err:
        return [("configuration.TimeZone", str(err))]
    return []


def _operator(rule: Rule) -> list[RuleProblem]:
    operator = rule.configuration.get("Operator")
    if operator is not None and operator not in VARIABLE_CHECK_OPERATORS:
        return [("configuration.Operator", f"'{operator}': use EQ, NE, CONTAINS or MATCHES")]
    return []


def _pattern(rule: Rule) -> list[RuleProblem]:
    pattern = rule.configuration.get("Value")
    if rule.configuration.get("Operator") != "MATCHES" or pattern is None or not _literal(pattern):
        return []
    problem = pattern_problem(pattern)
    return [("configuration.Value", f"{problem} (MATCHES takes RE2 syntax)")] if problem else []


def _alarm_configuration(rule: Rule) -> list[RuleProblem]:
    problems: list[RuleProblem] = []
    names = rule.configuration.get("AlarmName")
    if _literal(names) and names is not None:
        count = len(alarms.alarm_names(names))
        if count == 0:
            problems.append(("configuration.AlarmName", "names no alarm: give one or more, comma separated"))
        elif count > alarms.MAX_ALARMS:
            problems.append(("configuration.AlarmName", f"names {count} alarms; at most {alarms.MAX_ALARMS}"))
    for key, read in (("AlarmStates", alarms.alarm_states), ("WaitTime", alarms.wait_minutes)):
        value = rule.configuration.get(key)
        if value is not None and _literal(value):
            try:
                read(value)
            except ValueError as err:
                problems.append((f"configuration.{key}", str(err)))
    return problems


DEPLOYMENT_WINDOW = RuleContract(
    name="DeploymentWindow",
    required_keys=frozenset({"Cron"}),
    optional_keys=frozenset({"TimeZone"}),
    evaluation="waits durably (a timer, not a poll) until the Quartz cron window opens in TimeZone (default UTC)",
    check=_cron_syntax,
    value_check=_time_zone,
)
VARIABLE_CHECK = RuleContract(
    name="VariableCheck",
    required_keys=frozenset({"Variable", "Value", "Operator"}),
    evaluation="compares the resolved Variable with Value: EQ, NE, CONTAINS, or MATCHES (RE2, a local activity)",
    check=_operator,
    value_check=_pattern,
)
COMMANDS = RuleContract(
    name="Commands",
    required_keys=frozenset(),
    needs_commands=True,
    evaluation="runs its commands like a Commands action; passes on exit 0",
)
LAMBDA_INVOKE = RuleContract(
    name="LambdaInvoke",
    required_keys=frozenset({"FunctionName"}),
    optional_keys=frozenset({"UserParameters"}),
    evaluation=(
        "invokes FunctionName synchronously (an activity) with a `CodePipeline.job` event carrying UserParameters; "
        'fails on a function error, a JSON `false` answer or `{"status": "FAILED", "message": ...}`, '
        "passes on any other answer"
    ),
)

CLOUDWATCH_ALARM = RuleContract(
    name="CloudWatchAlarm",
    required_keys=frozenset({"AlarmName"}),
    optional_keys=frozenset({"AlarmStates", "WaitTime"}),
    evaluation=(
        "watches AlarmName (one or more, comma separated) for WaitTime minutes (a decimal is accepted): fails as soon "
        "as one is in AlarmStates (default ALARM), passes when the time ends without; a durable timer between "
        "DescribeAlarms checks (every CONVEYOR_ALARM_POLL_SECONDS); a missing alarm errors the rule"
    ),
    check=_alarm_configuration,
)

RULES: Mapping[str, RuleContract] = {
    contract.name: contract
    for contract in (
        DEPLOYMENT_WINDOW,
        VARIABLE_CHECK,
        COMMANDS,
        LAMBDA_INVOKE,
        CLOUDWATCH_ALARM,
    )
}
