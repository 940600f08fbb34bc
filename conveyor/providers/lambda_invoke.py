"""The Lambda invoke provider (Invoke) and the input of the `LambdaInvoke` condition rule's activity.

Two modes, chosen with Conveyor's own configuration key `ConveyorMode`:
- `job` (the default, CodePipeline's): the function is invoked asynchronously with a `CodePipeline.job` event and
  the action waits until the function calls PutJobSuccessResult or PutJobFailureResult, which `conveyor serve`
  answers on its job listener (conveyor.service.jobs); a continuation token invokes the function again;
- `plain`: a synchronous invoke; the function's answer is the result (a JSON object's scalar values become output
  variables) and a function error fails the action with its message.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum

from pydantic import Field

from conveyor.aws.identity import AwsIdentity
from conveyor.interface import ActionCategory, ActionOwner
from conveyor.model import ActionContext, ArtifactRef, CamelModel
from conveyor.providers.contract import (
    ActionRequest,
    ArtifactLimits,
    ConfigurationKey,
    OutputVariables,
    ProviderActivity,
    ProviderContract,
)

ACTIVITY = "lambda_invoke"
RULE_ACTIVITY = "lambda_invoke_rule"  # the LambdaInvoke condition rule's (conveyor.interface.Activity names it too)
MODULE = "activities.providers.lambda_invoke"
MODE_KEY = "ConveyorMode"
# The activity ends a job-mode wait at the action's timeout itself (a clear message, the job closed); Temporal's
# start-to-close, this much later, only catches a lost worker.
TIMEOUT_MARGIN = timedelta(minutes=1)


class InvokeMode(StrEnum):
    JOB = "job"  # CodePipeline's: asynchronous, the function reports with PutJob*Result
    PLAIN = "plain"  # synchronous: the answer is the result


class LambdaInvokeInput(CamelModel):
    context: ActionContext
    identity: AwsIdentity
    function_name: str
    user_parameters: str | None = None
    mode: InvokeMode = InvokeMode.JOB
    timeout_seconds: float = 24 * 3600  # the action's timeout, measured from its activity's first schedule
    input_artifacts: list[ArtifactRef] = Field(default_factory=list)
    output_artifacts: list[str] = Field(default_factory=list)


class LambdaRuleInput(CamelModel):
    """The LambdaInvoke rule: a synchronous invoke whose answer passes or fails the rule."""

    context: ActionContext
    identity: AwsIdentity
    function_name: str
    user_parameters: str | None = None


class LambdaRuleAnswer(CamelModel):
    passed: bool
    summary: str


def build_input(request: ActionRequest) -> LambdaInvokeInput:
    configuration, action = request.configuration, request.action
    return LambdaInvokeInput(
        context=request.context,
        identity=request.aws_identity(),
        function_name=configuration["FunctionName"],
        user_parameters=configuration.get("UserParameters"),
        mode=InvokeMode((configuration.get(MODE_KEY) or InvokeMode.JOB.value).lower()),
        timeout_seconds=request.timeout.total_seconds(),
        input_artifacts=[request.artifact(i.name) for i in action.input_artifacts],
        output_artifacts=[o.name for o in action.output_artifacts],
    )


def configuration_problems(configuration: Mapping[str, str]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    mode = configuration.get(MODE_KEY)
    if mode is not None and "#{" not in mode and mode.lower() not in set(InvokeMode):
        problems.append((MODE_KEY, f"'{mode}' is not a mode; use job (PutJob*Result, the default) or plain"))
    function = configuration.get("FunctionName", "")
    if function != function.strip() or (function and any(c.isspace() for c in function)):
        problems.append(("FunctionName", f"'{function}' has spaces; give the function's name or ARN"))
    return problems


LAMBDA = ProviderContract(
    name="Lambda",
    summary=(
        "invokes `FunctionName` with CodePipeline's `CodePipeline.job` event (`UserParameters`, input and output "
        "artifacts); `ConveyorMode` job (the default) waits for the function's PutJobSuccessResult or "
        "PutJobFailureResult, answered by `conveyor serve`'s job listener (output variables, summary, continuation "
        "tokens); plain invokes synchronously and takes the answer's JSON object as output variables"
    ),
    categories=(ActionCategory.INVOKE,),
    default_category=ActionCategory.INVOKE,
    owner=ActionOwner.AWS,
    configuration=(
        ConfigurationKey("FunctionName", required=True),
        ConfigurationKey("UserParameters"),
        ConfigurationKey(MODE_KEY),
    ),
    configuration_check=configuration_problems,
    output_variables=OutputVariables.RUN_TIME,
    artifacts=ArtifactLimits(min_inputs=0, max_inputs=5, max_outputs=5),
    default_timeout=timedelta(hours=24),  # CodePipeline's for Lambda
    transient_errors=frozenset({"AwsUnavailable"}),
    activity=ProviderActivity(
        name=ACTIVITY,
        input_type=LambdaInvokeInput,
        build_input=build_input,
        module=MODULE,
        timeout_margin=TIMEOUT_MARGIN,
    ),
)
