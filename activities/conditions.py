"""Side effects of stage conditions: time-zone and cron arithmetic, and linear-time regular expressions.

Both run outside the workflow sandbox (zoneinfo does not load inside it) as local activities, given
`workflow.now()` so that the time-skipping server's clock is the one that counts.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from conveyor import quartz
from conveyor.interface import (
    Activity,
)
from conveyor.model import RegexCheck, WindowAnswer, WindowCheck
from conveyor.patterns import PatternError, matches


@activity.defn(name=Activity.DEPLOYMENT_WINDOW)
async def deployment_window(check: WindowCheck) -> WindowAnswer:
    try:
        zone = quartz.time_zone(check.time_zone)
        cron = quartz.parse(check.cron)
    except (quartz.TimeZoneError, quartz.CronError) as err:
        raise ApplicationError(str(err), type="ConfigurationError", non_retryable=True) from None
    local = check.now.astimezone(zone)
    if cron.matches(local):
        return WindowAnswer(inside=True)
    opening = cron.next_opening(local)
    return WindowAnswer(inside=False, opens_at=opening.astimezone(check.now.tzinfo) if opening else None)


@activity.defn(name=Activity.REGEX_MATCHES)
async def regex_matches(check: RegexCheck) -> bool:
    """RE2 runs in linear time: a hostile pattern cannot stall the worker (a timeout could not stop `re`)."""
    try:
        return matches(check.pattern, check.value)
    except PatternError as err:
        raise ApplicationError(str(err), type="ConfigurationError", non_retryable=True) from None
