"""The Commands provider: runs the action's `commands` in one bash process in a fresh workspace."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from conveyor.interface import ActionCategory, ActionOwner
from conveyor.model import ActionContext, CommandsInput, CompensationStep, OutputArtifactSpec
from conveyor.providers.contract import (
    ActionRequest,
    Compensation,
    OutputVariables,
    ProviderActivity,
    ProviderContract,
)

CONTRACT_NAME = "Commands"
ACTIVITY = "run_commands"  # also what a Commands condition rule runs
# The activity enforces the action's own timeout; Temporal's, a minute later, only catches a lost worker.
MARGIN = timedelta(minutes=1)


def build_input(request: ActionRequest) -> CommandsInput:
    action = request.action
    return CommandsInput(
        context=request.context,
        commands=[request.resolve(c) for c in action.commands or []],
        environment={e.name: request.resolve(e.value) for e in action.environment_variables},
        pass_environment=list(action.conveyor.pass_environment),
        input_artifacts=[request.artifact(i.name) for i in action.input_artifacts],
        output_artifacts=[OutputArtifactSpec(name=o.name, files=o.files or ["**/*"]) for o in action.output_artifacts],
        output_variables=list(action.output_variables),
        timeout_seconds=int(request.timeout.total_seconds()),
    )


def rollback_step(request: ActionRequest, activity_input: BaseModel, sequence: int) -> CompensationStep | None:
    """The action's `conveyor.rollback` commands, run like the action: same environment and inputs."""
    action = request.action
    if not action.conveyor.rollback:
        return None
    assert isinstance(activity_input, CommandsInput)
    return CompensationStep(
        stage_name=request.context.stage_name,
        action_name=action.name,
        sequence=sequence,
        commands=[request.resolve(c) for c in action.conveyor.rollback],
        environment=activity_input.environment,
        pass_environment=activity_input.pass_environment,
        input_artifacts=activity_input.input_artifacts,
        timeout_seconds=activity_input.timeout_seconds,
        provider=CONTRACT_NAME,
    )


def rollback_input(step: CompensationStep, context: ActionContext) -> CommandsInput:
    return CommandsInput(
        context=context,
        commands=step.commands,
        environment=step.environment,
        pass_environment=step.pass_environment,
        input_artifacts=step.input_artifacts,
        timeout_seconds=step.timeout_seconds,
    )


COMMANDS = ProviderContract(
    name=CONTRACT_NAME,
    summary="runs `commands` in one bash process in a fresh workspace (below)",
    categories=(ActionCategory.COMPUTE, ActionCategory.BUILD, ActionCategory.TEST, ActionCategory.DEPLOY),
    default_category=ActionCategory.COMPUTE,
    owner=ActionOwner.AWS,
    configuration=(),
    needs_commands=True,
    output_variables=OutputVariables.DYNAMIC,
    default_timeout=timedelta(minutes=55),
    transient_errors=frozenset({"CommandFailed"}),
    activity=ProviderActivity(
        name=ACTIVITY,
        input_type=CommandsInput,
        build_input=build_input,
        module="activities.providers.commands",
        timeout_margin=MARGIN,
    ),
    compensation=Compensation(
        activity=ACTIVITY,
        input_type=CommandsInput,
        register=rollback_step,
        build_input=rollback_input,
        timeout_margin=MARGIN,
        takes_rollback_commands=True,
    ),
)
