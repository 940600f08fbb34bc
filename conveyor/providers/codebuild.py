"""The CodeBuild provider (Build or Test): runs a build project's buildspec, on the worker or on AWS.

Two runners behind one contract (chosen per action with `conveyor.codebuild.runner`, else per pipeline, else
`local`, so an imported declaration runs offline):
- `local` runs the buildspec 0.2 on the worker, in the Commands provider's sandbox (activities/codebuild/local.py);
- `aws` calls StartBuild on the real project and follows the build (activities/codebuild/aws.py).
Output variables are the buildspec's `env.exported-variables`: known only at run time.
"""

from __future__ import annotations

import json
from datetime import timedelta
from enum import StrEnum

from pydantic import Field, ValidationError

from conveyor.aws.identity import AwsIdentity
from conveyor.interface import ActionCategory, ActionOwner
from conveyor.model import ActionContext, ArtifactRef, CamelModel
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    ConfigurationKey,
    KeyType,
    OutputVariables,
    ProviderActivity,
    ProviderContract,
)

ACTIVITY = "codebuild"
MODULE = "activities.providers.codebuild"
CONTRACT_NAME = "CodeBuild"


class CodeBuildRunner(StrEnum):
    LOCAL = "local"  # the buildspec on the worker
    AWS = "aws"  # StartBuild on the real project


class BuildVariableType(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    PARAMETER_STORE = "PARAMETER_STORE"  # the value names an SSM parameter
    SECRETS_MANAGER = "SECRETS_MANAGER"  # the value names a secret (`secret-id:json-key:version-stage:version-id`)


class BuildVariable(CamelModel):
    """One entry of the action's `EnvironmentVariables` JSON (CodePipeline's shape: name, value, type)."""

    name: str
    value: str
    type: BuildVariableType = BuildVariableType.PLAINTEXT  # CodePipeline accepts an entry without a type


class CodeBuildInput(CamelModel):
    """What a CodeBuild action's activity gets: references and names, never secret values (a PARAMETER_STORE or
    SECRETS_MANAGER variable carries the parameter's or secret's name; the runner resolves it)."""

    context: ActionContext
    identity: AwsIdentity
    runner: CodeBuildRunner = CodeBuildRunner.LOCAL
    project_name: str
    # Input artifacts, the primary first (`PrimarySource`, else the first declared).
    input_artifacts: list[ArtifactRef] = Field(default_factory=list)
    output_artifacts: list[str] = Field(default_factory=list)  # the action's output artifact names, in order
    environment_variables: list[BuildVariable] = Field(default_factory=list)  # the action's; they win
    # The project's (`conveyor.codebuild.environment`): over the buildspec's env, under the action's.
    project_environment_variables: list[BuildVariable] = Field(default_factory=list)
    buildspec: str | None = None  # a Conveyor override or the imported project's inline buildspec (YAML text)
    buildspec_path: str | None = None  # a path in the primary input (default: buildspec.yml at its root)
    timeout_seconds: int = 60 * 60
    source_version: str | None = None  # the primary input's source revision (CODEBUILD_RESOLVED_SOURCE_VERSION)
    batch_enabled: bool = False  # `BatchEnabled`: a batch build (the buildspec's `batch`)


def environment_variables(text: str | None) -> list[BuildVariable]:
    """The `EnvironmentVariables` configuration value (a JSON list); validation has already checked it."""
    if not text:
        return []
    return [BuildVariable.model_validate(item) for item in json.loads(text)]


def environment_variables_problem(text: str) -> str | None:
    """Why an `EnvironmentVariables` value is not CodePipeline's JSON list of {name, value, type}, or None."""
    if "#{" in text:
        return None  # resolved at run time; checked then
    try:
        items = json.loads(text)
    except json.JSONDecodeError as err:
        return f"is not JSON ({err.msg} at character {err.pos}); write a list of {{name, value, type}}"
    if not isinstance(items, list):
        return "must be a JSON list of {name, value, type}"
    for index, item in enumerate(items):
        try:
            BuildVariable.model_validate(item)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "entry"
            return f"entry {index}: {where}: {first['msg']}"
    return None


def build_input(request: ActionRequest) -> CodeBuildInput:
    action, configuration = request.action, request.configuration
    inputs = [request.artifact(i.name) for i in action.input_artifacts]
    primary = configuration.get("PrimarySource")
    inputs.sort(key=lambda ref: ref.name != primary)  # stable: the primary first, the others as declared
    extension = action.conveyor
    codebuild = extension.codebuild
    runner = (codebuild.runner if codebuild else None) or request.codebuild_runner or CodeBuildRunner.LOCAL
    # CODEBUILD_RESOLVED_SOURCE_VERSION: known when the execution has one source (an artifact does not say which
    # source action made it).
    revisions = {revision.revision_id for revision in request.source_revisions}
    # A Conveyor override (a path, or inline) wins over the imported project's buildspec.
    path = codebuild.buildspec_path if codebuild else None
    buildspec = None if path else (codebuild.buildspec if codebuild else None) or extension.buildspec
    return CodeBuildInput(
        context=request.context,
        identity=request.aws_identity(),
        runner=CodeBuildRunner(runner),
        project_name=configuration["ProjectName"],
        input_artifacts=inputs,
        output_artifacts=[o.name for o in action.output_artifacts],
        environment_variables=environment_variables(configuration.get("EnvironmentVariables")),
        project_environment_variables=[
            BuildVariable(name=v.name, value=v.value, type=BuildVariableType(v.type))
            for v in (codebuild.environment if codebuild else [])
        ],
        buildspec=buildspec,
        buildspec_path=path,
        timeout_seconds=int(request.timeout.total_seconds()),
        source_version=revisions.pop() if len(revisions) == 1 else None,
        batch_enabled=configuration.get("BatchEnabled", "").strip().lower() == "true",
    )


CODEBUILD = ProviderContract(
    name=CONTRACT_NAME,
    summary=(
        "runs the project's buildspec: `local` (the default) on the worker from the buildspec in the source (or "
        "`conveyor.codebuild`), `aws` as a real build (StartBuild); exported variables become output variables"
    ),
    categories=(ActionCategory.BUILD, ActionCategory.TEST),
    default_category=ActionCategory.BUILD,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("ProjectName", required=True),
        ConfigurationKey("PrimarySource"),
        ConfigurationKey("EnvironmentVariables"),
        ConfigurationKey("BatchEnabled", type=KeyType.BOOLEAN),
        ConfigurationKey("CombineArtifacts", type=KeyType.BOOLEAN),
    ),
    output_variables=OutputVariables.RUN_TIME,
    artifacts=ArtifactLimits(min_inputs=1, max_inputs=5, max_outputs=5),
    default_timeout=timedelta(hours=1),
    transient_errors=frozenset({"AwsUnavailable"}),
    activity=ProviderActivity(
        name=ACTIVITY,
        input_type=CodeBuildInput,
        build_input=build_input,
        module=MODULE,
        timeout_margin=timedelta(minutes=5),  # the runner enforces the build's timeout; this catches a lost worker
    ),
)
