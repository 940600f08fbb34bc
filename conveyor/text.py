"""Values put into messages: errors, summaries and log events stay readable however long the value is.

Pure (no I/O): activities and workflows use it alike.
"""

from __future__ import annotations

VALUE_LIMIT = 200  # characters of a value (a command, an input) quoted in a message


def shorten(value: str, limit: int = VALUE_LIMIT) -> str:
    """`value` whole when it is short, else its first `limit` characters and how many more there were."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value) - limit} more characters)"
