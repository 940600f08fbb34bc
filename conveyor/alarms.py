"""The CloudWatchAlarm condition rule's pure parts: its configuration read into values, and the check an activity
makes (DescribeAlarms) with its answer. Reusable wherever alarms are watched (a bake time watches the same way)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from conveyor.aws.identity import AwsIdentity
from conveyor.model import CamelModel

DEFAULT_STATES = ("ALARM",)
MAX_ALARMS = 100  # DescribeAlarms takes at most 100 names


class AlarmState(StrEnum):
    OK = "OK"
    ALARM = "ALARM"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


class AlarmCheck(CamelModel):
    """One look at the alarms: which are in one of `states`, which do not exist."""

    alarm_names: list[str]
    states: list[AlarmState]
    identity: AwsIdentity  # the rule's role and region; never credentials
    who: str  # the pipeline, stage and rule the check is for (errors and logs)


class AlarmAnswer(CamelModel):
    tripped: dict[str, AlarmState] = Field(default_factory=dict)  # alarm -> its state, for those in `states`
    missing: list[str] = Field(default_factory=list)
    next_check_seconds: float  # the worker's CONVEYOR_ALARM_POLL_SECONDS: when the watcher looks again


def alarm_names(value: str) -> list[str]:
    """`AlarmName`: one or more names, comma separated (as CodePipeline takes them)."""
    return [name.strip() for name in value.split(",") if name.strip()]


def alarm_states(value: str | None) -> list[AlarmState]:
    """`AlarmStates` (comma separated, default ALARM); raises ValueError naming a state that is not one."""
    names = [s.strip().upper() for s in (value or ",".join(DEFAULT_STATES)).split(",") if s.strip()]
    known = {state.value for state in AlarmState}
    for name in names:
        if name not in known:
            raise ValueError(f"'{name}' is not an alarm state; use OK, ALARM or INSUFFICIENT_DATA")
    return [AlarmState(name) for name in names] or [AlarmState.ALARM]


def wait_minutes(value: str | None) -> float:
    """`WaitTime` in minutes: a whole number as CodePipeline takes it, or a decimal (Conveyor: `0.1` is 6 s); none:
    0, one look at the alarms."""
    if value is None or not value.strip():
        return 0.0
    try:
        minutes = float(value)
    except ValueError:
        raise ValueError(f"'{value}' is not a number of minutes") from None
    if not minutes > 0 or minutes > 60 * 24 * 7:
        raise ValueError(f"'{value}': give more than 0 and at most 10080 minutes (a week)")
    return minutes
