"""The CodeDeploy providers (Deploy): `CodeDeploy` (EC2/on-premises and Lambda: the input artifact's zip, in the S3
artifact store, is the revision bundle) and `CodeDeployToECS` (a task definition registered from a template with
images substituted, then an AppSpecContent revision naming it), as CodePipeline's actions of those names do
(activities/providers/codedeploy.py).

One action attempt is one deployment. CodeDeploy takes no idempotency token, so the deployment's description names
the attempt (`[conveyor:<marker>]`, a UUID derived from it): a retried activity finds the deployment the attempt
already created among the group's deployments and follows it rather than creating a second one.

What differs from CodePipeline: `DeploymentConfigName` (Conveyor's own key) overrides the group's deployment
configuration; a failure names CodeDeploy's error information; a stopped action stops the deployment (rolling it
back when the group allows it); the group's previous revision is kept before deploying, and a compensation
redeploys it. The kept revision's reference is also recorded in the store before CreateDeployment (an attempt
record, conveyor.stores.records): the compensation of an action abandoned mid-deployment, which returned nothing,
finds it there.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from pydantic import BaseModel, Field

from conveyor.aws.identity import AwsIdentity
from conveyor.interface import ActionCategory, ActionOwner
from conveyor.model import ActionContext, ArtifactRef, CamelModel, CompensationStep
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    Compensation,
    ConfigurationKey,
    ProviderActivity,
    ProviderContract,
    provider_step,
    provider_target,
)
from conveyor.stores.records import RecordKind, attempt_hash

CODEDEPLOY_NAME = "CodeDeploy"
ECS_NAME = "CodeDeployToECS"
ACTIVITY = "codedeploy"
ECS_ACTIVITY = "codedeploy_ecs"
COMPENSATION_ACTIVITY = "codedeploy_compensate"
MODULE = "activities.providers.codedeploy"
AWS_TRANSIENT = frozenset({"AwsUnavailable"})
# The file of CodeDeployToECS image artifacts (written by the ECR source or a build): `{"ImageURI": ...}`.
IMAGE_DETAIL_FILE = "imageDetail.json"
TASK_DEFINITION_PLACEHOLDER = "<TASK_DEFINITION>"
DEFAULT_TASK_DEFINITION_PATH = "taskdef.json"
DEFAULT_APPSPEC_PATH = "appspec.yaml"
IMAGE_SLOTS = (1, 2, 3, 4)
# CodeDeploy's own configurations; a group may also name a custom one (any name is passed through).
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9_.+=,@-]{1,100}$")
_PLACEHOLDER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
_MARKER_NAMESPACE = uuid.UUID("3c9e1f0a-7d2b-4e61-a8f5-5b0c2d9e7a14")


class ImageSubstitution(CamelModel):
    """`<placeholder>` in the task definition becomes the ImageURI of `artifact`'s imageDetail.json."""

    placeholder: str  # ImageNContainerName (IMAGE1_NAME)
    artifact: ArtifactRef


class EcsRevision(CamelModel):
    """What CodeDeployToECS builds its revision from: both templates and the images to put in."""

    task_definition_artifact: ArtifactRef
    task_definition_path: str = DEFAULT_TASK_DEFINITION_PATH
    appspec_artifact: ArtifactRef
    appspec_path: str = DEFAULT_APPSPEC_PATH
    images: list[ImageSubstitution] = Field(default_factory=list)


class CodeDeployInput(CamelModel):
    context: ActionContext
    identity: AwsIdentity
    application: str
    deployment_group: str
    deployment_config: str | None = None  # None: the group's own
    marker: str  # names the attempt in the deployment's description
    timeout_seconds: int = 60 * 60  # the action's: the activity stops the deployment when it runs longer
    bundle: ArtifactRef | None = None  # CodeDeploy: the revision bundle
    ecs: EcsRevision | None = None  # CodeDeployToECS


class CodeDeployCompensation(CamelModel):
    """Redeploys the revision the group last deployed successfully before the action (kept in the artifact store by
    the action before it created its deployment, found in `previous`); nothing when the group had none."""

    context: ActionContext
    identity: AwsIdentity
    application: str
    deployment_group: str
    deployment_config: str | None = None
    timeout_seconds: int = 60 * 60
    previous: list[ArtifactRef] = Field(default_factory=list)
    # Where each attempt of the action records the kept revision before CreateDeployment (`attempt_record`): an
    # action abandoned mid-deployment hands back no reference, so the compensation finds it there.
    attempt_records: list[str] = Field(default_factory=list)


def attempt_record(context: ActionContext, attempt: int | None = None) -> str:
    """The store location (a hash) of an action attempt's record: the same for every activity of the attempt."""
    number = context.action_attempt if attempt is None else attempt
    return attempt_hash(RecordKind.CODEDEPLOY, context.idempotency_key, number)


def attempt_marker(context: ActionContext, purpose: str = "deploy") -> str:
    """The attempt's name in a deployment description: the same for every activity of the attempt."""
    return str(uuid.uuid5(_MARKER_NAMESPACE, f"{purpose}/{context.idempotency_key}/{context.action_attempt}"))


def _common(request: ActionRequest) -> dict[str, object]:
    configuration = request.configuration
    return {
        "context": request.context,
        "identity": request.aws_identity(),
        "application": configuration["ApplicationName"],
        "deployment_group": configuration["DeploymentGroupName"],
        "deployment_config": configuration.get("DeploymentConfigName") or None,
        "marker": attempt_marker(request.context),
        "timeout_seconds": int(request.timeout.total_seconds()),
    }


def build_input(request: ActionRequest) -> CodeDeployInput:
    bundle = request.artifact(request.action.input_artifacts[0].name)
    return CodeDeployInput.model_validate(_common(request) | {"bundle": bundle})


def build_ecs_input(request: ActionRequest) -> CodeDeployInput:
    configuration = request.configuration
    names = [artifact.name for artifact in request.action.input_artifacts]

    def artifact(key: str) -> ArtifactRef:
        return request.artifact(configuration.get(key) or names[0])

    images = [
        ImageSubstitution(
            placeholder=configuration.get(f"Image{n}ContainerName") or f"IMAGE{n}_NAME",
            artifact=request.artifact(configuration[f"Image{n}ArtifactName"]),
        )
        for n in IMAGE_SLOTS
        if configuration.get(f"Image{n}ArtifactName")
    ]
    ecs = EcsRevision(
        task_definition_artifact=artifact("TaskDefinitionTemplateArtifact"),
        task_definition_path=configuration.get("TaskDefinitionTemplatePath") or DEFAULT_TASK_DEFINITION_PATH,
        appspec_artifact=artifact("AppSpecTemplateArtifact"),
        appspec_path=configuration.get("AppSpecTemplatePath") or DEFAULT_APPSPEC_PATH,
        images=images,
    )
    return CodeDeployInput.model_validate(_common(request) | {"ecs": ecs})


def configuration_problems(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    name = configuration.get("DeploymentConfigName", "")
    if name and "#{" not in name and not _CONFIG_NAME.match(name):
        return [
            (
                "DeploymentConfigName",
                f"'{name}' is not a deployment configuration name (CodeDeployDefault.AllAtOnce, "
                "CodeDeployDefault.LambdaCanary10Percent5Minutes, CodeDeployDefault.ECSLinear10PercentEvery1Minutes "
                "or a custom configuration's name)",
            )
        ]
    return []


def ecs_configuration_problems(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    problems = configuration_problems(configuration)
    for n in IMAGE_SLOTS:
        artifact, container = configuration.get(f"Image{n}ArtifactName"), configuration.get(f"Image{n}ContainerName")
        if container and not artifact:
            problems.append(
                (f"Image{n}ArtifactName", f"is required with Image{n}ContainerName: the artifact holding "
                 f"{IMAGE_DETAIL_FILE} whose ImageURI replaces <{container}>")
            )  # fmt: skip
        if container and "#{" not in container and not _PLACEHOLDER_NAME.match(container):
            problems.append(
                (f"Image{n}ContainerName", f"'{container}' is not a placeholder name: letters, digits, _ and - "
                 f"(the task definition says <{'IMAGE1_NAME'}>)")
            )  # fmt: skip
    return problems


def ecs_artifact_problems(configuration: Mapping[str, str], inputs: Sequence[str]) -> list[tuple[str, str]]:
    """Every artifact a key names is one of the action's input artifacts."""
    keys = [
        "TaskDefinitionTemplateArtifact",
        "AppSpecTemplateArtifact",
        *(f"Image{n}ArtifactName" for n in IMAGE_SLOTS),
    ]
    problems = []
    for key in keys:
        name = configuration.get(key)
        if name and "#{" not in name and name not in inputs:
            listed = ", ".join(inputs) or "none"
            problems.append((key, f"names artifact '{name}', which is not an input artifact of the action ({listed})"))
    return problems


def _register_for(provider: str) -> Callable[[ActionRequest, BaseModel, int], CompensationStep]:
    def register(request: ActionRequest, activity_input: BaseModel, sequence: int) -> CompensationStep:
        return register_compensation(request, activity_input, sequence, provider)

    return register


def register_compensation(
    request: ActionRequest, activity_input: BaseModel, sequence: int, provider: str = CODEDEPLOY_NAME
) -> CompensationStep:
    """Every deployment is undone by redeploying the group's previous revision, which the action keeps in the store
    before creating its deployment (the stage adds its reference to the step once the action hands it back; an
    abandoned action hands back nothing, so the step also names where each attempt records it)."""
    assert isinstance(activity_input, CodeDeployInput)
    retry = request.action.conveyor.retry
    first = activity_input.context.action_attempt
    last = max(first, retry.maximum_attempts if retry else 1)
    target = CodeDeployCompensation(
        context=activity_input.context,
        identity=activity_input.identity,
        application=activity_input.application,
        deployment_group=activity_input.deployment_group,
        deployment_config=activity_input.deployment_config,
        timeout_seconds=activity_input.timeout_seconds,
        attempt_records=[attempt_record(activity_input.context, n) for n in range(first, last + 1)],
    )
    return provider_step(request, sequence, provider, target, int(request.timeout.total_seconds()))


def compensation_input(step: CompensationStep, context: ActionContext) -> CodeDeployCompensation:
    target = provider_target(step, CodeDeployCompensation)
    return target.model_copy(update={"context": context, "previous": list(step.input_artifacts)})


def _compensation(provider: str) -> Compensation:
    return Compensation(
        activity=COMPENSATION_ACTIVITY,
        input_type=CodeDeployCompensation,
        register=_register_for(provider),
        build_input=compensation_input,
        timeout_margin=timedelta(minutes=5),
    )


_COMMON_KEYS = (
    ConfigurationKey("ApplicationName", required=True),
    ConfigurationKey("DeploymentGroupName", required=True),
    ConfigurationKey("DeploymentConfigName"),  # Conveyor's own: the group's configuration when absent
)

CODEDEPLOY = ProviderContract(
    name=CODEDEPLOY_NAME,
    summary=(
        "deploys its input artifact (EC2/on-premises: a revision bundle with appspec.yml, read by CodeDeploy from the "
        "S3 artifact store; Lambda: its appspec as AppSpecContent) to `DeploymentGroupName` of `ApplicationName` with "
        "the group's "
        "deployment configuration or `DeploymentConfigName`; follows it to Succeeded (Failed and Stopped fail the "
        "action with CodeDeploy's error); one deployment per attempt; stopping the action stops it; compensation "
        "redeploys the group's previous revision; outputs {variables}"
    ),
    categories=(ActionCategory.DEPLOY,),
    default_category=ActionCategory.DEPLOY,
    owner=ActionOwner.AWS,
    configuration=_COMMON_KEYS,
    configuration_check=configuration_problems,
    fixed_outputs=("DeploymentId",),
    artifacts=ArtifactLimits(min_inputs=1, max_inputs=1, max_outputs=0),
    default_timeout=timedelta(hours=1),
    transient_errors=AWS_TRANSIENT,
    activity=ProviderActivity(
        name=ACTIVITY,
        input_type=CodeDeployInput,
        build_input=build_input,
        module=MODULE,
        timeout_margin=timedelta(minutes=5),  # the stop on timeout runs inside the activity
    ),
    compensation=_compensation(CODEDEPLOY_NAME),
)

CODEDEPLOY_TO_ECS = ProviderContract(
    name=ECS_NAME,
    summary=(
        "registers the task definition `TaskDefinitionTemplatePath` (taskdef.json) of "
        "`TaskDefinitionTemplateArtifact` with each `<ImageNContainerName>` replaced by the ImageURI of "
        "`ImageNArtifactName`'s imageDetail.json (N = 1..4; without the placeholder, the container of that name "
        "gets it), puts its ARN for `<TASK_DEFINITION>` in "
        "`AppSpecTemplatePath` (appspec.yaml) of `AppSpecTemplateArtifact`, and deploys that appspec (blue/green) "
        "to `DeploymentGroupName`; followed, stopped and compensated as CodeDeploy; outputs {variables}"
    ),
    categories=(ActionCategory.DEPLOY,),
    default_category=ActionCategory.DEPLOY,
    owner=ActionOwner.AWS,
    configuration=(
        *_COMMON_KEYS,
        ConfigurationKey("TaskDefinitionTemplateArtifact", required=True),
        ConfigurationKey("TaskDefinitionTemplatePath"),
        ConfigurationKey("AppSpecTemplateArtifact", required=True),
        ConfigurationKey("AppSpecTemplatePath"),
        *(ConfigurationKey(f"Image{n}{part}") for n in IMAGE_SLOTS for part in ("ArtifactName", "ContainerName")),
    ),
    configuration_check=ecs_configuration_problems,
    artifact_check=ecs_artifact_problems,
    fixed_outputs=("DeploymentId",),
    artifacts=ArtifactLimits(min_inputs=1, max_inputs=5, max_outputs=0),
    default_timeout=timedelta(hours=1),
    transient_errors=AWS_TRANSIENT,
    activity=ProviderActivity(
        name=ECS_ACTIVITY,
        input_type=CodeDeployInput,
        build_input=build_ecs_input,
        module=MODULE,
        timeout_margin=timedelta(minutes=5),
    ),
    compensation=_compensation(ECS_NAME),
)
