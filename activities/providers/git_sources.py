"""CodeStarSourceConnection, GitHub (version 1) and CodeCommit sources: a clone through the connections file.

The connections file (conveyor/connections.py) gives the URL and where the credential is; the clone itself is the
Git provider's (`clone_source`). A token reaches git only through git's own process environment, read by a
credential helper given with `-c` (the helper's text names an environment variable, never the value): it is
never in a URL, an argument, the activity's input or result, a log line or an error (git's output is scrubbed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.providers.git import (
    Cloned,
    CloneRequest,
    Credentials,
    branch_head,
    clone_source,
    source_outcome,
)
from conveyor.connections import (
    ConnectionsError,
    Credential,
    ResolvedConnection,
    connections_path,
    load_connections,
    resolve_connection,
)
from conveyor.model import ActionOutcome
from conveyor.providers.contract import PolledRevision, PollRequest
from conveyor.providers.git_sources import (
    CODECOMMIT_ACTIVITY,
    CODESTAR_ACTIVITY,
    GITHUB_ACTIVITY,
    ArtifactFormat,
    HostedGit,
    HostedGitSourceInput,
    branch_of,
    repository_placeholders,
)
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactStore

USERNAME_VARIABLE = "CONVEYOR_GIT_USERNAME"
TOKEN_VARIABLE = "CONVEYOR_GIT_TOKEN"
# A credential helper that answers git's `get` from its own environment: the text holds variable names only.
ENV_HELPER = (
    '!f() { test "$1" = get && printf "username=%s\\npassword=%s\\n" '
    f'"${USERNAME_VARIABLE}" "${TOKEN_VARIABLE}"; }}; f'
)
AWS_HELPER = "!aws codecommit credential-helper $@"
# What the AWS CLI or git-remote-codecommit reads to find credentials (git's environment is otherwise clean).
AWS_VARIABLES = (
    "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
)  # fmt: skip
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")


def git_credentials(
    connection: ResolvedConnection, environ: Mapping[str, str], where: str, which: Callable[[str], str | None]
) -> Credentials:
    """How git authenticates with the connection's credential; ConnectionsError when it cannot be had."""
    credential = connection.credential
    if credential is None:
        return Credentials()
    reset = ("-c", "credential.helper=")  # only this helper: not the worker's own (they could prompt or differ)
    if credential.helper:
        return Credentials(options=(*reset, "-c", f"credential.helper={credential.helper}"))
    if credential.aws:
        return _aws_credentials(connection, environ, where, which, reset)
    token = _token(credential, environ, where)
    return Credentials(
        options=(*reset, "-c", f"credential.helper={ENV_HELPER}"),
        env={USERNAME_VARIABLE: credential.username, TOKEN_VARIABLE: token},
        secrets=(token,),
    )


def _token(credential: Credential, environ: Mapping[str, str], where: str) -> str:
    if credential.env:
        token = environ.get(credential.env, "")
        if not token:
            raise ConnectionsError(f"{where}: credential env {credential.env} is not set in the worker's environment")
        return token
    assert credential.file is not None
    try:
        lines = credential.file.expanduser().read_text().splitlines()
    except OSError as err:
        raise ConnectionsError(f"{where}: cannot read credential file {credential.file} ({err.strerror})") from None
    if not lines or not lines[0].strip():
        raise ConnectionsError(f"{where}: credential file {credential.file} is empty")
    return lines[0].strip()


def _aws_credentials(
    connection: ResolvedConnection,
    environ: Mapping[str, str],
    where: str,
    which: Callable[[str], str | None],
    reset: tuple[str, ...],
) -> Credentials:
    env = {name: environ[name] for name in AWS_VARIABLES if environ.get(name)}
    secrets = tuple(environ[name] for name in AWS_SECRET_VARIABLES if environ.get(name))
    if connection.url.startswith("codecommit::"):
        if which("git-remote-codecommit") is None:
            raise ConnectionsError(
                f"{where}: {connection.url} needs git-remote-codecommit, which is not installed on the worker "
                "(pip install git-remote-codecommit)"
            )
        return Credentials(env=env, secrets=secrets)
    if which("aws") is None:
        raise ConnectionsError(
            f"{where}: AWS credentials for {connection.url} need the AWS CLI (`aws codecommit credential-helper`), "
            "which is not on the worker's PATH; install it, or install git-remote-codecommit and use "
            "url: codecommit::{region}://{RepositoryName}"
        )
    options = (*reset, "-c", f"credential.helper={AWS_HELPER}", "-c", "credential.UseHttpPath=true")
    return Credentials(options=options, env=env, secrets=secrets)


def remote(
    settings: Settings,
    provider: HostedGit,
    connection_arn: str | None,
    repository: Mapping[str, str],
    region: str | None,
) -> tuple[ResolvedConnection, Credentials]:
    """The URL to clone and the credentials to clone with, from the worker's connections file (read each time:
    an edit applies without restarting the worker). A problem is a non-retryable ConnectionsError."""
    path = connections_path(settings)
    try:
        entries = load_connections(path)
        placeholders = dict(repository) | {
            "region": region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
        }
        connection = resolve_connection(entries, provider, connection_arn, placeholders)
        where = f"connections file {path}, entry '{connection.matched}'" if path else "the default connection"
        return connection, git_credentials(connection, os.environ, where, _which)
    except ConnectionsError as err:
        raise ApplicationError(str(err), type="ConnectionsError", non_retryable=True) from None


def _which(program: str) -> str | None:
    return shutil.which(program, path=os.environ.get("PATH"))


def output_variables(input: HostedGitSourceInput, connection: ResolvedConnection, cloned: Cloned) -> dict[str, str]:
    """The provider's output variables, exactly as CodePipeline names them."""
    commit = cloned.commit
    common = {
        "CommitId": commit.sha,
        "CommitMessage": commit.message,
        "BranchName": cloned.branch,
        "AuthorDate": commit.author_date,
    }
    if input.provider == HostedGit.CODESTAR:
        return common | {
            "ConnectionArn": input.connection_arn or "",
            "FullRepositoryName": input.repository["FullRepositoryId"],
        }
    names = {"RepositoryName": input.repository["RepositoryName"], "CommitterDate": commit.committer_date}
    if input.provider == HostedGit.GITHUB:
        return common | names | {"CommitUrl": commit_url(connection.url, input.repository, commit.sha)}
    return common | names


def commit_url(url: str, repository: Mapping[str, str], sha: str) -> str:
    """The commit's web page: the clone URL's own host when it is http(s), else github.com."""
    if url.startswith(("https://", "http://")):
        return f"{url.removesuffix('/').removesuffix('.git')}/commit/{sha}"
    return f"https://github.com/{repository['Owner']}/{repository['Repo']}/commit/{sha}"


class HostedGitSources:
    """Activities of the three Git-hosted source providers; one instance per worker."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store

    @activity.defn(name=CODESTAR_ACTIVITY)
    async def codestar_connection_source(self, input: HostedGitSourceInput) -> ActionOutcome:
        return await self._source(input)

    @activity.defn(name=GITHUB_ACTIVITY)
    async def github_source(self, input: HostedGitSourceInput) -> ActionOutcome:
        return await self._source(input)

    @activity.defn(name=CODECOMMIT_ACTIVITY)
    async def codecommit_source(self, input: HostedGitSourceInput) -> ActionOutcome:
        return await self._source(input)

    async def _source(self, input: HostedGitSourceInput) -> ActionOutcome:
        ctx = input.context
        log: Any = structlog.get_logger().bind(
            pipeline=ctx.pipeline_name, execution=ctx.execution_id, stage=ctx.stage_name, action=ctx.action_name
        )
        connection, credentials = remote(
            self.settings, input.provider, input.connection_arn, input.repository, input.region
        )
        log.info("git.connection", provider=input.provider.value, connection=connection.matched)
        request = CloneRequest(
            context=ctx,
            repository=connection.url,
            branch=input.branch,
            commit=input.commit,
            output_artifact=input.output_artifact,
            keep_git=input.artifact_format == ArtifactFormat.CODEBUILD_CLONE_REF,
            credentials=credentials,
        )
        cloned = await clone_source(self.settings, self.store, request, log)
        log.info("git.fetched", commit=cloned.commit.sha)
        return source_outcome(ctx, cloned, output_variables(input, connection, cloned))


async def _poll(settings: Settings, provider: HostedGit, request: PollRequest) -> PolledRevision:
    configuration = request.configuration
    connection, credentials = remote(
        settings,
        provider,
        configuration.get("ConnectionArn"),
        repository_placeholders(provider, configuration),
        request.identity.region if request.identity else None,
    )
    return await branch_head(connection.url, branch_of(provider, configuration), credentials)


# The poll hooks the contracts name (`<activity>_revision`): the branch's head, by ls-remote.
async def codestar_connection_source_revision(settings: Settings, request: PollRequest) -> PolledRevision:
    return await _poll(settings, HostedGit.CODESTAR, request)


async def github_source_revision(settings: Settings, request: PollRequest) -> PolledRevision:
    return await _poll(settings, HostedGit.GITHUB, request)


async def codecommit_source_revision(settings: Settings, request: PollRequest) -> PolledRevision:
    return await _poll(settings, HostedGit.CODECOMMIT, request)


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the three contracts (conveyor.providers.git_sources)."""
    sources = HostedGitSources(settings, store)
    return [sources.codestar_connection_source, sources.github_source, sources.codecommit_source]
