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
import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.process import kill_process_group, start_process_group
from activities.providers.commands import workspace_key
from conveyor.model import ActionOutcome, ArtifactRef, GitSourceInput, SourceRevision
from conveyor.providers.contract import PolledRevision, PollRequest
from conveyor.providers.git import ACTIVITY
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, store_for_outputs
from conveyor.text import shorten

HEARTBEAT_SECONDS = 2.0
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
        workspace = self.settings.workspaces_dir / workspace_key(ctx) / f"attempt-{activity.info().attempt}"
        beat = asyncio.create_task(_heartbeat_forever())
        try:
            await asyncio.to_thread(_fresh_dir, workspace)
            outcome = await self._fetch(input, workspace / "repo", log)
        finally:
            beat.cancel()
            await asyncio.to_thread(_remove_workspace, workspace)
        log.info("git.fetched", commit=outcome.output_variables["CommitId"])
        return outcome

    async def _fetch(self, input: GitSourceInput, clone_dir: Path, log: Any) -> ActionOutcome:
        if input.commit and input.commit.startswith("-"):
            raise ApplicationError(
                f"commit {shorten(input.commit)!r} is not a revision", type="SourceNotFound", non_retryable=True
            )
        env = git_environment(os.environ)
        log.info("git.cloning", repository=input.repository, branch=input.branch, commit=input.commit)
        clone = ["clone", "--quiet"]
        if input.branch and not input.commit:
            clone += ["--branch", input.branch, "--single-branch"]
        await _git([*clone, "--", input.repository, str(clone_dir)], clone_dir.parent, env, input, "clone")
        branch = input.branch
        if not branch:
            head = await _git(["symbolic-ref", "--short", "HEAD"], clone_dir, env, input, "find the default branch of")
            branch = head.stdout.strip()
        if input.commit:
            checkout = ["checkout", "--quiet", "--detach", input.commit, "--"]
            await _git(checkout, clone_dir, env, input, f"check out commit {shorten(input.commit)!r} of")
        facts = await _git(["log", "-1", f"--format={_LOG_FORMAT}"], clone_dir, env, input, "read the commit of")
        variables = _commit_variables(facts.stdout, input.repository, branch)
        artifacts = await self._pack(input, clone_dir)
        message = variables["CommitMessage"]
        summary = message.splitlines()[0] if message else variables["CommitId"]
        return ActionOutcome(
            output_variables=variables,
            output_artifacts=artifacts,
            summary=summary,
            source_revision=SourceRevision(
                action_name=input.context.action_name, revision_id=variables["CommitId"], revision_summary=summary
            ),
        )

    async def _pack(self, input: GitSourceInput, clone_dir: Path) -> list[ArtifactRef]:
        if not input.output_artifact:
            return []
        await asyncio.to_thread(shutil.rmtree, clone_dir / ".git")  # the artifact is the work tree only
        try:
            store = store_for_outputs(self.store, input.context.artifact_stores)
            ref = await asyncio.to_thread(store.put, input.output_artifact, clone_dir, ["**/*"])
        except ArtifactError as exc:
            raise ApplicationError(str(exc), type="ArtifactError", non_retryable=True) from exc
        return [ref]


async def _git(args: list[str], cwd: Path, env: Mapping[str, str], input: GitSourceInput, what: str) -> GitResult:
    """Run git; a failure becomes SourceNotFound (non-retryable) or a retryable GitError."""
    result = await run_git(args, cwd, env)
    if result.returncode == 0:
        return result
    target = f"{shorten(input.repository)!r}" + (f" (branch {shorten(input.branch)!r})" if input.branch else "")
    message = f"git could not {what} {target}: {shorten(result.first_error_line, 500)}"
    if any(marker in result.stderr.lower() for marker in _NOT_FOUND_MARKERS):
        raise ApplicationError(message, type="SourceNotFound", non_retryable=True)
    raise ApplicationError(message, type="GitError")  # network or server trouble: worth a retry


def _commit_variables(log_output: str, repository: str, branch: str) -> dict[str, str]:
    sha, author_name, author_email, author_date, committer_date, message = log_output.split("\x00", 5)
    return {
        "CommitId": sha.strip(),
        "BranchName": branch,
        "CommitMessage": message.strip(),
        "AuthorDate": author_date,
        "AuthorName": author_name,
        "AuthorEmail": author_email,
        "CommitterDate": committer_date,
        "RepositoryName": repository_name(repository),
        "FullRepositoryName": repository,
    }


async def _heartbeat_forever() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _remove_workspace(workspace: Path) -> None:
    shutil.rmtree(workspace, ignore_errors=True)
    with contextlib.suppress(OSError):
        workspace.parent.rmdir()


async def current_revision(settings: Settings, request: PollRequest) -> PolledRevision:
    """The poll: the branch's head commit, read with `git ls-remote` (an execution starts for a commit never seen)."""
    repository = request.configuration["RepositoryUrl"]
    branch = request.configuration.get("BranchName", "HEAD")
    ref = branch if branch == "HEAD" else f"refs/heads/{branch}"
    result = await run_git(["ls-remote", "--", repository, ref], Path.cwd(), git_environment(os.environ))
    line = result.stdout.split("\n", 1)[0].split()
    if result.returncode != 0 or not line:
        problem = result.first_error_line if result.stderr.strip() else f"no branch '{branch}'"
        raise ApplicationError(f"cannot read {repository} {branch}: {problem}", type="SourceNotFound")
    return PolledRevision(revision_id=line[0], detail=f"{branch} at {line[0][:12]}")


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the Git contract (conveyor.providers.git)."""
    return [GitProvider(settings, store).git_source]
