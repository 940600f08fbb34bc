"""GitHub webhooks: signature verification and the parts of push / pull_request payloads we use."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from conveyor.triggers import PULL_REQUEST_EVENTS, GitEvent


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Commit(_Lenient):
    added: list[str] = Field(default_factory=list)
    modified: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    message: str = ""


class Sender(_Lenient):
    login: str = "unknown"


class Repository(_Lenient):
    full_name: str | None = None  # owner/repo


class PushPayload(_Lenient):
    repository: Repository | None = None
    ref: str
    after: str
    deleted: bool = False
    commits: list[Commit] = Field(default_factory=list)
    head_commit: Commit | None = None
    sender: Sender = Field(default_factory=Sender)


class Branch(_Lenient):
    ref: str
    sha: str = ""


class PullRequest(_Lenient):
    number: int
    title: str = ""
    head: Branch
    base: Branch


class PullRequestPayload(_Lenient):
    repository: Repository | None = None
    action: str
    pull_request: PullRequest
    sender: Sender = Field(default_factory=Sender)


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`, compared in constant time."""
    if not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def push_event(payload: PushPayload) -> GitEvent | None:
    if payload.deleted:
        return None  # a deleted branch or tag builds nothing
    branch = payload.ref.removeprefix("refs/heads/") if payload.ref.startswith("refs/heads/") else None
    tag = payload.ref.removeprefix("refs/tags/") if payload.ref.startswith("refs/tags/") else None
    files = {f for c in payload.commits for f in (*c.added, *c.modified, *c.removed)}
    message = (payload.head_commit.message if payload.head_commit else "").splitlines()
    return GitEvent(
        kind="push",
        commit=payload.after,
        branch=branch,
        tag=tag,
        files=frozenset(files),
        summary=message[0] if message else "",
        repository=payload.repository.full_name if payload.repository else None,
    )


def pull_request_event(payload: PullRequestPayload) -> GitEvent | None:
    event = PULL_REQUEST_EVENTS.get(payload.action)
    if event is None:
        return None
    pr = payload.pull_request
    return GitEvent(
        kind="pull_request",
        commit=pr.head.sha,
        branch=pr.base.ref,
        pull_request_event=event,
        summary=f"#{pr.number} {pr.title}",
        repository=payload.repository.full_name if payload.repository else None,
    )


class WebhookSecrets:
    """Per pipeline `CONVEYOR_WEBHOOK_SECRET_<PIPELINE>` (name upper-cased, other characters as `_`),
    else the global `CONVEYOR_WEBHOOK_SECRET`. No secret: every delivery is refused (fail closed)."""

    def __init__(self, environ: Mapping[str, str] | None = None, names: Mapping[str, str] | None = None) -> None:
        self._environ = dict(os.environ if environ is None else environ)
        self._names = dict(names or {})  # pipeline -> variable, from `serve --config`

    @staticmethod
    def variable_for(pipeline: str) -> str:
        return "CONVEYOR_WEBHOOK_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", pipeline).upper()

    def variable_for_pipeline(self, pipeline: str) -> str:
        return self._names.get(pipeline) or self.variable_for(pipeline)

    def for_pipeline(self, pipeline: str) -> str | None:
        return self._environ.get(self.variable_for_pipeline(pipeline)) or self._environ.get("CONVEYOR_WEBHOOK_SECRET")
