"""The CloudFormation provider against a real worker and moto's CloudFormation (resources really created): every
ActionMode, outputs as variables, no-change success, change set + Manual approval + execute with the changes shown,
compensation restoring the previous parameters or deleting a created stack, and validation messages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.client import Client

from conveyor.client import ConveyorClient
from conveyor.model import ActionState, ExecutionState, ExecutionStatus
from conveyor.providers.cloudformation import client_request_token
from conveyor.settings import Settings
from conveyor.spec import validate_pipeline
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.helpers import pipeline, waiting_token

TEMPLATE = {
    "Parameters": {"Greeting": {"Type": "String", "Default": "hello"}},
    "Resources": {
        "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": "cfn-site"}},
        "Setting": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {"Name": "/app/greeting", "Type": "String", "Value": {"Ref": "Greeting"}},
        },
        "Queue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "cfn-jobs"}},
    },
    "Outputs": {
        "BucketName": {"Value": {"Ref": "Bucket"}},
        "GreetingValue": {"Value": {"Ref": "Greeting"}},
    },
}


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path / "data", "cloudformation_poll_seconds": 0.05})


@pytest_asyncio.fixture
async def client(temporal_client: Client, worker_settings: Settings, aws: Aws) -> AsyncIterator[ConveyorClient]:
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


def source_stage(tmp_path: Path, template: dict[str, Any] | None = None) -> str:
    """A Source stage whose Commands action packs the template (and a parameters file) as artifact Tpl."""
    (tmp_path / "template.json").write_text(json.dumps(template or TEMPLATE))
    (tmp_path / "params.json").write_text(json.dumps({"Greeting": "from-file"}))
    (tmp_path / "config.json").write_text(json.dumps({"Parameters": {"Greeting": "from-config"}}))
    return f"""
  - name: Source
    actions:
      - name: Pack
        provider: Commands
        commands: ["cp {tmp_path}/template.json {tmp_path}/params.json {tmp_path}/config.json ."]
        outputArtifacts: [{{name: Tpl, files: ["*.json"]}}]
"""


async def finished(client: ConveyorClient, declaration: dict[str, Any], **kwargs: Any) -> ExecutionState:
    ref, _ = await client.start(declaration, **kwargs)
    return await asyncio.wait_for(client.wait(ref, interval=0.2), 60)


def action(state: ExecutionState, stage: str, name: str) -> ActionState:
    found = state.stage(stage)
    assert found is not None
    return next(a for a in found.actions if a.action_name == name)


def greeting(aws: Aws) -> str:
    return str(aws.client("ssm").get_parameter(Name="/app/greeting")["Parameter"]["Value"])


def deploy_pipeline(tmp_path: Path, overrides: str, *, then: str = "") -> dict[str, Any]:
    return pipeline(
        f"""
name: cfn
variables: [{{name: Greeting, defaultValue: hi}}]
stages:
{source_stage(tmp_path)}
  - name: Deploy
    onFailure: {{result: ROLLBACK}}
    actions:
      - name: Stack
        provider: CloudFormation
        namespace: StackOut
        configuration:
          ActionMode: CREATE_UPDATE
          StackName: app
          TemplatePath: Tpl::template.json
          ParameterOverrides: '{overrides}'
          Capabilities: CAPABILITY_IAM,CAPABILITY_AUTO_EXPAND
          OutputFileName: outputs.json
        inputArtifacts: [{{name: Tpl}}]
        outputArtifacts: [{{name: Out}}]
      - name: Use
        provider: Commands
        runOrder: 2
        commands:
          - test '#{{StackOut.BucketName}}' = cfn-site
          - grep -q '"GreetingValue"' outputs.json
          {then}
        inputArtifacts: [{{name: Out}}]
"""
    )


async def test_create_update_creates_outputs_are_variables_no_change_succeeds_and_a_parameter_change_updates(
    client: ConveyorClient, aws: Aws, tmp_path: Path
) -> None:
    declaration = deploy_pipeline(tmp_path, '{"Greeting": "#{variables.Greeting}"}')
    first = await finished(client, declaration)
    assert first.status == ExecutionStatus.SUCCEEDED, first.status_summary
    stack = action(first, "Deploy", "Stack")
    assert stack.summary == "stack app: created (2 outputs)"
    assert stack.output_variables == {"BucketName": "cfn-site", "GreetingValue": "hi"}
    assert greeting(aws) == "hi"
    aws.client("s3").head_bucket(Bucket="cfn-site")
    assert aws.client("sqs").get_queue_url(QueueName="cfn-jobs")["QueueUrl"]

    again = await finished(client, declaration)
    assert again.status == ExecutionStatus.SUCCEEDED, again.status_summary
    assert action(again, "Deploy", "Stack").summary == "stack app: no changes (2 outputs)"

    changed = await finished(client, declaration, variables={"Greeting": "bonjour"})
    assert changed.status == ExecutionStatus.SUCCEEDED, changed.status_summary
    assert action(changed, "Deploy", "Stack").summary == "stack app: updated (2 outputs)"
    assert greeting(aws) == "bonjour"


async def test_parameter_precedence_overrides_over_template_configuration_and_get_param(
    client: ConveyorClient, aws: Aws, tmp_path: Path
) -> None:
    declaration = deploy_pipeline(tmp_path, "{}")
    stack = declaration["stages"][1]["actions"][0]
    stack["configuration"]["TemplateConfiguration"] = "Tpl::config.json"
    state = await finished(client, declaration)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert greeting(aws) == "from-config"  # TemplateConfiguration over the template's default
    stack["configuration"]["ParameterOverrides"] = '{"Greeting": {"Fn::GetParam": ["Tpl", "params.json", "Greeting"]}}'
    state = await finished(client, declaration)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert greeting(aws) == "from-file"  # ParameterOverrides (Fn::GetParam) over TemplateConfiguration


async def test_delete_only_deletes_and_succeeds_when_the_stack_is_absent(
    client: ConveyorClient, aws: Aws, tmp_path: Path
) -> None:
    cfn = aws.client("cloudformation")
    cfn.create_stack(StackName="gone", TemplateBody=json.dumps(TEMPLATE))
    declaration = pipeline(
        """
name: cfn-delete
stages:
  - name: Teardown
    actions:
      - name: Delete
        provider: CloudFormation
        configuration: {ActionMode: DELETE_ONLY, StackName: gone}
"""
    )
    state = await finished(client, declaration)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert action(state, "Teardown", "Delete").summary == "deleted stack gone"
    assert all(s["StackName"] != "gone" for s in cfn.describe_stacks()["Stacks"])
    assert aws.client("sqs").list_queues().get("QueueUrls") is None  # its resources went with it
    state = await finished(client, declaration)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert action(state, "Teardown", "Delete").summary == "stack gone does not exist: nothing to delete"


CHANGE_SET = """
name: cfn-changeset
variables: [{{name: Greeting, defaultValue: hi}}]
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
          ParameterOverrides: '{{"Greeting": "#{{variables.Greeting}}"}}'
        inputArtifacts: [{{name: Tpl}}]
      - name: Gate
        provider: Manual
        runOrder: 2
      - name: Apply
        provider: CloudFormation
        runOrder: 3
        namespace: Applied
        configuration: {{ActionMode: CHANGE_SET_EXECUTE, StackName: app, ChangeSetName: release}}
"""


async def test_change_set_then_approval_showing_its_changes_then_execute(
    client: ConveyorClient, aws: Aws, tmp_path: Path
) -> None:
    declaration = pipeline(CHANGE_SET.format(source=source_stage(tmp_path)))
    ref, _ = await client.start(declaration)
    token = await waiting_token(client, ref)
    state = await client.state(ref)
    gate = action(state, "Prod", "Gate")
    assert gate.approval_request is not None
    (review,) = gate.approval_request.reviews
    assert review.startswith("Plan: change set release of stack app: 3 change(s): ")
    assert "Add Bucket (AWS::S3::Bucket)" in review and "Add Setting (AWS::SSM::Parameter)" in review
    assert action(state, "Prod", "Plan").summary == review.removeprefix("Plan: ")
    with pytest.raises(Exception):  # noqa: B017 - nothing is deployed before the approval
        greeting(aws)
    await client.decide(ref, "Prod", "Gate", approve=True, token=token, by="alice")
    final = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    # moto computes no Outputs for a stack made by a change set: the outputs are checked with CREATE_UPDATE.
    assert action(final, "Prod", "Apply").summary == "change set release of stack app: executed"
    assert greeting(aws) == "hi"

    # The same template and parameters again: the change set has no changes, and executing it is a success.
    ref, _ = await client.start(declaration)
    token = await waiting_token(client, ref)
    gate = action(await client.state(ref), "Prod", "Gate")
    assert gate.approval_request is not None
    assert gate.approval_request.reviews == ["Plan: change set release of stack app: no changes"]
    await client.decide(ref, "Prod", "Gate", approve=True, token=token, by="alice")
    final = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    assert action(final, "Prod", "Apply").summary.startswith("change set release of stack app")
    assert "no changes" in action(final, "Prod", "Apply").summary


async def test_compensation_restores_the_previous_parameters_and_deletes_a_created_stack(
    client: ConveyorClient, aws: Aws, tmp_path: Path
) -> None:
    cfn = aws.client("cloudformation")
    failing = deploy_pipeline(tmp_path, '{"Greeting": "#{variables.Greeting}"}', then="- exit 1")
    # A first release: the stack is created, a later action fails, the compensation deletes the stack.
    state = await finished(client, failing)
    assert state.status == ExecutionStatus.FAILED
    stack = action(state, "Deploy", "Stack")
    assert stack.compensation is not None and stack.compensation.status == "Succeeded"
    assert all(s["StackName"] != "app" for s in cfn.describe_stacks()["Stacks"])

    # An existing stack: updated, then put back to the parameters it had.
    cfn.create_stack(
        StackName="app",
        TemplateBody=json.dumps(TEMPLATE),
        Parameters=[{"ParameterKey": "Greeting", "ParameterValue": "before"}],
    )
    state = await finished(client, failing, variables={"Greeting": "after"})
    assert state.status == ExecutionStatus.FAILED
    stack = action(state, "Deploy", "Stack")
    assert stack.summary == "stack app: updated (2 outputs)"
    assert stack.compensation is not None and stack.compensation.status == "Succeeded"
    assert greeting(aws) == "before"
    (params,) = cfn.describe_stacks(StackName="app")["Stacks"][0]["Parameters"]
    assert params["ParameterValue"] == "before"


def test_client_request_token_fits_cloudformation_and_is_per_attempt() -> None:
    from conveyor.model import ActionContext

    context = ActionContext(pipeline_name="p", execution_id="e" * 200, stage_name="S", action_name="A")
    token = client_request_token(context, "UPDATE")
    assert len(token) <= 128 and token[0].isalpha() and all(c.isalnum() or c == "-" for c in token)
    assert token == client_request_token(context, "UPDATE")
    assert token != client_request_token(context.model_copy(update={"action_attempt": 2}), "UPDATE")
    assert token != client_request_token(context, "CREATE")


@pytest.mark.parametrize(
    ("configuration", "inputs", "message"),
    [
        (
            {"ActionMode": "CREATE_UPDATE", "StackName": "s"},
            [],
            "TemplatePath is required with ActionMode CREATE_UPDATE",
        ),
        (
            {"ActionMode": "CHANGE_SET_EXECUTE", "StackName": "s"},
            [],
            "ChangeSetName is required with ActionMode CHANGE_SET_EXECUTE",
        ),
        ({"ActionMode": "UPSERT", "StackName": "s"}, [], "'UPSERT' is not an action mode"),
        (
            {"ActionMode": "CREATE_UPDATE", "StackName": "s", "TemplatePath": "template.yaml"},
            [],
            "'template.yaml' is not Artifact::path",
        ),
        (
            {"ActionMode": "CREATE_UPDATE", "StackName": "s", "TemplatePath": "Other::t.yaml"},
            ["Tpl"],
            "TemplatePath names artifact 'Other', which is not an input artifact of the action (inputs: Tpl)",
        ),
        (
            {"ActionMode": "DELETE_ONLY", "StackName": "s", "ParameterOverrides": "{Greeting: hi}"},
            [],
            "configuration.ParameterOverrides: provider 'CloudFormation': ParameterOverrides is not JSON",
        ),
        (
            {"ActionMode": "DELETE_ONLY", "StackName": "s", "Capabilities": "CAPABILITY_IAM,IAM"},
            [],
            "'IAM' is not a capability",
        ),
    ],
)
def test_validation_of_the_configuration(configuration: dict[str, str], inputs: list[str], message: str) -> None:
    declaration = {
        "name": "cfn-bad",
        "stages": [
            {
                "name": "Source",
                "actions": [
                    {
                        "name": "Pack",
                        "provider": "Commands",
                        "commands": ["true"],
                        "outputArtifacts": [{"name": "Tpl"}, {"name": "Other2"}],
                    }
                ],
            },
            {
                "name": "Deploy",
                "actions": [
                    {
                        "name": "Stack",
                        "provider": "CloudFormation",
                        "configuration": configuration,
                        "inputArtifacts": [{"name": name} for name in inputs],
                    }
                ],
            },
        ],
    }
    report = validate_pipeline(declaration)
    rendered = [e.render("p") for e in report.errors]
    assert any(message in line for line in rendered), rendered
    assert not any("Traceback" in line for line in rendered)


EXAMPLE = Path(__file__).parent.parent / "examples" / "cloudformation-changeset" / "pipeline.yaml"


async def test_the_shipped_change_set_example_runs_against_moto(client: ConveyorClient, aws: Aws) -> None:
    declaration = yaml.safe_load(EXAMPLE.read_text())
    declaration["name"] = f"{declaration['name']}-{uuid.uuid4().hex[:8]}"  # executions of tests never shared
    assert validate_pipeline(declaration).ok
    ref, _ = await client.start(declaration)
    token = await waiting_token(client, ref, "Release", "Review")
    review = action(await client.state(ref), "Release", "Review").approval_request
    assert review is not None and "Add Queue (AWS::SQS::Queue)" in review.reviews[0]
    await client.decide(ref, "Release", "Review", approve=True, token=token, by="alice")
    final = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    value = aws.client("ssm").get_parameter(Name="/example/environment")["Parameter"]["Value"]
    assert value == "staging"
