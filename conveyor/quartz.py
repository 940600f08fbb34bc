"""Quartz-style cron expressions for DeploymentWindow rules: parsing (pure) and window arithmetic.

Supported: 6 or 7 fields `seconds minutes hours day-of-month month day-of-week [year]`; in each
field `*`, a number, a range `a-b`, a step `*/n`, `a/n` or `a-b/n`, and comma-separated lists;
`?` in day-of-month or day-of-week (exactly one of them must be `?`); month names JAN-DEC and day
names SUN-SAT (Quartz numbers days 1=SUN to 7=SAT). Not supported, and refused at validation: `L`,
`W` and `#`, and days of month that no chosen month has (`30 FEB`). The time is inside the window when
every field matches it. Time zones are IANA names read from the machine's time-zone database
(`time_zone`): validation and the worker's window arithmetic use the same function.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SUPPORTED = (
    "6 or 7 fields (seconds minutes hours day-of-month month day-of-week [year]) with *, numbers, a-b ranges, "
    "*/n a/n a-b/n steps, comma lists, ? in day-of-month or day-of-week, JAN-DEC and SUN-SAT"
)
_MONTHS = {m: i for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(), start=1)}
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split(), start=1)}
_BOUNDS = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (1, 7), (1970, 2199)]
_NAMES = ["seconds", "minutes", "hours", "day-of-month", "month", "day-of-week", "year"]
_PART = re.compile(r"^(\*|\d+|\d+-\d+)(/\d+)?$")
_NAME_TOKEN = re.compile("|".join([*_MONTHS, *_DAYS]))
SEARCH_LIMIT = timedelta(days=366 * 5)


# The longest each month can be (February in a leap year).
_MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


class CronError(ValueError):
    pass


class TimeZoneError(ValueError):
    pass


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (e.g. Europe/Paris, UTC), or TimeZoneError saying what to write instead."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimeZoneError(
            f"unknown time zone '{name}': use an IANA time zone name, e.g. 'Europe/Paris', 'America/New_York' or 'UTC'"
        ) from None


@dataclass(frozen=True)
class QuartzCron:
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None  # None: `?`
    months: frozenset[int]
    days_of_week: frozenset[int] | None  # Quartz numbering, 1=SUN; None: `?`
    years: frozenset[int] | None  # None: any

    def matches_day(self, moment: datetime) -> bool:
        if moment.month not in self.months or (self.years is not None and moment.year not in self.years):
            return False
        if self.days_of_month is not None:
            return moment.day in self.days_of_month
        assert self.days_of_week is not None
        return (moment.isoweekday() % 7) + 1 in self.days_of_week

    def matches(self, moment: datetime) -> bool:
        return (
            self.matches_day(moment)
            and moment.hour in self.hours
            and moment.minute in self.minutes
            and moment.second in self.seconds
        )

    def next_opening(self, after: datetime) -> datetime | None:
        """The first matching second at or after `after` (a local, zone-aware time), within 5 years."""
        start = after.replace(microsecond=0)
        minute = start.replace(second=0)
        end = start + SEARCH_LIMIT
        while minute <= end:
            if not self.matches_day(minute):
                minute = (minute + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if minute.hour not in self.hours:
                minute = (minute + timedelta(hours=1)).replace(minute=0)
                continue
            if minute.minute in self.minutes:
                for second in sorted(self.seconds):
                    candidate = minute.replace(second=second)
                    if candidate >= start:
                        return candidate
            minute += timedelta(minutes=1)
        return None


def _value(token: str, index: int) -> int:
    names = _MONTHS if index == 4 else _DAYS if index == 5 else {}
    if token.upper() in names:
        return names[token.upper()]
    if not token.isdigit():
        raise CronError(f"{_NAMES[index]}: '{token}' is not a number{' or a name' if names else ''}")
    return int(token)


def _field(text: str, index: int) -> frozenset[int] | None:
    low, high = _BOUNDS[index]
    if text == "?":
        if index not in (3, 5):
            raise CronError(f"{_NAMES[index]}: '?' is allowed only in day-of-month and day-of-week")
        return None
    values: set[int] = set()
    for part in text.split(","):
        if re.search(r"[LW#]", _NAME_TOKEN.sub("", part.upper())):
            raise CronError(f"{_NAMES[index]}: '{part}' uses L, W or # (not supported); supported: {SUPPORTED}")
        normalised = re.sub(r"[A-Za-z]+", lambda m: str(_value(m.group(0), index)), part)
        match = _PART.match(normalised)
        if match is None:
            raise CronError(f"{_NAMES[index]}: '{part}' is not valid; supported: {SUPPORTED}")
        base, step = match.group(1), int(match.group(2)[1:]) if match.group(2) else 1
        if step < 1:
            raise CronError(f"{_NAMES[index]}: a step must be at least 1")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            first, last = (int(x) for x in base.split("-"))
        else:
            first = int(base)
            last = high if match.group(2) else first
        if not (low <= first <= high and low <= last <= high and first <= last):
            raise CronError(f"{_NAMES[index]}: '{part}' is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def parse(expression: str) -> QuartzCron:
    fields = expression.split()
    if len(fields) not in (6, 7):
        raise CronError(f"'{expression}' has {len(fields)} fields; a Quartz cron has 6 or 7 ({SUPPORTED})")
    parsed = [_field(text, i) for i, text in enumerate(fields)]
    if (parsed[3] is None) == (parsed[5] is None):
        raise CronError("exactly one of day-of-month and day-of-week must be '?'")
    for i in (0, 1, 2, 4):
        if parsed[i] is None:
            raise CronError(f"{_NAMES[i]}: '?' is allowed only in day-of-month and day-of-week")
    days, months = parsed[3], parsed[4]
    assert months is not None
    if days is not None and min(days) > max(_MONTH_DAYS[m] for m in months):
        raise CronError(f"day-of-month '{fields[3]}' never falls in month '{fields[4]}': the window would never open")
    return QuartzCron(
        seconds=parsed[0],  # type: ignore[arg-type]
        minutes=parsed[1],  # type: ignore[arg-type]
        hours=parsed[2],  # type: ignore[arg-type]
        days_of_month=parsed[3],
        months=parsed[4],  # type: ignore[arg-type]
        days_of_week=parsed[5],
        years=parsed[6] if len(parsed) == 7 else None,
    )
