"""The CloudFormation provider's template inputs on moto: a TemplateConfiguration's StackPolicy sent with CreateStack
and UpdateStack, and a template over CloudFormation's 51,200-byte TemplateBody limit passed as TemplateURL from the
S3 artifact store (refused, saying what to change, with a local store). What the engine sent is read from moto's
request recorder."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from conveyor.client import ConveyorClient
from conveyor.model import ExecutionStatus
from conveyor.settings import S3Location, Settings
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.aws_contract import MotoRecording
from tests.test_cloudformation import TEMPLATE, action, deploy_pipeline, finished, greeting

BUCKET = "cfn-store"
POLICY = {"Statement": [{"Effect": "Deny", "Action": "Update:Replace", "Principal": "*", "Resource": "*"}]}
BIG_TEMPLATE = TEMPLATE | {"Metadata": {"Padding": "x" * 60_000}}  # over 51,200 bytes


@pytest.fixture
def recording(aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoRecording]:
    found = MotoRecording(tmp_path / "moto-requests.jsonl").start(aws.post, monkeypatch)
    yield found
    found.stop(aws.post)


def worker_settings(settings: Settings, tmp_path: Path, **update: Any) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path / "data", "cloudformation_poll_seconds": 0.05} | update)


@pytest_asyncio.fixture
async def client(
    temporal_client: Client, settings: Settings, aws: Aws, tmp_path: Path
) -> AsyncIterator[ConveyorClient]:
    configured = worker_settings(settings, tmp_path)
    async with build_worker(temporal_client, configured):
        yield ConveyorClient(temporal_client, configured)


@pytest_asyncio.fixture
async def s3_client(
    temporal_client: Client, settings: Settings, aws: Aws, tmp_path: Path
) -> AsyncIterator[ConveyorClient]:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    configured = worker_settings(settings, tmp_path, artifact_store=S3Location(bucket=BUCKET, prefix="ci"))
    async with build_worker(temporal_client, configured):
        yield ConveyorClient(temporal_client, configured)


def with_configuration(tmp_path: Path, overrides: str, configuration: dict[str, Any]) -> dict[str, Any]:
    """deploy_pipeline with TemplateConfiguration Tpl::config.json holding `configuration`."""
    declaration = deploy_pipeline(tmp_path, overrides)
    (tmp_path / "config.json").write_text(json.dumps(configuration))
    declaration["stages"][1]["actions"][0]["configuration"]["TemplateConfiguration"] = "Tpl::config.json"
    return declaration


def with_template(tmp_path: Path, template: dict[str, Any]) -> dict[str, Any]:
    declaration = deploy_pipeline(tmp_path, '{"Greeting": "big"}')
    (tmp_path / "template.json").write_text(json.dumps(template))
    return declaration


async def test_the_template_configurations_stack_policy_is_sent_with_create_and_update(
    client: ConveyorClient, aws: Aws, recording: MotoRecording, tmp_path: Path
) -> None:
    configuration = {"Parameters": {"Greeting": "from-config"}, "StackPolicy": POLICY}
    created = await finished(client, with_configuration(tmp_path, '{"Greeting": "one"}', configuration))
    updated = await finished(client, with_configuration(tmp_path, '{"Greeting": "two"}', configuration))
    assert created.status == updated.status == ExecutionStatus.SUCCEEDED, updated.status_summary
    (create,) = recording.query_requests("CreateStack")
    (update,) = recording.query_requests("UpdateStack")
    assert json.loads(create["StackPolicyBody"]) == POLICY
    assert json.loads(update["StackPolicyBody"]) == POLICY
    assert greeting(aws) == "two"


async def test_a_stack_policy_that_is_not_a_policy_is_refused_naming_the_file(
    client: ConveyorClient, aws: Aws, tmp_path: Path
) -> None:
    state = await finished(client, with_configuration(tmp_path, '{"Greeting": "one"}', {"StackPolicy": "deny all"}))
    assert state.status == ExecutionStatus.FAILED
    error = action(state, "Deploy", "Stack").error
    assert error is not None
    assert "TemplateConfiguration: Tpl::config.json: StackPolicy must be a stack policy object" in error.message


async def test_a_template_over_the_template_body_limit_goes_through_template_url_from_the_s3_store(
    s3_client: ConveyorClient, aws: Aws, recording: MotoRecording, tmp_path: Path
) -> None:
    assert len(json.dumps(BIG_TEMPLATE)) > 51_200
    state = await finished(s3_client, with_template(tmp_path, BIG_TEMPLATE))
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert action(state, "Deploy", "Stack").summary == "stack app: created (2 outputs)"
    assert greeting(aws) == "big"
    (create,) = recording.query_requests("CreateStack")
    assert "TemplateBody" not in create
    url = create["TemplateURL"]
    assert url.startswith(f"https://{BUCKET}.s3.") and "/ci/templates/sha256/" in url
    key = url.split(".amazonaws.com/", 1)[1]
    stored = aws.client("s3").get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert json.loads(stored) == BIG_TEMPLATE


async def test_a_template_over_the_template_body_limit_with_a_local_store_is_refused_saying_what_to_change(
    client: ConveyorClient, aws: Aws, tmp_path: Path
) -> None:
    state = await finished(client, with_template(tmp_path, BIG_TEMPLATE))
    assert state.status == ExecutionStatus.FAILED
    error = action(state, "Deploy", "Stack").error
    assert error is not None
    assert "over CloudFormation's 51,200-byte TemplateBody limit" in error.message
    assert "set CONVEYOR_ARTIFACT_STORE=s3://bucket/prefix" in error.message
    assert aws.client("cloudformation").describe_stacks()["Stacks"] == []
