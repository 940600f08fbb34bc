"""The CloudFormation provider (Deploy): creates, updates, replaces or deletes a stack, or prepares and executes a
change set, as CodePipeline's CloudFormation action does (activities/providers/cloudformation.py).

What differs from CodePipeline: a template with no changes (an update, a change set) succeeds with a summary
saying so; a prepared change set's changes are the action's `review`, which a Manual approval later in the
execution shows; a stack the action changed is put back by the stage's compensation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from conveyor.aws.identity import AwsIdentity
from conveyor.interface import ActionCategory, ActionOwner
from conveyor.model import ActionContext, ArtifactRef, CamelModel, CompensationStep
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    Compensation,
    ConfigurationKey,
    OutputVariables,
    ProviderActivity,
    ProviderContract,
    provider_step,
    provider_target,
)

CONTRACT_NAME = "CloudFormation"
ACTIVITY = "cloudformation"
COMPENSATION_ACTIVITY = "cloudformation_compensate"
MODULE = "activities.providers.cloudformation"
AWS_TRANSIENT = frozenset({"AwsUnavailable"})
CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND")
# CloudFormation's ClientRequestToken: 1-128 characters of [a-zA-Z][-a-zA-Z0-9]*.
_TOKEN_PREFIX = "conveyor-"
_ARTIFACT_PATH = re.compile(r"^([A-Za-z0-9_\-]+)::(.+)$")


class ActionMode(StrEnum):
    CREATE_UPDATE = "CREATE_UPDATE"
    DELETE_ONLY = "DELETE_ONLY"
    REPLACE_ON_FAILURE = "REPLACE_ON_FAILURE"
    CHANGE_SET_REPLACE = "CHANGE_SET_REPLACE"
    CHANGE_SET_EXECUTE = "CHANGE_SET_EXECUTE"


TEMPLATE_MODES = frozenset({ActionMode.CREATE_UPDATE, ActionMode.REPLACE_ON_FAILURE, ActionMode.CHANGE_SET_REPLACE})
CHANGE_SET_MODES = frozenset({ActionMode.CHANGE_SET_REPLACE, ActionMode.CHANGE_SET_EXECUTE})
# The modes that change a stack, so the stage's compensation puts it back.
CHANGING_MODES = frozenset({ActionMode.CREATE_UPDATE, ActionMode.REPLACE_ON_FAILURE, ActionMode.CHANGE_SET_EXECUTE})


class ArtifactPath(CamelModel):
    """`Artifact::path`: a file inside one of the action's input artifacts."""

    artifact: str
    path: str


class CloudFormationInput(CamelModel):
    context: ActionContext
    identity: AwsIdentity
    mode: str  # an ActionMode once resolved; the activity refuses another value
    stack_name: str
    change_set_name: str | None = None
    template: ArtifactPath | None = None
    template_configuration: ArtifactPath | None = None
    parameter_overrides: str | None = None  # resolved JSON text; Fn::GetParam / Fn::GetArtifactAtt read at run time
    capabilities: list[str] = Field(default_factory=list)
    role_arn: str | None = None  # the service role CloudFormation itself uses (not the worker's identity)
    output_file_name: str | None = None
    output_artifact: str | None = None
    input_artifacts: dict[str, ArtifactRef] = Field(default_factory=dict)  # the action's inputs, by name
    timeout_seconds: int = 60 * 60


class CloudFormationCompensation(CamelModel):
    """Puts a stack back as the action found it: the snapshot the action kept in the artifact store before changing
    the stack (the previous template and parameters, or that it did not exist), found in `snapshots`."""

    context: ActionContext
    identity: AwsIdentity
    stack_name: str
    role_arn: str | None = None
    capabilities: list[str] = Field(default_factory=list)
    snapshots: list[ArtifactRef] = Field(default_factory=list)
    # Where each attempt of the action records its operation before the call (`attempt_record`): an action abandoned
    # mid-operation returns no snapshot reference, so the compensation finds it there.
    attempt_records: list[str] = Field(default_factory=list)
    timeout_seconds: int = 60 * 60


def client_request_token(context: ActionContext, operation: str) -> str:
    """The token of one operation of one action attempt: a retried activity repeats it, so CloudFormation runs the
    call once; another attempt (a declared retry, a new stage attempt) gets its own."""
    digest = hashlib.sha256(f"{context.idempotency_key}/{context.action_attempt}/{operation}".encode()).hexdigest()
    return f"{_TOKEN_PREFIX}{operation.lower()}-{digest[:48]}"


def attempt_record(context: ActionContext, attempt: int | None = None) -> str:
    """The store location (a hash) where an action attempt records the operation it is about to start, before the
    call: a retried activity whose heartbeat never reached the server, and the compensation of an abandoned action,
    find it there."""
    number = context.action_attempt if attempt is None else attempt
    return hashlib.sha256(f"cloudformation-attempt/{context.idempotency_key}/{number}".encode()).hexdigest()


def action_mode(value: str) -> ActionMode | None:
    value = value.strip()
    return ActionMode(value) if value in ActionMode.__members__ else None


def artifact_path(value: str) -> ArtifactPath | None:
    match = _ARTIFACT_PATH.match(value.strip())
    return ArtifactPath(artifact=match.group(1), path=match.group(2)) if match else None


def parameter_overrides_problem(text: str) -> str | None:
    """Why a ParameterOverrides value is not a JSON object of parameter values, or None."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return f'is not JSON ({err.msg} at character {err.pos}); write an object like {{"Name": "value"}}'
    if not isinstance(value, dict):
        return 'must be a JSON object of parameter names to values, like {"Name": "value"}'
    for name, item in value.items():
        if isinstance(item, dict):
            functions = set(item) & {"Fn::GetParam", "Fn::GetArtifactAtt"}
            if len(item) != 1 or not functions:
                return (
                    f"parameter '{name}': an object value must be "
                    '{"Fn::GetParam": [...]} or {"Fn::GetArtifactAtt": [...]}'
                )
            args = next(iter(item.values()))
            wanted = 3 if "Fn::GetParam" in functions else 2
            if not isinstance(args, list) or len(args) != wanted or not all(isinstance(a, str) for a in args):
                return f"parameter '{name}': {next(iter(functions))} takes a list of {wanted} strings"
        elif not isinstance(item, (str, int, float, bool)):
            return f"parameter '{name}': a value is a string (or Fn::GetParam / Fn::GetArtifactAtt)"
    return None


def referenced_artifacts(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    """(key, artifact name) for every input artifact the configuration names."""
    names: list[tuple[str, str]] = []
    for key in ("TemplatePath", "TemplateConfiguration"):
        located = artifact_path(configuration.get(key, ""))
        if located:
            names.append((key, located.artifact))
    text = configuration.get("ParameterOverrides")
    if text and "#{" not in text and parameter_overrides_problem(text) is None:
        for item in json.loads(text).values():
            if isinstance(item, dict):
                names.append(("ParameterOverrides", next(iter(item.values()))[0]))
    return names


def configuration_problems(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    raw_mode = configuration.get("ActionMode", "")
    mode = action_mode(raw_mode)
    if raw_mode and "#{" not in raw_mode and mode is None:
        problems.append(("ActionMode", f"'{raw_mode}' is not an action mode; use one of {', '.join(ActionMode)}"))
    for key in ("TemplatePath", "TemplateConfiguration"):
        value = configuration.get(key)
        if value and "#{" not in value and artifact_path(value) is None:
            problems.append((key, f"'{value}' is not Artifact::path (e.g. BuildOutput::template.yaml)"))
    if mode in TEMPLATE_MODES and not configuration.get("TemplatePath"):
        problems.append(("TemplatePath", f"is required with ActionMode {mode}: the template, as Artifact::path"))
    if mode in CHANGE_SET_MODES and not configuration.get("ChangeSetName"):
        problems.append(("ChangeSetName", f"is required with ActionMode {mode}"))
    overrides = configuration.get("ParameterOverrides")
    if overrides and "#{" not in overrides:
        problem = parameter_overrides_problem(overrides)
        if problem:
            problems.append(("ParameterOverrides", problem))
    for capability in _capabilities(configuration.get("Capabilities")):
        if "#{" not in capability and capability not in CAPABILITIES:
            problems.append(("Capabilities", f"'{capability}' is not a capability; use {', '.join(CAPABILITIES)}"))
    return problems


def artifact_problems(configuration: Mapping[str, str], inputs: Sequence[str]) -> list[tuple[str, str]]:
    """Every artifact the configuration names is one of the action's input artifacts."""
    return [
        (key, f"names artifact '{name}', which is not an input artifact of the action (inputs: "
         f"{', '.join(inputs) or 'none'})")
        for key, name in referenced_artifacts(configuration)
        if "#{" not in name and name not in inputs
    ]  # fmt: skip


def _capabilities(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


def build_input(request: ActionRequest) -> CloudFormationInput:
    configuration, action = request.configuration, request.action
    template = configuration.get("TemplatePath")
    template_configuration = configuration.get("TemplateConfiguration")
    outputs = action.output_artifacts
    return CloudFormationInput(
        context=request.context,
        identity=request.aws_identity(),
        mode=configuration["ActionMode"].strip(),
        stack_name=configuration["StackName"],
        change_set_name=configuration.get("ChangeSetName") or None,
        template=artifact_path(template) if template else None,
        template_configuration=artifact_path(template_configuration) if template_configuration else None,
        parameter_overrides=configuration.get("ParameterOverrides") or None,
        capabilities=_capabilities(configuration.get("Capabilities")),
        role_arn=configuration.get("RoleArn") or None,
        output_file_name=configuration.get("OutputFileName") or None,
        output_artifact=outputs[0].name if outputs else None,
        input_artifacts={i.name: request.artifact(i.name) for i in action.input_artifacts},
        timeout_seconds=int(request.timeout.total_seconds()),
    )


def register_compensation(request: ActionRequest, activity_input: BaseModel, sequence: int) -> CompensationStep | None:
    """A stack-changing action is undone by restoring the snapshot it keeps (the stage adds the snapshot's store
    reference to the step once the action returns it, or fails carrying it; an abandoned action returns nothing, so
    the step also names where each attempt records its operation and snapshot)."""
    assert isinstance(activity_input, CloudFormationInput)
    if action_mode(activity_input.mode) not in CHANGING_MODES:
        return None
    retry = request.action.conveyor.retry
    last = max(activity_input.context.action_attempt, retry.maximum_attempts if retry else 1)
    target = CloudFormationCompensation(
        context=activity_input.context,
        identity=activity_input.identity,
        stack_name=activity_input.stack_name,
        role_arn=activity_input.role_arn,
        capabilities=activity_input.capabilities,
        attempt_records=[
            attempt_record(activity_input.context, n) for n in range(activity_input.context.action_attempt, last + 1)
        ],
        timeout_seconds=activity_input.timeout_seconds,
    )
    return provider_step(request, sequence, CONTRACT_NAME, target, activity_input.timeout_seconds)


def compensation_input(step: CompensationStep, context: ActionContext) -> CloudFormationCompensation:
    target = provider_target(step, CloudFormationCompensation)
    # The action's artifact stores: a restored template over the TemplateBody limit goes through its region's store.
    context = context.model_copy(update={"artifact_stores": target.context.artifact_stores})
    return target.model_copy(update={"context": context, "snapshots": list(step.input_artifacts)})


CLOUDFORMATION = ProviderContract(
    name=CONTRACT_NAME,
    summary=(
        "creates, updates, replaces or deletes the stack `StackName` (`ActionMode`), or prepares and executes the "
        "change set `ChangeSetName`, from `TemplatePath` with `TemplateConfiguration` and `ParameterOverrides`; "
        "stack outputs become output variables (and `OutputFileName`); no changes is a success; compensation puts "
        "the stack back (below)"
    ),
    categories=(ActionCategory.DEPLOY,),
    default_category=ActionCategory.DEPLOY,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("ActionMode", required=True),
        ConfigurationKey("StackName", required=True),
        ConfigurationKey("TemplatePath"),
        ConfigurationKey("TemplateConfiguration"),
        ConfigurationKey("ParameterOverrides"),
        ConfigurationKey("Capabilities"),
        ConfigurationKey("RoleArn"),
        ConfigurationKey("ChangeSetName"),
        ConfigurationKey("OutputFileName"),
    ),
    configuration_check=configuration_problems,
    artifact_check=artifact_problems,
    output_variables=OutputVariables.RUN_TIME,
    artifacts=ArtifactLimits(min_inputs=0, max_inputs=10, max_outputs=1),
    default_timeout=timedelta(hours=1),
    transient_errors=AWS_TRANSIENT,
    activity=ProviderActivity(
        name=ACTIVITY,
        input_type=CloudFormationInput,
        build_input=build_input,
        module=MODULE,
        timeout_margin=timedelta(minutes=5),  # the activity follows the stack for the action's timeout itself
    ),
    compensation=Compensation(
        activity=COMPENSATION_ACTIVITY,
        input_type=CloudFormationCompensation,
        register=register_compensation,
        build_input=compensation_input,
        timeout_margin=timedelta(minutes=5),
    ),
)
