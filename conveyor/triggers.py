"""Trigger filters (CodePipeline V2 `triggers[].gitConfiguration`): which Git events start a pipeline.

Pure: the webhook service parses an event into a `GitEvent` and asks `matching_trigger` whether the
pipeline's filters accept it. Glob patterns: `*` and `?` stay within a path segment, `**` crosses
them; a filter's excludes win over its includes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from conveyor.spec.declaration import GitFilter, GitPullRequestFilter, GitPushFilter, Pipeline, PipelineTrigger

# GitHub pull_request actions -> CodePipeline's pull request events
PULL_REQUEST_EVENTS = {
    "opened": "OPEN",
    "reopened": "OPEN",
    "synchronize": "UPDATED",
    "edited": "UPDATED",
    "closed": "CLOSED",
}


@dataclass(frozen=True)
class GitEvent:
    kind: str  # "push" | "pull_request"
    commit: str
    branch: str | None = None  # push: the branch pushed to; pull request: its base (target) branch
    tag: str | None = None
    files: frozenset[str] = field(default_factory=frozenset)
    pull_request_event: str | None = None  # OPEN | UPDATED | CLOSED
    summary: str = ""


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if pattern.startswith("/", i):  # `**/` also matches no directory at all
                out = out[:-2] + "(?:.*/)?"
                i += 1
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def glob_match(pattern: str, value: str) -> bool:
    return _compile(pattern).match(value) is not None


def _passes(value: str, criterion: GitFilter) -> bool:
    if any(glob_match(p, value) for p in criterion.excludes):
        return False  # excludes win
    return not criterion.includes or any(glob_match(p, value) for p in criterion.includes)


def _files_pass(files: frozenset[str], criterion: GitFilter | None) -> bool:
    return criterion is None or any(_passes(f, criterion) for f in files)


def _push_matches(event: GitEvent, flt: GitPushFilter) -> bool:
    if flt.tags is not None:
        return event.tag is not None and _passes(event.tag, flt.tags)
    if event.branch is None:
        return False
    if flt.branches is not None and not _passes(event.branch, flt.branches):
        return False
    return _files_pass(event.files, flt.file_paths)


def _pull_request_matches(event: GitEvent, flt: GitPullRequestFilter) -> bool:
    events = flt.events or ["OPEN", "UPDATED"]
    if event.pull_request_event not in events:
        return False
    if flt.branches is not None and (event.branch is None or not _passes(event.branch, flt.branches)):
        return False
    return True


def matching_trigger(pipeline: Pipeline, event: GitEvent) -> PipelineTrigger | None:
    """The first trigger whose filters accept the event, or None: the event starts nothing."""
    for trigger in pipeline.triggers:
        git = trigger.git_configuration
        filters = git.push if event.kind == "push" else git.pull_request
        matches = _push_matches if event.kind == "push" else _pull_request_matches
        if any(matches(event, f) for f in filters):  # type: ignore[arg-type]
            return trigger
    return None
