"""The ECS provider (Deploy, standard rolling deploy): a new revision of the service's task definition with only
the images of `FileName` (imagedefinitions.json) changed, the service updated to it, the deployment followed to
COMPLETED (activities/providers/ecs.py).

What differs from CodePipeline: a deployment that ECS's circuit breaker fails or rolls back fails the action within
a poll, not after DeploymentTimeout; outputs `TaskDefinitionArn` and `DeploymentId` (CodePipeline has none); the
stage's compensation puts the service back on the task definition the action found.

One action attempt registers one revision and starts one deployment: the revision is tagged with the attempt
(`ATTEMPT_TAG`) and the task definition it replaced (`PREVIOUS_TAG`), so a retried activity (or the compensation)
finds it instead of registering again; the deployment's id is kept in the heartbeat.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import timedelta

from pydantic import BaseModel

from conveyor.aws.identity import AwsIdentity
from conveyor.interface import ActionCategory, ActionOwner
from conveyor.model import ActionContext, ArtifactRef, CamelModel, CompensationStep
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    Compensation,
    ConfigurationKey,
    KeyType,
    ProviderActivity,
    ProviderContract,
    provider_step,
    provider_target,
)

CONTRACT_NAME = "ECS"
ACTIVITY = "ecs_deploy"
COMPENSATION_ACTIVITY = "ecs_compensate"
MODULE = "activities.providers.ecs"
DEFAULT_FILE_NAME = "imagedefinitions.json"
DEFAULT_DEPLOYMENT_TIMEOUT_MINUTES = 60
MAX_DEPLOYMENT_TIMEOUT_MINUTES = 3600  # CodePipeline's ECS action accepts up to 60 hours
ATTEMPT_TAG = "conveyor:attempt"  # on the registered revision: which action attempt registered it
PREVIOUS_TAG = "conveyor:previous-task-definition"  # on the registered revision: the one the service ran before
AWS_TRANSIENT = frozenset({"AwsUnavailable"})


class EcsDeployInput(CamelModel):
    context: ActionContext
    identity: AwsIdentity
    cluster: str
    service: str
    file_name: str = DEFAULT_FILE_NAME
    deployment_timeout_minutes: int = DEFAULT_DEPLOYMENT_TIMEOUT_MINUTES
    artifact: ArtifactRef
    attempt_marker: str  # the ATTEMPT_TAG value of this action attempt
    timeout_seconds: int = 60 * 60  # the action's own timeout; the deployment is followed for the shorter of both


class EcsCompensation(CamelModel):
    """Puts the service back on the task definition the action found: read from the PREVIOUS_TAG of the revision
    the attempt `attempt_marker` registered (nothing to do when it registered none or the service runs another)."""

    context: ActionContext
    identity: AwsIdentity
    cluster: str
    service: str
    attempt_marker: str
    timeout_seconds: int = DEFAULT_DEPLOYMENT_TIMEOUT_MINUTES * 60


def attempt_marker(context: ActionContext) -> str:
    """The tag value naming one action attempt (a declared retry or a new stage attempt gets its own); a digest, as
    tag values are limited to 256 characters of a small alphabet."""
    digest = hashlib.sha256(f"{context.idempotency_key}/{context.action_attempt}".encode()).hexdigest()
    return digest[:40]


def deployment_timeout(configuration: Mapping[str, str]) -> int:
    value = configuration.get("DeploymentTimeout") or ""
    return int(value) if value.isdigit() else DEFAULT_DEPLOYMENT_TIMEOUT_MINUTES


def build_input(request: ActionRequest) -> EcsDeployInput:
    configuration = request.configuration
    return EcsDeployInput(
        context=request.context,
        identity=request.aws_identity(),
        cluster=configuration["ClusterName"],
        service=configuration["ServiceName"],
        file_name=configuration.get("FileName") or DEFAULT_FILE_NAME,
        deployment_timeout_minutes=deployment_timeout(configuration),
        artifact=request.artifact(request.action.input_artifacts[0].name),
        attempt_marker=attempt_marker(request.context),
        timeout_seconds=int(request.timeout.total_seconds()),
    )


def configuration_problems(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    timeout = configuration.get("DeploymentTimeout") or ""
    if timeout.isdigit() and not 1 <= int(timeout) <= MAX_DEPLOYMENT_TIMEOUT_MINUTES:
        problems.append(
            ("DeploymentTimeout", f"is {timeout} minutes; give 1 to {MAX_DEPLOYMENT_TIMEOUT_MINUTES} minutes")
        )
    file_name = configuration.get("FileName") or ""
    if file_name.startswith("/") or ".." in file_name.split("/"):
        problems.append(("FileName", f"'{file_name}' must be a path inside the input artifact"))
    return problems


def register_compensation(request: ActionRequest, activity_input: BaseModel, sequence: int) -> CompensationStep:
    """Every ECS action may have changed its service: the step names the attempt, whose registered revision says
    which task definition to go back to."""
    assert isinstance(activity_input, EcsDeployInput)
    target = EcsCompensation(
        context=activity_input.context,
        identity=activity_input.identity,
        cluster=activity_input.cluster,
        service=activity_input.service,
        attempt_marker=activity_input.attempt_marker,
        timeout_seconds=activity_input.deployment_timeout_minutes * 60,
    )
    return provider_step(request, sequence, CONTRACT_NAME, target, target.timeout_seconds)


def compensation_input(step: CompensationStep, context: ActionContext) -> EcsCompensation:
    target = provider_target(step, EcsCompensation)
    return target.model_copy(update={"context": context})


ECS = ProviderContract(
    name=CONTRACT_NAME,
    summary=(
        "registers a revision of service `ServiceName`'s task definition with only the images of `FileName` "
        f"(default {DEFAULT_FILE_NAME}) changed, updates the service and follows the deployment to COMPLETED "
        "(`DeploymentTimeout` minutes, default 60); a deployment failed or rolled back by the circuit breaker fails "
        "the action at once; outputs {variables}; compensation puts the previous task definition back"
    ),
    categories=(ActionCategory.DEPLOY,),
    default_category=ActionCategory.DEPLOY,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("ClusterName", required=True),
        ConfigurationKey("ServiceName", required=True),
        ConfigurationKey("FileName"),
        ConfigurationKey("DeploymentTimeout", type=KeyType.INTEGER),
    ),
    configuration_check=configuration_problems,
    fixed_outputs=("TaskDefinitionArn", "DeploymentId"),
    artifacts=ArtifactLimits(min_inputs=1, max_inputs=1, max_outputs=0),
    default_timeout=timedelta(hours=1),
    transient_errors=AWS_TRANSIENT,
    activity=ProviderActivity(
        name=ACTIVITY,
        input_type=EcsDeployInput,
        build_input=build_input,
        module=MODULE,
        timeout_margin=timedelta(minutes=5),  # the activity enforces DeploymentTimeout itself
    ),
    compensation=Compensation(
        activity=COMPENSATION_ACTIVITY,
        input_type=EcsCompensation,
        register=register_compensation,
        build_input=compensation_input,
        timeout_margin=timedelta(minutes=5),
    ),
)
