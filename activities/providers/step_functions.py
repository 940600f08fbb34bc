"""The StepFunctions provider's activity: StartExecution once per action attempt, then DescribeExecution until a
standard execution ends.

- One execution per attempt: the name comes from the attempt (conveyor.providers.step_functions.execution_name) and
  the input from the declaration or the input artifact, so a retried activity's StartExecution gets the same
  execution back (or ExecutionAlreadyExists, which names it too) and follows it. The execution's ARN is kept in the
  heartbeat details as well.
- A stop or an abandon (a cancellation through the heartbeat) calls StopExecution, then lets the cancellation through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import ClientError
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.running import action_workspace, write_action_log
from activities.aws.session import AwsSessions, aws_errors, refused
from conveyor.model import ActionOutcome, ArtifactRef, CamelModel
from conveyor.providers.step_functions import ACTIVITY, OUTPUT_FILE, InputType, StepFunctionsInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, replicate_for_action, store_for_outputs

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient
    from mypy_boto3_stepfunctions.type_defs import DescribeExecutionOutputTypeDef

HEARTBEAT_SECONDS = 2.0
RUNNING = "RUNNING"
FAILED_STATUSES = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})
MAX_INPUT_BYTES = 256 * 1024  # Step Functions' limit for an execution's input


class ExecutionHeartbeat(CamelModel):
    execution_arn: str


class StepFunctionsProvider:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)

    @activity.defn(name=ACTIVITY)
    async def step_functions(self, input: StepFunctionsInput) -> ActionOutcome:
        log = structlog.get_logger().bind(
            pipeline=input.context.pipeline_name, execution=input.context.execution_id,
            stage=input.context.stage_name, action=input.context.action_name,
        )  # fmt: skip
        client = await asyncio.to_thread(self._client, input)
        arn = _heartbeat_arn()
        if arn is None:
            arn, express = await self._start(client, input)
            log.info("step_functions.started", execution=arn, express=express)
        else:
            express = False  # only a standard execution is followed, so only it was heartbeated
            await self._log(input, [f"following execution {arn} (started by an earlier attempt)"])
        outputs = {"StateMachineArn": input.state_machine_arn, "ExecutionArn": arn}
        if express:
            await self._log(input, [f"started express execution {arn}"])
            return ActionOutcome(output_variables=outputs, summary=f"express execution {input.execution_name} started")
        beat = _Heartbeat(arn)
        beating = asyncio.create_task(beat.forever())
        try:
            execution = await self._follow(client, input, arn)
        except asyncio.CancelledError:
            log.warning("step_functions.cancelled", execution=arn)
            await asyncio.shield(self._stop(client, input, arn))
            raise
        finally:
            beating.cancel()
        status = execution["status"]
        await self._log(input, [f"execution {arn} {status}"])
        if status in FAILED_STATUSES:
            error, cause = execution.get("error"), execution.get("cause")
            detail = "".join([f": {error}" if error else "", f": {cause}" if cause else ""])
            raise ApplicationError(
                f"action '{input.context.action_name}': execution {input.execution_name} of {input.state_machine_arn} "
                f"{status}{detail}",
                type="ExecutionFailed",
                non_retryable=True,
            )
        artifacts = []
        if input.output_artifact:
            artifacts.append(await self._store_output(input, execution.get("output") or "null"))
        log.info("step_functions.succeeded", execution=arn)
        return ActionOutcome(
            output_variables=outputs,
            output_artifacts=artifacts,
            summary=f"execution {input.execution_name} succeeded",
        )

    # --- starting ---------------------------------------------------------------------------------------

    def _client(self, input: StepFunctionsInput) -> SFNClient:
        return self.sessions.client(input.identity, "stepfunctions", input.context.action_name)

    def _errors(self, input: StepFunctionsInput, call: str, target: str) -> contextlib.AbstractContextManager[None]:
        return aws_errors(input.context.action_name, call, self.sessions.role(input.identity), target=target)

    async def _start(self, client: SFNClient, input: StepFunctionsInput) -> tuple[str, bool]:
        """The attempt's execution: started, or (a retried activity) the one StartExecution already made."""
        execution_input = await self._execution_input(input)
        with self._errors(input, "states:DescribeStateMachine", input.state_machine_arn):
            machine = await asyncio.to_thread(client.describe_state_machine, stateMachineArn=input.state_machine_arn)
        express = machine.get("type") == "EXPRESS"
        # A cancellation arriving while StartExecution is on its way must not leave the execution running unseen.
        starting = asyncio.ensure_future(asyncio.to_thread(self._start_execution, client, input, execution_input))
        try:
            arn, already = await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                arn, _ = await starting
                if not express:
                    await self._stop(client, input, arn)
            raise
        word = "found" if already else "started"
        await self._log(input, [f"{word} execution {arn} of {input.state_machine_arn}"])
        return arn, express

    def _start_execution(self, client: SFNClient, input: StepFunctionsInput, execution_input: str) -> tuple[str, bool]:
        """(the execution's ARN, whether an earlier attempt had started it under this name)."""
        try:
            response = client.start_execution(
                stateMachineArn=input.state_machine_arn, name=input.execution_name, input=execution_input
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ExecutionAlreadyExists":
                return _execution_arn(input.state_machine_arn, input.execution_name), True
            with self._errors(input, "states:StartExecution", input.state_machine_arn):
                raise
        return response["executionArn"], False

    async def _execution_input(self, input: StepFunctionsInput) -> str:
        action = input.context.action_name
        if input.input_type == InputType.LITERAL:
            return input.input or "{}"
        if input.input_artifact is None or not input.input:
            raise refused(f"action '{action}': InputType FilePath reads Input as a path in the input artifact: "
                           "give the action one input artifact and Input a path in it")  # fmt: skip
        async with action_workspace(self.settings, input.context) as workspace:
            return await asyncio.to_thread(self._read_input_file, input, input.input_artifact, input.input, workspace)

    def _read_input_file(self, input: StepFunctionsInput, ref: ArtifactRef, path: str, workspace: Path) -> str:
        action = input.context.action_name
        root = workspace / "input"
        try:
            ref = replicate_for_action(self.store, ref, input.context.artifact_stores)  # the action region's copy
            self.store.extract(ref, root)
        except ArtifactError as exc:
            raise refused(f"action '{action}': {exc}", "ArtifactError") from None
        file = (root / path).resolve()
        if not file.is_relative_to(root.resolve()) or not file.is_file():
            raise refused(f"action '{action}': Input '{path}' is not a file in input artifact '{ref.name}'")
        if file.stat().st_size > MAX_INPUT_BYTES:
            raise refused(f"action '{action}': Input '{path}' is over Step Functions' 256 KB input limit")
        text = file.read_text(encoding="utf-8", errors="replace")
        try:
            json.loads(text)
        except json.JSONDecodeError as err:
            raise refused(
                f"action '{action}': Input '{path}' of artifact '{ref.name}' is not JSON "
                f"({err.msg} at line {err.lineno})"
            ) from None
        return text

    # --- following, stopping ------------------------------------------------------------------------------

    async def _follow(self, client: SFNClient, input: StepFunctionsInput, arn: str) -> DescribeExecutionOutputTypeDef:
        while True:
            with self._errors(input, "states:DescribeExecution", arn):
                execution = await asyncio.to_thread(client.describe_execution, executionArn=arn)
            if execution["status"] != RUNNING and execution["status"] != "PENDING_REDRIVE":
                return execution
            await asyncio.sleep(self.settings.step_functions_poll_seconds)

    async def _stop(self, client: SFNClient, input: StepFunctionsInput, arn: str) -> None:
        """StopExecution; a failure is logged, never raised: the cancellation goes on either way."""
        try:
            with self._errors(input, "states:StopExecution", arn):
                await asyncio.to_thread(
                    client.stop_execution, executionArn=arn, error="Conveyor.Stopped", cause="the action was stopped"
                )
            await self._log(input, [f"stopped execution {arn}"])
        except ApplicationError as exc:
            structlog.get_logger().warning("step_functions.stop_failed", execution=arn, error=str(exc))

    # --- output -------------------------------------------------------------------------------------------

    async def _store_output(self, input: StepFunctionsInput, output: str) -> ArtifactRef:
        assert input.output_artifact is not None
        name = input.output_artifact
        async with action_workspace(self.settings, input.context) as workspace:
            (workspace / OUTPUT_FILE).write_text(output, encoding="utf-8")
            try:
                target = store_for_outputs(self.store, input.context.artifact_stores)
                return await asyncio.to_thread(target.put, name, workspace, [OUTPUT_FILE])
            except ArtifactError as exc:
                raise refused(f"output artifact '{name}': {exc}", "ArtifactError") from None

    async def _log(self, input: StepFunctionsInput, lines: list[str]) -> None:
        await asyncio.to_thread(write_action_log, self.settings, input.context, lines)


def _execution_arn(machine_arn: str, name: str) -> str:
    """`arn:aws:states:<region>:<account>:execution:<machine>:<name>` (a version or alias qualifier dropped)."""
    parts = machine_arn.split(":")
    return ":".join([*parts[:5], "execution", parts[6], name])


def _heartbeat_arn() -> str | None:
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        return ExecutionHeartbeat.model_validate(details[0]).execution_arn
    except ValidationError:
        return None


class _Heartbeat:
    def __init__(self, arn: str) -> None:
        self.details = [ExecutionHeartbeat(execution_arn=arn).model_dump(mode="json", by_alias=True)]
        activity.heartbeat(*self.details)

    async def forever(self) -> None:
        timeout = activity.info().heartbeat_timeout
        interval = (
            HEARTBEAT_SECONDS if timeout is None else max(0.1, min(HEARTBEAT_SECONDS, timeout.total_seconds() / 3))
        )
        while True:
            activity.heartbeat(*self.details)
            await asyncio.sleep(interval)


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the StepFunctions contract (conveyor.providers.step_functions)."""
    return [StepFunctionsProvider(settings, store).step_functions]
