"""The CloudFormation provider where moto cannot answer as CloudFormation does (contract tests, scripted only in
tests/aws_contract.py): a change set without changes, rollback states naming the failed resource, the compensation
of a failed action, a worker SIGKILLed mid stack update; and what the engine sent, read from moto's request recorder.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client

from conveyor.client import ConveyorClient
from conveyor.gc import GcKind, collect_garbage
from conveyor.model import ActionContext, ActionStatus, ArtifactRef, ExecutionState, ExecutionStatus
from conveyor.providers.cloudformation import client_request_token
from conveyor.settings import Settings
from conveyor.stores.artifacts import LocalArtifactStore
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.aws_contract import CloudFormationAnswerHold, CloudFormationScript, MotoRecording, ResourceFailure
from tests.helpers import pipeline, waiting_token
from tests.test_cloudformation import TEMPLATE, action, deploy_pipeline, finished, greeting, source_stage
from tests.test_durability import start_worker_process, wait_for
from tests.test_gc import age

POLL_SECONDS = 0.05


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path / "data", "cloudformation_poll_seconds": POLL_SECONDS})


@pytest.fixture
def cfn(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> CloudFormationScript:
    return CloudFormationScript().install(monkeypatch)


@pytest_asyncio.fixture
async def client(temporal_client: Client, worker_settings: Settings, aws: Aws) -> AsyncIterator[ConveyorClient]:
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


@pytest.fixture
def recording(aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoRecording]:
    found = MotoRecording(tmp_path / "moto-requests.jsonl").start(aws.post, monkeypatch)
    yield found
    found.stop(aws.post)


def existing_stack(aws: Aws, greeting_value: str) -> None:
    aws.client("cloudformation").create_stack(
        StackName="app",
        TemplateBody=json.dumps(TEMPLATE),
        Parameters=[{"ParameterKey": "Greeting", "ParameterValue": greeting_value}],
    )


def stack_status(aws: Aws) -> str | None:
    stacks = aws.client("cloudformation").describe_stacks()["Stacks"]
    return next((str(s["StackStatus"]) for s in stacks if s["StackName"] == "app"), None)


def error_message(state: ExecutionState, stage: str, name: str) -> str:
    error = action(state, stage, name).error
    assert error is not None
    return error.message


# --- a change set without changes --------------------------------------------------------------------------------


PLAN_AND_APPLY = """
name: cfn-noop
stages:
{source}
  - name: Prod
    actions:
      - name: Plan
        provider: CloudFormation
        configuration:
          ActionMode: CHANGE_SET_REPLACE
          StackName: app
          ChangeSetName: release
          TemplatePath: Tpl::template.json
          ParameterOverrides: '{{"Greeting": "same"}}'
        inputArtifacts: [{{name: Tpl}}]
      - name: Apply
        provider: CloudFormation
        runOrder: 2
        configuration: {{ActionMode: CHANGE_SET_EXECUTE, StackName: app, ChangeSetName: release}}
"""


async def test_contract_test_a_change_set_without_changes_succeeds_and_its_execute_executes_nothing(
    client: ConveyorClient, aws: Aws, cfn: CloudFormationScript, tmp_path: Path
) -> None:
    """Contract test: CloudFormation answers a change set that changes nothing with status FAILED and "The submitted
    information didn't contain changes" (moto lists every resource as Add): CHANGE_SET_REPLACE succeeds with "no
    changes" and CHANGE_SET_EXECUTE succeeds without calling ExecuteChangeSet."""
    existing_stack(aws, "same")
    cfn.no_changes = True
    state = await finished(client, pipeline(PLAN_AND_APPLY.format(source=source_stage(tmp_path))))
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert action(state, "Prod", "Plan").summary == "change set release of stack app: no changes"
    assert action(state, "Prod", "Apply").summary == "change set release of stack app: no changes (2 outputs)"
    assert cfn.count("create_change_set") == 1
    assert cfn.count("execute_change_set") == 0 and cfn.count("update_stack") == 0
    assert greeting(aws) == "same"


# --- rollback states, and the compensation of the failed action --------------------------------------------------


async def test_contract_test_a_create_ending_rollback_complete_names_the_resource_and_is_deleted_by_compensation(
    client: ConveyorClient, aws: Aws, cfn: CloudFormationScript, tmp_path: Path
) -> None:
    """Contract test: a create ends ROLLBACK_COMPLETE with a CREATE_FAILED event: the action fails naming the resource
    and CloudFormation's reason, and the compensation deletes the stack this attempt created (left in
    ROLLBACK_COMPLETE, which CloudFormation can neither update nor create again)."""
    cfn.fail_create = ResourceFailure("Queue", "AWS::SQS::Queue", "Resource handler returned message: cfn-jobs exists")
    state = await finished(client, deploy_pipeline(tmp_path, '{"Greeting": "hi"}'))
    assert state.status == ExecutionStatus.FAILED
    assert (
        "CREATE of stack app ended ROLLBACK_COMPLETE: first failed resource Queue (AWS::SQS::Queue) CREATE_FAILED: "
        "Resource handler returned message: cfn-jobs exists"
    ) in error_message(state, "Deploy", "Stack")
    stack = action(state, "Deploy", "Stack")
    assert stack.compensation is not None and stack.compensation.status == "Succeeded"
    assert stack_status(aws) is None  # deleted by the compensation
    assert cfn.count("create_stack") == 1 and cfn.count("delete_stack") == 1


async def test_contract_test_an_update_ending_update_rollback_complete_names_the_resource_and_changes_nothing_more(
    client: ConveyorClient, aws: Aws, cfn: CloudFormationScript, tmp_path: Path
) -> None:
    """Contract test: an update ends UPDATE_ROLLBACK_COMPLETE with an UPDATE_FAILED event: the action fails naming the
    resource and reason; the compensation finds the stack back at its saved template and parameters (CloudFormation
    rolled it back) and makes no call of its own."""
    existing_stack(aws, "before")
    cfn.fail_update = ResourceFailure("Setting", "AWS::SSM::Parameter", "Parameter /app/greeting is not writable")
    state = await finished(client, deploy_pipeline(tmp_path, '{"Greeting": "after"}'))
    assert state.status == ExecutionStatus.FAILED
    assert (
        "UPDATE of stack app ended UPDATE_ROLLBACK_COMPLETE: first failed resource Setting (AWS::SSM::Parameter) "
        "UPDATE_FAILED: Parameter /app/greeting is not writable"
    ) in error_message(state, "Deploy", "Stack")
    stack = action(state, "Deploy", "Stack")
    assert stack.compensation is not None and stack.compensation.status == "Succeeded"
    assert len(stack.compensation_artifacts) == 1  # the saved state reached the failed action's state
    assert cfn.count("update_stack") == 1  # the action's; the compensation found nothing to restore
    assert stack_status(aws) == "UPDATE_ROLLBACK_COMPLETE" and greeting(aws) == "before"


# --- a worker SIGKILLed mid stack update -------------------------------------------------------------------------


SIGKILL_DEPLOY = """
name: cfn-kill
conveyor:
  heartbeatTimeoutSeconds: 2
stages:
{source}
  - name: Deploy
    actions:
      - name: Stack
        provider: CloudFormation
        configuration:
          ActionMode: CREATE_UPDATE
          StackName: app
          TemplatePath: Tpl::template.json
          ParameterOverrides: '{{"Greeting": "after"}}'
          Capabilities: CAPABILITY_IAM
        inputArtifacts: [{{name: Tpl}}]
"""


async def test_contract_test_a_worker_killed_mid_stack_update_is_followed_by_the_next_one_update_called_once(
    temporal_client: Client,
    worker_settings: Settings,
    cfn: CloudFormationScript,
    aws: Aws,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Contract test: the update stays UPDATE_IN_PROGRESS; the worker is SIGKILLed once its heartbeat holds the
    operation; the next worker follows the same operation to UPDATE_COMPLETE: UpdateStack served once, with the
    token of the action attempt."""
    for name, value in aws.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONVEYOR_AWS", "true")
    monkeypatch.setenv("CONVEYOR_CLOUDFORMATION_POLL_SECONDS", str(POLL_SECONDS))
    existing_stack(aws, "before")
    cfn.hold_updates = True
    client = ConveyorClient(temporal_client, worker_settings)
    first = start_worker_process(worker_settings, tmp_path / "worker1.log")
    try:
        ref, _ = await client.start(pipeline(SIGKILL_DEPLOY.format(source=source_stage(tmp_path))))
        await wait_for(lambda: cfn.count("update_stack") == 1, 60, "UpdateStack to be served")
        await _operation_in_heartbeat(temporal_client, f"{ref.pipeline_name}/{ref.execution_id}/Deploy")
        first.kill()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert stack_status(aws) == "UPDATE_IN_PROGRESS"
    cfn.release.set()
    second = start_worker_process(worker_settings, tmp_path / "worker2.log")
    try:
        state = await asyncio.wait_for(client.wait(ref), 90)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert action(state, "Deploy", "Stack").summary == "stack app: updated (2 outputs)"
    context = ActionContext(
        pipeline_name=ref.pipeline_name, execution_id=ref.execution_id, stage_name="Deploy", action_name="Stack"
    )
    assert [call for call in cfn.calls if call[0] == "update_stack"] == [
        ("update_stack", client_request_token(context, "UPDATE"))
    ]
    log = (worker_settings.logs_dir / ref.pipeline_name / ref.execution_id / "Deploy" / "Stack.log").read_text()
    assert "following UPDATE of stack app started by an earlier attempt" in log
    assert greeting(aws) == "after"


async def _operation_in_heartbeat(temporal_client: Client, stage_workflow_id: str) -> None:
    """Until the server holds the activity's heartbeat details (the operation it started)."""
    handle = temporal_client.get_workflow_handle(stage_workflow_id)
    for _ in range(100):
        pending = (await handle.describe()).raw_description.pending_activities
        if pending and pending[0].heartbeat_details.payloads:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the stack operation never reached the activity's heartbeat")


# --- what the engine sent ----------------------------------------------------------------------------------------

ROLE = "arn:aws:iam::123456789012:role/cfn-deployer"


async def test_the_requests_carry_the_attempt_token_parameters_capabilities_and_role(
    client: ConveyorClient, aws: Aws, recording: MotoRecording, tmp_path: Path
) -> None:
    """Read from moto's request recorder (moto stores neither Capabilities nor the token): CreateStack, UpdateStack
    and CreateChangeSet carry the ClientRequestToken of the action attempt, the parameters, the Capabilities and the
    service role."""
    declaration = deploy_pipeline(tmp_path, '{"Greeting": "#{variables.Greeting}"}')
    declaration["stages"][1]["actions"][0]["configuration"]["RoleArn"] = ROLE
    created = await finished(client, declaration, variables={"Greeting": "one"})
    updated = await finished(client, declaration, variables={"Greeting": "two"})
    assert created.status == updated.status == ExecutionStatus.SUCCEEDED, updated.status_summary
    plan = pipeline(PLAN_AND_APPLY.format(source=source_stage(tmp_path)))
    plan["stages"][1]["actions"][0]["configuration"] |= {"RoleArn": ROLE, "Capabilities": "CAPABILITY_NAMED_IAM"}
    planned = await finished(client, plan)
    assert planned.status == ExecutionStatus.SUCCEEDED, planned.status_summary

    def context(state: ExecutionState, stage: str, name: str) -> ActionContext:
        return ActionContext(
            pipeline_name=state.pipeline_name, execution_id=state.execution_id, stage_name=stage, action_name=name
        )

    (create,) = recording.query_requests("CreateStack")
    (update,) = recording.query_requests("UpdateStack")
    (change_set,) = recording.query_requests("CreateChangeSet")
    assert create["ClientRequestToken"] == client_request_token(context(created, "Deploy", "Stack"), "CREATE")
    assert update["ClientRequestToken"] == client_request_token(context(updated, "Deploy", "Stack"), "UPDATE")
    assert change_set["ClientToken"] == client_request_token(context(planned, "Prod", "Plan"), "CHANGESET")
    for sent, value in ((create, "one"), (update, "two"), (change_set, "same")):
        assert sent["RoleARN"] == ROLE
        assert sent["Parameters.member.1.ParameterKey"] == "Greeting"
        assert sent["Parameters.member.1.ParameterValue"] == value
        assert "Parameters.member.2.ParameterKey" not in sent
    assert [create["Capabilities.member.1"], create["Capabilities.member.2"]] == [
        "CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"
    ]  # fmt: skip
    assert update["Capabilities.member.1"] == "CAPABILITY_IAM" and "Capabilities.member.3" not in update
    assert change_set["Capabilities.member.1"] == "CAPABILITY_NAMED_IAM"


# --- garbage collection keeps the saved stack state of an open execution -----------------------------------------

GATED_DEPLOY = """
name: cfn-gc
stages:
{source}
  - name: Deploy
    actions:
      - name: Stack
        provider: CloudFormation
        configuration:
          ActionMode: CREATE_UPDATE
          StackName: app
          TemplatePath: Tpl::template.json
          ParameterOverrides: '{{"Greeting": "after"}}'
        inputArtifacts: [{{name: Tpl}}]
      - name: Gate
        provider: Manual
        runOrder: 2
"""


async def test_garbage_collection_keeps_the_saved_stack_state_while_the_execution_may_compensate(
    client: ConveyorClient, aws: Aws, temporal_client: Client, worker_settings: Settings, tmp_path: Path
) -> None:
    """The stack's saved state (for the compensation) is named by the action's state, so an execution waiting at an
    approval keeps it however old it is; an unnamed artifact as old goes."""
    existing_stack(aws, "before")
    ref, _ = await client.start(pipeline(GATED_DEPLOY.format(source=source_stage(tmp_path))))
    await waiting_token(client, ref, "Deploy", "Gate")
    (saved,) = action(await client.state(ref), "Deploy", "Stack").compensation_artifacts
    store = LocalArtifactStore(worker_settings.artifacts_dir)
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "a.txt").write_text("nobody uses this")
    unused = store.put("orphan", orphan, ["a.txt"]).digest
    age(worker_settings.artifacts_dir)
    report = await collect_garbage(temporal_client, worker_settings, store)
    swept = {item.name for item in report.removed if item.kind == GcKind.ARTIFACT}
    assert unused in swept and saved.digest not in swept
    assert store.path_for(saved.digest).is_file()


async def test_a_long_operation_keeps_its_saved_stack_state_in_use(
    client: ConveyorClient,
    aws: Aws,
    cfn: CloudFormationScript,
    worker_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Contract test: while an update stays UPDATE_IN_PROGRESS (no state names the saved state yet), the action
    refreshes the saved state's last use, so garbage collection's minimum age never passes under it."""
    import zipfile

    monkeypatch.setattr("activities.providers.cloudformation.SNAPSHOT_TOUCH_SECONDS", 0.0)
    existing_stack(aws, "before")
    cfn.hold_updates = True
    ref, _ = await client.start(deploy_pipeline(tmp_path, '{"Greeting": "after"}'))
    await wait_for(lambda: cfn.count("update_stack") == 1, 60, "UpdateStack to be served")
    age(worker_settings.artifacts_dir)
    await asyncio.sleep(1)
    old = time.time() - 3600
    refreshed = [p for p in worker_settings.artifacts_dir.rglob("*.zip") if p.stat().st_mtime > old]
    assert [zipfile.ZipFile(p).namelist() for p in refreshed] == [["stack.json"]]
    cfn.release.set()
    state = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary


# --- a worker killed right after its call, before a heartbeat carried the operation ------------------------------


def saved_greeting(store_dir: Path, ref: ArtifactRef, tmp_path: Path) -> str:
    """The Greeting parameter in a saved stack state (what the compensation restores)."""
    where = tmp_path / f"saved-{ref.digest[7:19]}"
    LocalArtifactStore(store_dir).extract(ref, where)
    return str(json.loads((where / "stack.json").read_text())["parameters"]["Greeting"])


async def test_contract_test_a_worker_killed_right_after_update_stack_answered_is_followed_by_the_next_one(
    temporal_client: Client,
    worker_settings: Settings,
    aws: Aws,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Contract test: moto serves UpdateStack (the update runs, held UPDATE_IN_PROGRESS) but its answer is held; the
    worker is SIGKILLed before any heartbeat carried the operation. The next worker finds the operation the attempt
    recorded before the call, follows it (not "stack busy", then "no changes"): UpdateStack served once, the summary
    "updated", the saved state (the stack as it was) kept for the compensation."""
    cfn = CloudFormationAnswerHold(hold_updates=True, hold_answers={"update_stack"}).install(monkeypatch)
    for name, value in aws.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONVEYOR_AWS", "true")
    monkeypatch.setenv("CONVEYOR_CLOUDFORMATION_POLL_SECONDS", str(POLL_SECONDS))
    existing_stack(aws, "before")
    client = ConveyorClient(temporal_client, worker_settings)
    first = start_worker_process(worker_settings, tmp_path / "worker1.log")
    try:
        ref, _ = await client.start(pipeline(SIGKILL_DEPLOY.format(source=source_stage(tmp_path))))
        await wait_for(cfn.answer_held.is_set, 60, "UpdateStack to be served, its answer held")
        first.kill()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        cfn.answer.set()  # moto's thread answers the dead worker's connection
    assert stack_status(aws) == "UPDATE_IN_PROGRESS"
    second = start_worker_process(worker_settings, tmp_path / "worker2.log")
    try:
        await asyncio.sleep(3)  # the retried activity meets the stack still busy with the first one's update
        cfn.release.set()
        state = await asyncio.wait_for(client.wait(ref), 90)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    stack = action(state, "Deploy", "Stack")
    assert stack.summary == "stack app: updated (2 outputs)"
    context = ActionContext(
        pipeline_name=ref.pipeline_name, execution_id=ref.execution_id, stage_name="Deploy", action_name="Stack"
    )
    assert [call for call in cfn.calls if call[0] == "update_stack"] == [
        ("update_stack", client_request_token(context, "UPDATE"))
    ]
    (saved,) = stack.compensation_artifacts
    assert saved_greeting(worker_settings.artifacts_dir, saved, tmp_path) == "before"
    log = (worker_settings.logs_dir / ref.pipeline_name / ref.execution_id / "Deploy" / "Stack.log").read_text()
    assert "following UPDATE of stack app recorded by an earlier activity of this attempt" in log
    assert greeting(aws) == "after"


# --- an action abandoned mid-operation is compensated ------------------------------------------------------------


async def test_contract_test_an_action_abandoned_mid_update_is_compensated_from_the_state_it_recorded(
    client: ConveyorClient, aws: Aws, cfn: CloudFormationScript, tmp_path: Path
) -> None:
    """Contract test: the update stays UPDATE_IN_PROGRESS and the execution is stopped with abandon. The stage rolls
    back on failure and this is its first release, so the rollback rule compensates: the compensation reads the
    saved state from where the attempt recorded it before its call (the cancelled activity returned nothing), waits
    for the running update to end and puts the stack back."""
    existing_stack(aws, "before")
    cfn.hold_updates = True
    ref, _ = await client.start(deploy_pipeline(tmp_path, '{"Greeting": "after"}'))
    await wait_for(lambda: cfn.count("update_stack") == 1, 60, "UpdateStack to be served")
    await client.stop(ref, reason="wrong release", abandon=True)

    for _ in range(300):  # the update ends only once the action is abandoned: the compensation waits for it
        if action(await client.state(ref), "Deploy", "Stack").status == ActionStatus.ABANDONED:
            break
        await asyncio.sleep(0.1)
    cfn.release.set()
    state = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    assert state.status == ExecutionStatus.STOPPED, state.status_summary
    stack = action(state, "Deploy", "Stack")
    assert stack.status == ActionStatus.ABANDONED
    assert stack.compensation_artifacts == []  # nothing reached the workflow
    assert stack.compensation is not None and stack.compensation.status == "Succeeded"
    assert cfn.count("update_stack") == 2  # the action's, then the compensation's
    assert greeting(aws) == "before"
