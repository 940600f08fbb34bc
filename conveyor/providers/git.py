"""The Git source provider: clones a repository at a branch (or the execution's source revision override)."""

from __future__ import annotations

from datetime import timedelta

from conveyor.interface import ActionCategory, ActionOwner, RevisionType
from conveyor.model import GitSourceInput
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    ConfigurationKey,
    ProviderActivity,
    ProviderContract,
    SourcePoll,
)

ACTIVITY = "git_source"

VARIABLES = (
    "CommitId",
    "BranchName",
    "CommitMessage",
    "AuthorDate",
    "AuthorName",
    "AuthorEmail",
    "CommitterDate",
    "RepositoryName",
    "FullRepositoryName",
)


def build_input(request: ActionRequest) -> GitSourceInput:
    outputs = request.action.output_artifacts
    return GitSourceInput(
        context=request.context,
        repository=request.configuration["RepositoryUrl"],
        branch=request.configuration.get("BranchName"),
        commit=request.revision_override,
        output_artifact=outputs[0].name if outputs else None,
    )


GIT = ProviderContract(
    name="Git",
    summary=(
        "clones `RepositoryUrl` (a path or URL) at `BranchName`, or at the execution's source revision override; "
        "outputs the tree (without `.git`) as its artifact and the variables {variables}; "
        "recorded as the execution's source revision"
    ),
    categories=(ActionCategory.SOURCE,),
    default_category=ActionCategory.SOURCE,
    owner=ActionOwner.CUSTOM,
    configuration=(ConfigurationKey("RepositoryUrl", required=True), ConfigurationKey("BranchName")),
    fixed_outputs=VARIABLES,
    artifacts=ArtifactLimits(max_inputs=0, max_outputs=1),
    default_timeout=timedelta(hours=1),
    transient_errors=frozenset({"GitError"}),  # network or server trouble
    author_variables=("AuthorEmail", "AuthorName"),
    revision_types=(RevisionType.COMMIT_ID,),
    poll=SourcePoll(revision_type=RevisionType.COMMIT_ID),
    activity=ProviderActivity(
        name=ACTIVITY, input_type=GitSourceInput, build_input=build_input, module="activities.providers.git"
    ),
)
