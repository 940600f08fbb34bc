"""The StepFunctions provider against moto's state machine interpreter (real executions, no scripting): a standard
machine's output in the output artifact, a Fail state's error and cause, an express machine, FilePath input, a stop,
a worker SIGKILLed while the machine runs, validation, and cross-account through the action's roleArn."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
from temporalio.client import Client

from conveyor.client import ConveyorClient
from conveyor.model import ActionState, ExecutionState, ExecutionStatus
from conveyor.providers.step_functions import execution_name
from conveyor.settings import Settings
from conveyor.spec import validate_pipeline
from conveyor.stores.artifacts import store_from_settings
from conveyor.worker import build_worker
from tests.aws import ACCOUNT, REGION, Aws
from tests.helpers import pipeline
from tests.test_durability import start_worker_process, wait_for

ROLE = f"arn:aws:iam::{ACCOUNT}:role/states"
CHOICE = {
    "StartAt": "Check",
    "States": {
        "Check": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.ok", "BooleanEquals": True, "Next": "Done"}],
            "Default": "Refuse",
        },
        "Done": {"Type": "Pass", "Result": {"released": True}, "ResultPath": "$.result", "End": True},
        "Refuse": {"Type": "Fail", "Error": "Release.NotOk", "Cause": "ok was false"},
    },
}
SLOW = {
    "StartAt": "Wait",
    "States": {"Wait": {"Type": "Wait", "Seconds": 4, "Next": "Done"}, "Done": {"Type": "Pass", "End": True}},
}
DECLARATION = """
name: sfn-{suffix}
conveyor: {{heartbeatTimeoutSeconds: 2}}
stages:
  - name: Source
    actions:
      - name: Make
        provider: Commands
        commands: ["echo '{{\\"ok\\": true, \\"from\\": \\"file\\"}}' > in.json"]
        outputArtifacts: [{{name: In, files: [in.json]}}]
  - name: Invoke
    actions:
      - name: Run
        provider: StepFunctions
        namespace: Sfn
        configuration: {configuration}
        inputArtifacts: [{{name: In}}]
        outputArtifacts: [{{name: Out}}]
{extra}
"""
POLL_SECONDS = 0.1


def declaration(configuration: dict[str, str], extra: str = "", **action: Any) -> dict[str, Any]:
    data = pipeline(
        DECLARATION.format(suffix=uuid.uuid4().hex[:8], configuration=json.dumps(configuration), extra=extra)
    )
    data["stages"][1]["actions"][0].update(action)
    return data


@pytest.fixture
def sfn(aws: Aws) -> Any:
    aws.post("/moto-api/config", json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode())
    return aws.client("stepfunctions")


def machine(sfn: Any, definition: dict[str, Any], type: str = "STANDARD") -> str:
    name = f"m-{uuid.uuid4().hex[:8]}"
    arn: str = sfn.create_state_machine(name=name, definition=json.dumps(definition), roleArn=ROLE, type=type)[
        "stateMachineArn"
    ]
    return arn


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path / "data", "step_functions_poll_seconds": POLL_SECONDS})


@pytest_asyncio.fixture
async def client(temporal_client: Client, worker_settings: Settings) -> AsyncIterator[ConveyorClient]:
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


def run_action(state: ExecutionState) -> ActionState:
    stage = state.stage("Invoke")
    assert stage is not None
    return stage.actions[0]


async def test_a_standard_machine_succeeds_and_its_output_is_the_output_artifact(
    client: ConveyorClient, sfn: Any, worker_settings: Settings
) -> None:
    arn = machine(sfn, CHOICE)
    ref, _ = await client.start(
        declaration({"StateMachineArn": arn, "ExecutionNamePrefix": "release-", "Input": '{"ok": true}'})
    )
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    described = sfn.describe_execution(executionArn=execution["executionArn"])
    # What the engine sent: the attempt's name and the literal input.
    context = run_action(state)
    expected_name = str(execution_name("release-", _context(ref.pipeline_name, ref.execution_id)))
    assert described["name"] == expected_name and expected_name.startswith("release-")
    assert json.loads(described["input"]) == {"ok": True}
    assert context.output_variables == {"StateMachineArn": arn, "ExecutionArn": execution["executionArn"]}
    (out,) = context.output_artifacts
    target = worker_settings.data_dir / "out"
    store_from_settings(worker_settings).extract(out, target)
    assert json.loads((target / "output.json").read_text()) == {"ok": True, "result": {"released": True}}


def _context(pipeline_name: str, execution_id: str) -> Any:
    from conveyor.model import ActionContext

    return ActionContext(
        pipeline_name=pipeline_name, execution_id=execution_id, stage_name="Invoke", action_name="Run", stage_attempt=1
    )


async def test_a_fail_state_fails_the_action_with_its_error_and_cause(client: ConveyorClient, sfn: Any) -> None:
    arn = machine(sfn, CHOICE)
    ref, _ = await client.start(declaration({"StateMachineArn": arn, "Input": '{"ok": false}'}))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    error = run_action(state).error
    assert error is not None
    assert "FAILED: Release.NotOk: ok was false" in error.message, error.message
    assert len(sfn.list_executions(stateMachineArn=arn)["executions"]) == 1  # a failed execution is not retried


async def test_an_express_machine_succeeds_once_started_and_file_path_input_is_read_from_the_artifact(
    client: ConveyorClient, sfn: Any
) -> None:
    arn = machine(sfn, {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}, type="EXPRESS")
    ref, _ = await client.start(
        declaration({"StateMachineArn": arn, "InputType": "FilePath", "Input": "in.json"}, outputArtifacts=[])
    )
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    action = run_action(state)
    assert action.output_variables["StateMachineArn"] == arn
    assert (
        ":execution:" in action.output_variables["ExecutionArn"]
        or ":express:" in action.output_variables["ExecutionArn"]
    )
    assert action.summary is not None and "express execution" in action.summary


async def test_file_path_input_reaches_a_standard_execution(client: ConveyorClient, sfn: Any) -> None:
    arn = machine(sfn, CHOICE)
    ref, _ = await client.start(declaration({"StateMachineArn": arn, "InputType": "FilePath", "Input": "in.json"}))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (execution,) = sfn.list_executions(stateMachineArn=arn)["executions"]
    sent = sfn.describe_execution(executionArn=execution["executionArn"])["input"]
    assert json.loads(sent) == {"ok": True, "from": "file"}


async def test_stopping_the_action_stops_the_execution(client: ConveyorClient, sfn: Any) -> None:
    arn = machine(sfn, SLOW)
    ref, _ = await client.start(declaration({"StateMachineArn": arn}))
    await wait_for(lambda: _executions(sfn, arn, "RUNNING") == 1, 30, "the execution to start")
    await client.stop(ref, reason="enough", abandon=True)
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status in (ExecutionStatus.STOPPED, ExecutionStatus.CANCELLED), state.status
    await wait_for(lambda: _executions(sfn, arn, "ABORTED") == 1, 10, "StopExecution")


def _executions(sfn: Any, arn: str, status: str) -> int:
    return sum(1 for e in sfn.list_executions(stateMachineArn=arn)["executions"] if e["status"] == status)


async def test_a_worker_killed_while_the_machine_runs_is_followed_by_one_that_follows_the_same_execution(
    temporal_client: Client,
    worker_settings: Settings,
    sfn: Any,
    aws: Aws,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in aws.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONVEYOR_STEP_FUNCTIONS_POLL_SECONDS", str(POLL_SECONDS))
    arn = machine(sfn, SLOW)
    client = ConveyorClient(temporal_client, worker_settings)
    first = start_worker_process(worker_settings, tmp_path / "worker1.log")
    try:
        ref, _ = await client.start(declaration({"StateMachineArn": arn}))
        await wait_for(lambda: _executions(sfn, arn, "RUNNING") == 1, 60, "the execution to start")
        first.kill()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    second = start_worker_process(worker_settings, tmp_path / "worker2.log")
    try:
        state = await asyncio.wait_for(client.wait(ref), 90)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    executions = sfn.list_executions(stateMachineArn=arn)["executions"]
    assert len(executions) == 1, executions  # StartExecution effective once
    assert run_action(state).output_variables["ExecutionArn"] == executions[0]["executionArn"]
    log = (worker_settings.logs_dir / ref.pipeline_name / ref.execution_id / "Invoke" / "Run.log").read_text()
    # The new worker followed the execution from the heartbeat, or (no beat yet) got it back from StartExecution.
    arn_started = executions[0]["executionArn"]
    assert f"following execution {arn_started}" in log or f"found execution {arn_started}" in log, log


async def test_an_action_with_a_role_arn_acts_in_the_roles_account(client: ConveyorClient, sfn: Any, aws: Aws) -> None:
    """Cross-account: moto routes the calls made with the assumed role's credentials to the role's account, so the
    execution lands in account B's machine (which account A does not have)."""
    other = "222222222222"
    role = f"arn:aws:iam::{other}:role/deployer"
    creds = aws.client("sts").assume_role(RoleArn=role, RoleSessionName="setup")["Credentials"]
    in_b = boto3.client(
        "stepfunctions",
        region_name=REGION,
        endpoint_url=aws.endpoint,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    arn = in_b.create_state_machine(name="b-machine", definition=json.dumps(CHOICE), roleArn=role)["stateMachineArn"]
    assert f":{other}:" in arn
    ref, _ = await client.start(declaration({"StateMachineArn": arn, "Input": '{"ok": true}'}, roleArn=role))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert len(in_b.list_executions(stateMachineArn=arn)["executions"]) == 1
    assert sfn.list_state_machines()["stateMachines"] == []  # nothing in the worker's own account


@pytest.mark.parametrize(
    ("configuration", "problem"),
    [
        ({"InputType": "Json"}, ("InputType", "InputType 'Json': use Literal")),
        ({"Input": "{not json"}, ("Input", "Input is not JSON")),
        ({"InputType": "FilePath"}, ("Input", "Input is required when InputType is FilePath")),
        ({"ExecutionNamePrefix": "a b"}, ("ExecutionNamePrefix", "ExecutionNamePrefix has a character")),
        ({"StateMachineArn": "my-machine"}, ("StateMachineArn", "'my-machine' is not a state machine ARN")),
    ],
)
def test_validation_names_the_key_and_what_to_change(configuration: dict[str, str], problem: tuple[str, str]) -> None:
    arn = f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:m"
    report = validate_pipeline(declaration({"StateMachineArn": arn} | configuration))
    key, message = problem
    found = [(i.path, i.message) for i in report.errors]
    assert any(path.endswith(f"configuration.{key}") and message in text for path, text in found), found
