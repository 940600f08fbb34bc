"""The Git-hosted sources CodePipeline users have: CodeStarSourceConnection, GitHub (version 1) and CodeCommit.

All three clone with git. The declaration says which repository and branch; where it is cloned from and with which
credential is the worker's connections file (conveyor/connections.py): the activity input carries names only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from enum import StrEnum

from conveyor.interface import ActionCategory, ActionOwner, RevisionType
from conveyor.model import ActionContext, CamelModel
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    ConfigurationKey,
    KeyType,
    ProviderActivity,
    ProviderContract,
    SourcePoll,
)

MODULE = "activities.providers.git_sources"
# Activity names: recorded in histories, never rename.
CODESTAR_ACTIVITY = "codestar_connection_source"
GITHUB_ACTIVITY = "github_source"
CODECOMMIT_ACTIVITY = "codecommit_source"


class HostedGit(StrEnum):
    """The providers' names (actionTypeId.provider)."""

    CODESTAR = "CodeStarSourceConnection"
    GITHUB = "GitHub"
    CODECOMMIT = "CodeCommit"


class ArtifactFormat(StrEnum):
    """OutputArtifactFormat: the work tree (CODE_ZIP) or a clone with its `.git` (only CodeBuild consumes it)."""

    CODE_ZIP = "CODE_ZIP"
    CODEBUILD_CLONE_REF = "CODEBUILD_CLONE_REF"


# The configuration key whose `false` turns a provider's change detection off (no poll, no webhook start).
DETECTION_KEYS = {
    HostedGit.CODESTAR: "DetectChanges",
    HostedGit.GITHUB: "PollForSourceChanges",
    HostedGit.CODECOMMIT: "PollForSourceChanges",
}


class HostedGitSourceInput(CamelModel):
    context: ActionContext
    provider: HostedGit
    connection_arn: str | None = None
    # The repository's names, as the connections file's URL templates use them: FullRepositoryId; Owner and
    # Repo; RepositoryName.
    repository: dict[str, str]
    region: str | None = None  # CodeCommit's {region}: the action's; None: the worker's
    branch: str
    commit: str | None = None  # a source revision override (COMMIT_ID) wins over the branch head
    artifact_format: ArtifactFormat = ArtifactFormat.CODE_ZIP
    output_artifact: str | None = None


def repository_placeholders(provider: HostedGit, configuration: Mapping[str, str]) -> dict[str, str]:
    """The names a URL template may use, from the action's configuration."""
    if provider == HostedGit.CODESTAR:
        full = configuration.get("FullRepositoryId", "")
        owner, _, repo = full.partition("/")
        return {"FullRepositoryId": full, "Owner": owner, "Repo": repo, "RepositoryName": repo}
    if provider == HostedGit.GITHUB:
        owner, repo = configuration.get("Owner", ""), configuration.get("Repo", "")
        return {"FullRepositoryId": f"{owner}/{repo}", "Owner": owner, "Repo": repo, "RepositoryName": repo}
    name = configuration.get("RepositoryName", "")
    return {"RepositoryName": name, "Repo": name}


def branch_of(provider: HostedGit, configuration: Mapping[str, str]) -> str:
    return configuration.get("Branch" if provider == HostedGit.GITHUB else "BranchName", "")


def detects_changes(provider: HostedGit, configuration: Mapping[str, str]) -> bool:
    """False when the action turned change detection off (DetectChanges / PollForSourceChanges: false)."""
    return configuration.get(DETECTION_KEYS[provider], "true").lower() != "false"


def webhook_repository(provider: str, configuration: Mapping[str, str]) -> str | None:
    """`owner/repo` of a source a GitHub webhook delivery can start, or None for a provider that has none."""
    if provider not in (HostedGit.CODESTAR, HostedGit.GITHUB):
        return None
    return repository_placeholders(HostedGit(provider), configuration)["FullRepositoryId"]


def _build_input(provider: HostedGit) -> Callable[[ActionRequest], HostedGitSourceInput]:
    def build(request: ActionRequest) -> HostedGitSourceInput:
        configuration = request.configuration
        outputs = request.action.output_artifacts
        return HostedGitSourceInput(
            context=request.context,
            provider=provider,
            connection_arn=configuration.get("ConnectionArn"),
            repository=repository_placeholders(provider, configuration),
            region=request.action.region,
            branch=branch_of(provider, configuration),
            commit=request.revision_override,
            artifact_format=ArtifactFormat(configuration.get("OutputArtifactFormat") or ArtifactFormat.CODE_ZIP),
            output_artifact=outputs[0].name if outputs else None,
        )

    return build


def _check_format(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    value = configuration.get("OutputArtifactFormat")
    if value is None or "#{" in value or value in set(ArtifactFormat):
        return []
    return [
        ("OutputArtifactFormat", f"'{value}' is not an output artifact format; use CODE_ZIP or CODEBUILD_CLONE_REF")
    ]


def _check_codestar(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    problems = _check_format(configuration)
    full = configuration.get("FullRepositoryId", "")
    owner, _, repo = full.partition("/")
    if "#{" not in full and (not owner or not repo or "/" in repo):
        problems.append(("FullRepositoryId", f"'{full}' is not owner/repository (e.g. my-org/my-app)"))
    return problems


def _contract(
    provider: HostedGit,
    activity: str,
    summary: str,
    owner: ActionOwner,
    keys: tuple[ConfigurationKey, ...],
    variables: tuple[str, ...],
    check: Callable[[Mapping[str, str]], list[tuple[str, str]]] | None,
) -> ProviderContract:
    return ProviderContract(
        name=provider.value,
        summary=summary,
        categories=(ActionCategory.SOURCE,),
        default_category=ActionCategory.SOURCE,
        owner=owner,
        configuration=keys,
        fixed_outputs=variables,
        artifacts=ArtifactLimits(max_inputs=0, max_outputs=1),
        default_timeout=timedelta(hours=1),
        transient_errors=frozenset({"GitError"}),  # network or server trouble
        configuration_check=check,
        revision_types=(RevisionType.COMMIT_ID,),
        poll=SourcePoll(revision_type=RevisionType.COMMIT_ID, function=f"{activity}_revision"),
        activity=ProviderActivity(
            name=activity,
            input_type=HostedGitSourceInput,
            build_input=_build_input(provider),
            module=MODULE,
        ),
    )


_CONNECTIONS = "from the URL and with the credential the worker's connections file gives (default: {default})"
_FORMATS = (
    "outputs the tree (`OutputArtifactFormat` CODE_ZIP) or the clone with its `.git` (CODEBUILD_CLONE_REF, for "
    "CodeBuild consumers only) and the variables {variables}"
)

CODESTAR_SOURCE_CONNECTION = _contract(
    HostedGit.CODESTAR,
    CODESTAR_ACTIVITY,
    "clones `FullRepositoryId` at `BranchName` (or the source revision override) "
    f"{_CONNECTIONS.format(default='github.com')}; {_FORMATS}; `DetectChanges: false` turns off webhook starts "
    "and polling",
    ActionOwner.AWS,
    (
        ConfigurationKey("ConnectionArn", required=True),
        ConfigurationKey("FullRepositoryId", required=True),
        ConfigurationKey("BranchName", required=True),
        ConfigurationKey("OutputArtifactFormat"),
        ConfigurationKey("DetectChanges", type=KeyType.BOOLEAN),
    ),
    ("AuthorDate", "BranchName", "CommitId", "CommitMessage", "ConnectionArn", "FullRepositoryName"),
    _check_codestar,
)

GITHUB = _contract(
    HostedGit.GITHUB,
    GITHUB_ACTIVITY,
    "version 1: clones `Owner`/`Repo` at `Branch` (or the source revision override) "
    f"{_CONNECTIONS.format(default='github.com')}; `OAuthToken` `****` means that configured credential; outputs "
    "the tree and the variables {variables}; `PollForSourceChanges: false` turns off polling (the webhook still "
    "starts it)",
    ActionOwner.THIRD_PARTY,
    (
        ConfigurationKey("Owner", required=True),
        ConfigurationKey("Repo", required=True),
        ConfigurationKey("Branch", required=True),
        ConfigurationKey("OAuthToken", required=True, secret=True),
        ConfigurationKey("PollForSourceChanges", type=KeyType.BOOLEAN),
    ),
    ("CommitId", "CommitMessage", "CommitUrl", "RepositoryName", "BranchName", "AuthorDate", "CommitterDate"),
    None,
)

CODECOMMIT = _contract(
    HostedGit.CODECOMMIT,
    CODECOMMIT_ACTIVITY,
    "clones `RepositoryName` at `BranchName` (or the source revision override) "
    f"{_CONNECTIONS.format(default='git-codecommit.<region>.amazonaws.com, AWS credentials')}; {_FORMATS}; "
    "polled unless `PollForSourceChanges: false` (EventBridge events are not received)",
    ActionOwner.AWS,
    (
        ConfigurationKey("RepositoryName", required=True),
        ConfigurationKey("BranchName", required=True),
        ConfigurationKey("PollForSourceChanges", type=KeyType.BOOLEAN),
        ConfigurationKey("OutputArtifactFormat"),
    ),
    ("AuthorDate", "BranchName", "CommitId", "CommitMessage", "CommitterDate", "RepositoryName"),
    _check_format,
)

HOSTED_GIT_CONTRACTS = (CODESTAR_SOURCE_CONNECTION, GITHUB, CODECOMMIT)
