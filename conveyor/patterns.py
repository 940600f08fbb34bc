"""Regular expressions of `VariableCheck` rules (operator MATCHES): RE2, one engine for validation and run time.

RE2 runs in linear time, so a hostile pattern cannot stall a worker; `conveyor validate` checks a
pattern's syntax with the same engine that evaluates it, so what passes validation also compiles there.
"""

from __future__ import annotations

from typing import Any

import re2


class PatternError(ValueError):
    """A pattern RE2 cannot compile; `str()` says why, readably."""


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the reason is raised to the caller; RE2 would also print it to stderr
    return options


def compile_pattern(pattern: str) -> Any:
    """The compiled pattern, or PatternError with RE2's reason."""
    try:
        return re2.compile(pattern, _options())
    except re2.error as err:
        reason = err.args[0] if err.args else err
        text = reason.decode("utf-8", errors="replace") if isinstance(reason, bytes) else str(reason)
        raise PatternError(f"invalid regular expression '{pattern}': {text}") from None


def pattern_problem(pattern: str) -> str | None:
    """Why RE2 refuses `pattern`, or None."""
    try:
        compile_pattern(pattern)
    except PatternError as err:
        return str(err)
    return None


def matches(pattern: str, value: str) -> bool:
    """Whether `pattern` is found anywhere in `value` (re.search semantics); PatternError if it does not compile."""
    return compile_pattern(pattern).search(value) is not None
