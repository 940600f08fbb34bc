"""The Git source provider: fetch one revision of a repository and publish it as an artifact.

It clones with the `git` CLI (a local path or any URL git understands), checks out the requested
commit (a source revision override) or the head of the branch (default: the remote's default
branch), and returns CodePipeline's source variables: CommitId, BranchName, CommitMessage,
AuthorDate, AuthorName, AuthorEmail, CommitterDate, RepositoryName, FullRepositoryName.

git sees only PATH, HOME (for the worker's git configuration and credentials), LANG/LC_ALL,
SSH_AUTH_SOCK and the proxy variables, with GIT_TERMINAL_PROMPT=0 so it never waits for a password.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.process import kill_process_group, start_process_group
from activities.workspace import action_workspace
from conveyor.model import ActionContext, ActionOutcome, ArtifactRef, GitSourceInput, SourceRevision
from conveyor.providers.contract import PolledRevision, PollRequest
from conveyor.providers.git import ACTIVITY
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, store_for_outputs
from conveyor.text import shorten

KILL_GRACE_SECONDS = 2.0
GIT_ENV_NAMES = (
    "PATH", "HOME", "LANG", "LC_ALL", "SSH_AUTH_SOCK",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip
# Phrases git uses when the repository, branch or commit does not exist (or is not visible to us).
_NOT_FOUND_MARKERS = (
    "not found",
    "does not exist",
    "did not match",
    "unknown revision",
    "not a git repository",
    "could not read from remote",
    "invalid reference",
    "couldn't find remote ref",
    "not a valid object name",
    "is not a tree",
    "bad object",
)
_LOG_FORMAT = "%x00".join(["%H", "%an", "%ae", "%aI", "%cI", "%B"])


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def first_error_line(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[0] if lines else f"git exited with code {self.returncode}"


def git_environment(worker_env: Mapping[str, str]) -> dict[str, str]:
    env = {name: worker_env[name] for name in GIT_ENV_NAMES if name in worker_env}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def repository_name(repository: str) -> str:
    """`https://host/org/app.git` -> `app`; `/srv/repos/app/` -> `app`."""
    base = repository.rstrip("/").replace(":", "/").rsplit("/", 1)[-1]
    return base.removesuffix(".git") or repository


async def run_git(args: list[str], cwd: Path, env: Mapping[str, str]) -> GitResult:
    """Run git in its own process group, so cancelling the activity also stops ssh/remote helpers."""
    proc = await start_process_group(["git", *args], cwd=cwd, env=env, merge_stderr=False)
    try:
        stdout, stderr = await proc.communicate()
    except asyncio.CancelledError:
        await kill_process_group(proc.pid, KILL_GRACE_SECONDS)
        raise
    return GitResult(proc.returncode or 0, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


@dataclass(frozen=True)
class Credentials:
    """How git authenticates a clone: `-c` options (a credential helper that reads the secret from git's own
    environment, never the secret itself), the environment entries holding it, and the values to scrub from
    anything git prints."""

    options: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "****")
        return text


NO_CREDENTIALS = Credentials()


@dataclass(frozen=True)
class CloneRequest:
    """One source clone: where from, which revision, and what the artifact holds."""

    context: ActionContext
    repository: str  # a local path or a URL git understands (never with a credential in it)
    branch: str | None
    commit: str | None  # a source revision override wins over the branch head
    output_artifact: str | None
    keep_git: bool = False  # the artifact holds the clone with its `.git` (CODEBUILD_CLONE_REF)
    credentials: Credentials = NO_CREDENTIALS


@dataclass(frozen=True)
class Commit:
    """The checked-out commit, as git log reports it."""

    sha: str
    author_name: str
    author_email: str
    author_date: str
    committer_date: str
    message: str

    @property
    def summary(self) -> str:
        return self.message.splitlines()[0] if self.message else self.sha


@dataclass(frozen=True)
class Cloned:
    commit: Commit
    branch: str
    artifacts: list[ArtifactRef]


async def clone_source(settings: Settings, store: ArtifactStore, request: CloneRequest, log: Any) -> Cloned:
    """Clone into a fresh workspace of the action attempt, check out the revision, pack the artifact; the
    workspace is removed whatever happens. Heartbeats while it works."""
    async with action_workspace(settings, request.context) as workspace:
        return await _fetch(store, request, workspace / "repo", log)


async def _fetch(store: ArtifactStore, request: CloneRequest, clone_dir: Path, log: Any) -> Cloned:
    if request.commit and request.commit.startswith("-"):
        raise ApplicationError(
            f"commit {shorten(request.commit)!r} is not a revision", type="SourceNotFound", non_retryable=True
        )
    env = git_environment(os.environ) | dict(request.credentials.env)
    log.info("git.cloning", repository=request.repository, branch=request.branch, commit=request.commit)
    clone = [*request.credentials.options, "clone", "--quiet"]
    if request.branch and not request.commit:
        clone += ["--branch", request.branch, "--single-branch"]
    await _git([*clone, "--", request.repository, str(clone_dir)], clone_dir.parent, env, request, "clone")
    branch = request.branch
    if not branch:
        head = await _git(["symbolic-ref", "--short", "HEAD"], clone_dir, env, request, "find the default branch of")
        branch = head.stdout.strip()
    if request.commit:
        checkout = ["checkout", "--quiet", "--detach", request.commit, "--"]
        await _git(checkout, clone_dir, env, request, f"check out commit {shorten(request.commit)!r} of")
    facts = await _git(["log", "-1", f"--format={_LOG_FORMAT}"], clone_dir, env, request, "read the commit of")
    commit = _parse_commit(facts.stdout)
    return Cloned(commit=commit, branch=branch, artifacts=await _pack(store, request, clone_dir))


async def _pack(store: ArtifactStore, request: CloneRequest, clone_dir: Path) -> list[ArtifactRef]:
    if not request.output_artifact:
        return []
    if not request.keep_git:
        await asyncio.to_thread(shutil.rmtree, clone_dir / ".git")  # the artifact is the work tree only
    try:
        outputs = store_for_outputs(store, request.context.artifact_stores)
        ref = await asyncio.to_thread(outputs.put, request.output_artifact, clone_dir, ["**/*"])
    except ArtifactError as exc:
        raise ApplicationError(str(exc), type="ArtifactError", non_retryable=True) from exc
    return [ref]


class GitProvider:
    """Activities of the Git source provider; one instance per worker."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store

    @activity.defn(name=ACTIVITY)
    async def git_source(self, input: GitSourceInput) -> ActionOutcome:
        ctx = input.context
        log = structlog.get_logger().bind(
            pipeline=ctx.pipeline_name, execution=ctx.execution_id, stage=ctx.stage_name, action=ctx.action_name
        )
        request = CloneRequest(
            context=ctx,
            repository=input.repository,
            branch=input.branch,
            commit=input.commit,
            output_artifact=input.output_artifact,
        )
        cloned = await clone_source(self.settings, self.store, request, log)
        variables = _commit_variables(cloned.commit, input.repository, cloned.branch)
        log.info("git.fetched", commit=cloned.commit.sha)
        return source_outcome(ctx, cloned, variables)


def source_outcome(context: ActionContext, cloned: Cloned, variables: dict[str, str]) -> ActionOutcome:
    """A Git source's outcome: its variables, its artifact, and the commit as the execution's source revision."""
    summary = cloned.commit.summary
    return ActionOutcome(
        output_variables=variables,
        output_artifacts=cloned.artifacts,
        summary=summary,
        source_revision=SourceRevision(
            action_name=context.action_name, revision_id=cloned.commit.sha, revision_summary=summary
        ),
    )


async def _git(args: list[str], cwd: Path, env: Mapping[str, str], request: CloneRequest, what: str) -> GitResult:
    """Run git; a failure becomes SourceNotFound (non-retryable) or a retryable GitError."""
    result = await run_git(args, cwd, env)
    if result.returncode == 0:
        return result
    target = f"{shorten(request.repository)!r}" + (f" (branch {shorten(request.branch)!r})" if request.branch else "")
    line = request.credentials.scrub(result.first_error_line)
    message = f"git could not {what} {target}: {shorten(line, 500)}"
    if any(marker in result.stderr.lower() for marker in _NOT_FOUND_MARKERS):
        raise ApplicationError(message, type="SourceNotFound", non_retryable=True)
    raise ApplicationError(message, type="GitError")  # network or server trouble: worth a retry


def _parse_commit(log_output: str) -> Commit:
    sha, author_name, author_email, author_date, committer_date, message = log_output.split("\x00", 5)
    return Commit(sha.strip(), author_name, author_email, author_date, committer_date, message.strip())


def _commit_variables(commit: Commit, repository: str, branch: str) -> dict[str, str]:
    return {
        "CommitId": commit.sha,
        "BranchName": branch,
        "CommitMessage": commit.message,
        "AuthorDate": commit.author_date,
        "AuthorName": commit.author_name,
        "AuthorEmail": commit.author_email,
        "CommitterDate": commit.committer_date,
        "RepositoryName": repository_name(repository),
        "FullRepositoryName": repository,
    }


async def branch_head(repository: str, branch: str, credentials: Credentials = NO_CREDENTIALS) -> PolledRevision:
    """A branch's head commit, read with `git ls-remote` (what a poll compares with the commits it has seen)."""
    ref = branch if branch == "HEAD" else f"refs/heads/{branch}"
    env = git_environment(os.environ) | dict(credentials.env)
    result = await run_git([*credentials.options, "ls-remote", "--", repository, ref], Path.cwd(), env)
    line = result.stdout.split("\n", 1)[0].split()
    if result.returncode != 0 or not line:
        problem = credentials.scrub(result.first_error_line) if result.stderr.strip() else f"no branch '{branch}'"
        raise ApplicationError(f"cannot read {repository} {branch}: {problem}", type="SourceNotFound")
    return PolledRevision(revision_id=line[0], detail=f"{branch} at {line[0][:12]}")


async def current_revision(settings: Settings, request: PollRequest) -> PolledRevision:
    """The poll: the branch's head commit (an execution starts for a commit never seen)."""
    return await branch_head(request.configuration["RepositoryUrl"], request.configuration.get("BranchName", "HEAD"))


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the Git contract (conveyor.providers.git)."""
    return [GitProvider(settings, store).git_source]
