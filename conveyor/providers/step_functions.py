"""The StepFunctions invoke provider: starts an execution of a state machine and, for a standard machine, follows it
to its end (its output becomes the output artifact's file); an express machine succeeds once started.

One action attempt is one execution: its name is `ExecutionNamePrefix` + a suffix derived from the attempt, so a
retried activity on another worker asks StartExecution again with the same name and input, which Step Functions
answers with the same execution (its own idempotency for standard machines), and follows it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum

from conveyor.aws.identity import AwsIdentity
from conveyor.interface import ActionCategory, ActionOwner
from conveyor.model import ActionContext, ArtifactRef, CamelModel
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    ConfigurationKey,
    ProviderActivity,
    ProviderContract,
)

ACTIVITY = "step_functions"
MODULE = "activities.providers.step_functions"
# The file of the output artifact holding a standard execution's output (JSON).
OUTPUT_FILE = "output.json"
# Step Functions' execution names: 1 to 80 characters, none of whitespace, brackets, wildcards, these specials or
# control characters. The suffix is a UUID (36 characters), as CodePipeline's action execution id is.
NAME_LIMIT = 80
SUFFIX_LENGTH = 36
PREFIX_LIMIT = NAME_LIMIT - SUFFIX_LENGTH
_NAME_FORBIDDEN = re.compile(r"[\s<>{}\[\]?*\"#%\\^|~`$&,;:/\x00-\x1f\x7f-\x9f]")
_ARN = re.compile(r"^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:stateMachine:[A-Za-z0-9_.-]+(:[A-Za-z0-9_.$-]+)?$")
_SUFFIX_NAMESPACE = uuid.UUID("6a4f0d2e-0f53-4c59-9d1c-2b1f7a6c9e35")


class InputType(StrEnum):
    LITERAL = "Literal"  # `Input` is the execution's input (JSON)
    FILE_PATH = "FilePath"  # `Input` is a path in the input artifact, whose content is the execution's input


class StepFunctionsInput(CamelModel):
    context: ActionContext
    identity: AwsIdentity
    state_machine_arn: str
    execution_name: str  # prefix + the attempt's suffix
    input_type: InputType = InputType.LITERAL
    input: str | None = None  # the JSON (Literal) or the path in the input artifact (FilePath)
    input_artifact: ArtifactRef | None = None
    output_artifact: str | None = None  # its name; a standard execution's output is written to OUTPUT_FILE in it


def execution_name(prefix: str | None, context: ActionContext) -> str:
    """`<prefix><uuid>`: the UUID is derived from the action attempt, so every activity of the attempt asks for the
    same execution."""
    suffix = uuid.uuid5(_SUFFIX_NAMESPACE, f"{context.idempotency_key}/{context.action_attempt}")
    return f"{prefix or ''}{suffix}"


def build_input(request: ActionRequest) -> StepFunctionsInput:
    configuration, action = request.configuration, request.action
    inputs = action.input_artifacts
    outputs = action.output_artifacts
    return StepFunctionsInput(
        context=request.context,
        identity=request.aws_identity(),
        state_machine_arn=configuration["StateMachineArn"],
        execution_name=execution_name(configuration.get("ExecutionNamePrefix"), request.context),
        input_type=InputType(configuration.get("InputType") or InputType.LITERAL),
        input=configuration.get("Input"),
        input_artifact=request.artifact(inputs[0].name) if inputs else None,
        output_artifact=outputs[0].name if outputs else None,
    )


def configuration_problems(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    """InputType's values, Input as JSON when Literal (a path when FilePath), the ARN's and prefix's forms."""
    problems: list[tuple[str, str]] = []
    arn = configuration.get("StateMachineArn", "")
    if arn and "#{" not in arn and not _ARN.match(arn):
        problems.append(
            (
                "StateMachineArn",
                f"'{arn}' is not a state machine ARN (arn:aws:states:<region>:<account>:stateMachine:<name>)",
            )
        )
    prefix = configuration.get("ExecutionNamePrefix", "")
    if prefix and "#{" not in prefix:
        if len(prefix) > PREFIX_LIMIT:
            problems.append(("ExecutionNamePrefix", f"is {len(prefix)} characters; at most {PREFIX_LIMIT} fit"))
        if _NAME_FORBIDDEN.search(prefix):
            problems.append(
                ("ExecutionNamePrefix", "has a character Step Functions refuses in a name (a space, a bracket, one of "
                 "? * \" # % \\ ^ | ~ ` $ & , ; : /)")
            )  # fmt: skip
    kind = configuration.get("InputType") or InputType.LITERAL.value
    if kind not in (InputType.LITERAL.value, InputType.FILE_PATH.value):
        problems.append(("InputType", f"'{kind}': use Literal (Input is the JSON) or FilePath (a path in the input)"))
        return problems
    value = configuration.get("Input")
    if kind == InputType.FILE_PATH.value:
        if not value:
            problems.append(("Input", "is required when InputType is FilePath: a path in the input artifact"))
    elif value and "#{" not in value:
        try:
            json.loads(value)
        except json.JSONDecodeError as err:
            problems.append(("Input", f"is not JSON ({err.msg} at character {err.pos}); InputType Literal takes JSON"))
    return problems


STEP_FUNCTIONS = ProviderContract(
    name="StepFunctions",
    summary=(
        "starts an execution of `StateMachineArn` named `ExecutionNamePrefix` + a UUID of the action attempt (a "
        "retried attempt follows the same execution), with `Input` (InputType Literal: JSON) or the content of that "
        "path of the input artifact (FilePath); a standard machine is followed to its end (its output is "
        f"`{OUTPUT_FILE}` of the output artifact; FAILED, TIMED_OUT, ABORTED fail the action with the error and "
        "cause), an express one succeeds once started; stopping the action stops the execution; outputs {variables}"
    ),
    categories=(ActionCategory.INVOKE,),
    default_category=ActionCategory.INVOKE,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("StateMachineArn", required=True),
        ConfigurationKey("ExecutionNamePrefix"),
        ConfigurationKey("InputType"),
        ConfigurationKey("Input"),
    ),
    configuration_check=configuration_problems,
    fixed_outputs=("StateMachineArn", "ExecutionArn"),
    artifacts=ArtifactLimits(min_inputs=0, max_inputs=1, max_outputs=1),
    default_timeout=timedelta(hours=1),
    transient_errors=frozenset({"AwsUnavailable"}),
    activity=ProviderActivity(
        name=ACTIVITY,
        input_type=StepFunctionsInput,
        build_input=build_input,
        module=MODULE,
    ),
)
