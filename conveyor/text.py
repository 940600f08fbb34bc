"""Values put into messages: errors, summaries and log events stay readable however long the value is.

Pure (no I/O): activities and workflows use it alike.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

VALUE_LIMIT = 200  # characters of a value (a command, an input) quoted in a message


def shorten(value: str, limit: int = VALUE_LIMIT) -> str:
    """`value` whole when it is short, else its first `limit` characters and how many more there were."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value) - limit} more characters)"


def utc_time(moment: datetime) -> str:
    """A moment as messages show it: `2026-11-20 08:00:00 UTC` (`moment` must carry its time zone)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(start: datetime | None, end: datetime | None) -> str:
    """`12.5s`, `3m07s`, `2h05m`; up to now while `end` is None (reads the clock: not for workflow code)."""
    if start is None:
        return ""
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def window_opening(opens_at: datetime, time_zone: str | None) -> str:
    """When a deployment window opens, in the window's own time zone (and in UTC when that differs)."""
    zone_name = time_zone or "UTC"
    try:
        local = opens_at.astimezone(ZoneInfo(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        return utc_time(opens_at)
    text = f"{local:%Y-%m-%d %H:%M:%S}, {zone_name}"
    return text if zone_name == "UTC" else f"{text} ({utc_time(opens_at)})"
