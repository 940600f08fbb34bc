"""The ElasticBeanstalk provider (Deploy): the input artifact becomes an application version of `ApplicationName`,
`EnvironmentName` is updated to it, and the action waits until the environment is Ready and healthy
(activities/providers/elastic_beanstalk.py).

One action attempt is one application version: its label is derived from the attempt, so a retried activity finds
the version (or CreateApplicationVersion's "already exists") instead of making a second. The label of the version the
environment ran before is recorded in the new version's description before the environment is updated: the
compensation reads it there and updates the environment back to it.
"""

from __future__ import annotations

import hashlib
import re
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
    ProviderActivity,
    ProviderContract,
    provider_step,
    provider_target,
)

CONTRACT_NAME = "ElasticBeanstalk"
ACTIVITY = "elastic_beanstalk"
COMPENSATION_ACTIVITY = "elastic_beanstalk_compensate"
MODULE = "activities.providers.elastic_beanstalk"
AWS_TRANSIENT = frozenset({"AwsUnavailable"})
LABEL_PREFIX = "conveyor-"
# Elastic Beanstalk's limits: an application name 1-100 characters, an environment name 4-40 of letters, digits and
# hyphens, not starting or ending with a hyphen.
APPLICATION_LIMIT = 100
_ENVIRONMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{2,38}[A-Za-z0-9]$")


class BeanstalkInput(CamelModel):
    context: ActionContext
    identity: AwsIdentity
    application_name: str
    environment_name: str
    version_label: str  # derived from the action attempt
    source_bundle: ArtifactRef


class BeanstalkCompensation(CamelModel):
    """Updates the environment back to the version it ran before `version_label` (recorded in that version's
    description); nothing to do when the action created no version or the environment no longer runs it."""

    context: ActionContext
    identity: AwsIdentity
    application_name: str
    environment_name: str
    version_label: str
    timeout_seconds: int = 60 * 60


def version_label(context: ActionContext) -> str:
    """`conveyor-<40 hex>`: the same for every activity of one action attempt, another for the next attempt (a
    declared retry, a stage retry, another execution). Fits the 100-character label limit."""
    digest = hashlib.sha256(f"{context.idempotency_key}/{context.action_attempt}".encode()).hexdigest()
    return f"{LABEL_PREFIX}{digest[:40]}"


def build_input(request: ActionRequest) -> BeanstalkInput:
    configuration = request.configuration
    return BeanstalkInput(
        context=request.context,
        identity=request.aws_identity(),
        application_name=configuration["ApplicationName"],
        environment_name=configuration["EnvironmentName"],
        version_label=version_label(request.context),
        source_bundle=request.artifact(request.action.input_artifacts[0].name),
    )


def configuration_problems(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    """The names' forms, as Elastic Beanstalk would refuse them."""
    problems: list[tuple[str, str]] = []
    application = configuration.get("ApplicationName", "")
    if application and "#{" not in application and (len(application) > APPLICATION_LIMIT or "/" in application):
        problems.append(("ApplicationName", f"'{application}' is not an application name (1-100 characters, no /)"))
    environment = configuration.get("EnvironmentName", "")
    if environment and "#{" not in environment and not _ENVIRONMENT_NAME.match(environment):
        problems.append(
            (
                "EnvironmentName",
                f"'{environment}' is not an environment name: 4-40 letters, digits and hyphens, not starting or "
                "ending with a hyphen",
            )
        )
    return problems


def register_compensation(request: ActionRequest, activity_input: BaseModel, sequence: int) -> CompensationStep:
    """Registered when the action starts: the version label is known then, the previous one is read later from
    the version's description (the compensation of an action that made no version does nothing)."""
    assert isinstance(activity_input, BeanstalkInput)
    timeout = int(request.timeout.total_seconds())
    target = BeanstalkCompensation(
        context=activity_input.context,
        identity=activity_input.identity,
        application_name=activity_input.application_name,
        environment_name=activity_input.environment_name,
        version_label=activity_input.version_label,
        timeout_seconds=timeout,
    )
    return provider_step(request, sequence, CONTRACT_NAME, target, timeout)


def compensation_input(step: CompensationStep, context: ActionContext) -> BeanstalkCompensation:
    target = provider_target(step, BeanstalkCompensation)
    return target.model_copy(update={"context": context})


ELASTIC_BEANSTALK = ProviderContract(
    name=CONTRACT_NAME,
    summary=(
        "makes its input artifact (in the S3 artifact store) an application version of `ApplicationName`, labelled "
        "from the action attempt (a retried attempt finds it), updates `EnvironmentName` to it and waits until it is "
        "Ready and Green (health Red or an ERROR event fails it, naming them); outputs {variables}; compensation "
        "updates the environment back to its previous version"
    ),
    categories=(ActionCategory.DEPLOY,),
    default_category=ActionCategory.DEPLOY,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("ApplicationName", required=True),
        ConfigurationKey("EnvironmentName", required=True),
    ),
    configuration_check=configuration_problems,
    fixed_outputs=("VersionLabel",),
    artifacts=ArtifactLimits(min_inputs=1, max_inputs=1, max_outputs=0),
    default_timeout=timedelta(hours=1),
    transient_errors=AWS_TRANSIENT,
    activity=ProviderActivity(name=ACTIVITY, input_type=BeanstalkInput, build_input=build_input, module=MODULE),
    compensation=Compensation(
        activity=COMPENSATION_ACTIVITY,
        input_type=BeanstalkCompensation,
        register=register_compensation,
        build_input=compensation_input,
    ),
)
