"""`#{namespace.key}` variable references: finding and resolving them.

Pure functions: the execution and stage workflows resolve references deterministically from values
already in their state, and validation uses the same parser, so both agree on what a reference is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REFERENCE = re.compile(r"#\{([A-Za-z0-9@\-_]+)\.([A-Za-z0-9@\-_]+)\}")

PIPELINE_VARIABLES = "variables"
RESERVED = "codepipeline"
RESERVED_KEYS = ("PipelineExecutionId", "PipelineName")


class UnresolvedVariableError(ValueError):
    def __init__(self, reference: str) -> None:
        super().__init__(f"variable reference '{reference}' has no value")
        self.reference = reference


def references(text: str) -> list[tuple[str, str]]:
    """Every (namespace, key) referenced in `text`, in order."""
    return REFERENCE.findall(text)


def malformed_references(text: str) -> list[str]:
    """Every `#{` that does not start a complete `#{namespace.key}` reference (unclosed, no dot, bad
    characters), as the fragment a person would recognise (up to the next `}` or 40 characters)."""
    starts = {match.start() for match in REFERENCE.finditer(text)}
    bad = []
    for at in (i for i in range(len(text)) if text.startswith("#{", i)):
        if at not in starts:
            end = text.find("}", at)
            fragment = text[at : end + 1] if 0 <= end < at + 40 else text[at : at + 40]
            bad.append(fragment)
    return bad


def namespaces_used(texts: Iterable[str]) -> set[str]:
    return {ns for text in texts for ns, _ in references(text)}


def resolve(text: str, values: Mapping[str, Mapping[str, str]]) -> str:
    """Replace every reference with its value; a reference without a value is an error."""

    def substitute(match: re.Match[str]) -> str:
        namespace, key = match.group(1), match.group(2)
        try:
            return values[namespace][key]
        except KeyError:
            raise UnresolvedVariableError(match.group(0)) from None

    return REFERENCE.sub(substitute, text)
