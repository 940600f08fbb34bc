"""Trigger filters (CodePipeline V2 `triggers[].gitConfiguration`): which Git events start a pipeline.

Pure: the webhook service parses an event into a `GitEvent` and asks `matching_trigger` whether the
pipeline's filters accept it. Glob patterns: `*` and `?` stay within a path segment, `**` crosses
them; a filter's excludes win over its includes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from conveyor.interface import ActionCategory
from conveyor.providers.git_sources import HostedGit, branch_of, detects_changes, webhook_repository
from conveyor.spec.declaration import (
    Action,
    GitConfiguration,
    GitFilter,
    GitPullRequestFilter,
    GitPushFilter,
    Pipeline,
    PipelineTrigger,
)

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
    repository: str | None = None  # owner/repo, as the payload names it


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


def _same_repository(action: Action, event: GitEvent) -> bool:
    """False when both the source and the event name a repository, and not the same one (GitHub's names are
    case-insensitive); a source that names none (Git's RepositoryUrl) takes any delivery to its pipeline."""
    declared = webhook_repository(action.action_type_id.provider, action.configuration)
    return declared is None or event.repository is None or declared.lower() == event.repository.lower()


def _source_action(pipeline: Pipeline, name: str) -> Action | None:
    return next((a for a in pipeline.stages[0].actions if a.name == name), None)


def matching_trigger(pipeline: Pipeline, event: GitEvent) -> PipelineTrigger | None:
    """The first trigger whose filters accept the event, or None: the event starts nothing. A pipeline without
    `triggers` gets CodePipeline's default change detection (`default_trigger`)."""
    triggers = pipeline.triggers
    if not triggers:
        default = default_trigger(pipeline, event)
        triggers = [default] if default else []
    for trigger in triggers:
        git = trigger.git_configuration
        source = _source_action(pipeline, git.source_action_name)
        if source is not None and not _same_repository(source, event):
            continue
        filters = git.push if event.kind == "push" else git.pull_request
        matches = _push_matches if event.kind == "push" else _pull_request_matches
        if any(matches(event, f) for f in filters):  # type: ignore[arg-type]
            return trigger
    return None


# Sources a GitHub delivery can start by default (CodeCommit's changes come as EventBridge events: not received).
WEBHOOK_PROVIDERS = frozenset({"Git", HostedGit.CODESTAR.value, HostedGit.GITHUB.value})


def default_trigger(pipeline: Pipeline, event: GitEvent) -> PipelineTrigger | None:
    """No `triggers`: as CodePipeline does, a push to a Source action's branch starts the pipeline; the first
    source of the delivery's repository that a webhook can start and that has not turned change detection off
    (a CodeStarSourceConnection's `DetectChanges: false`; GitHub version 1's webhook is its own resource, so
    `PollForSourceChanges` does not stop it). Declared triggers replace this, as CodePipeline's do."""
    for action in pipeline.stages[0].actions:
        provider = action.action_type_id.provider
        if action.action_type_id.category != ActionCategory.SOURCE or provider not in WEBHOOK_PROVIDERS:
            continue
        if provider == HostedGit.CODESTAR and not detects_changes(HostedGit.CODESTAR, action.configuration):
            continue
        branch = (
            action.configuration.get("BranchName")
            if provider == "Git"
            else branch_of(HostedGit(provider), action.configuration)
        )
        if not branch or not _same_repository(action, event):
            continue
        return PipelineTrigger(
            provider_type="CodeStarSourceConnection",
            git_configuration=GitConfiguration(
                source_action_name=action.name,
                push=[GitPushFilter.model_validate({"branches": {"includes": [branch]}})],
            ),
        )
    return None
