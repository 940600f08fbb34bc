"""Cross-region artifacts: a pipeline with artifactStores in two regions; an action in the second region reads an
artifact made in the first (replicated by digest into the second region's bucket) and writes its output there."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from temporalio.client import Client

from conveyor.client import ConveyorClient
from conveyor.model import ArtifactLocation, ExecutionStatus
from conveyor.settings import Settings
from conveyor.spec import validate_pipeline
from conveyor.stores.artifacts import replicate_for_action, store_from_settings
from conveyor.worker import build_worker
from tests.aws import ACCOUNT, Aws
from tests.helpers import pipeline

EAST, WEST = "us-east-1", "us-west-2"


def declaration(machine_arn: str, west: str = WEST) -> dict[str, Any]:
    return pipeline(
        f"""
name: regions-{uuid.uuid4().hex[:8]}
artifactStores:
  {EAST}: {{type: S3, location: artifacts-east}}
  {WEST}: {{type: S3, location: artifacts-west}}
stages:
  - name: Source
    actions:
      - name: Make
        provider: Commands
        commands: ["echo '{{\\"ok\\": true}}' > in.json"]
        outputArtifacts: [{{name: In, files: [in.json]}}]
  - name: Invoke
    actions:
      - name: Run
        provider: StepFunctions
        region: {west}
        configuration: {{StateMachineArn: '{machine_arn}', InputType: FilePath, Input: in.json}}
        inputArtifacts: [{{name: In}}]
        outputArtifacts: [{{name: Out}}]
"""
    )


@pytest_asyncio.fixture
async def client(temporal_client: Client, settings: Settings, tmp_path: Path) -> AsyncIterator[ConveyorClient]:
    worker_settings = settings.model_copy(
        update={"data_dir": tmp_path / "data", "aws": True, "step_functions_poll_seconds": 0.1}
    )
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


def _keys(s3: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


async def test_an_action_in_another_region_reads_a_replicated_input_and_writes_its_output_there(
    client: ConveyorClient, aws: Aws
) -> None:
    aws.post("/moto-api/config", json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode())
    aws.client("s3", region=EAST).create_bucket(Bucket="artifacts-east")
    west_s3 = aws.client("s3", region=WEST)
    west_s3.create_bucket(Bucket="artifacts-west", CreateBucketConfiguration={"LocationConstraint": WEST})
    definition = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Result": "done", "ResultPath": "$.r", "End": True}}}
    west_sfn = aws.client("stepfunctions", region=WEST)
    arn = west_sfn.create_state_machine(
        name="regional", definition=json.dumps(definition), roleArn=f"arn:aws:iam::{ACCOUNT}:role/states"
    )["stateMachineArn"]
    assert f":{WEST}:" in arn

    ref, _ = await client.start(declaration(arn))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary

    source, invoke = state.stage("Source"), state.stage("Invoke")
    assert source is not None and invoke is not None
    (made,) = source.actions[0].output_artifacts
    assert made.location.startswith("s3://artifacts-east/")  # made in the worker's (first) region
    digest_key = made.location.removeprefix("s3://artifacts-east/")
    assert digest_key in _keys(west_s3, "artifacts-west")  # replicated by digest before the action read it
    (out,) = invoke.actions[0].output_artifacts
    assert out.location.startswith("s3://artifacts-west/")  # the output went to the action region's store
    (execution,) = west_sfn.list_executions(stateMachineArn=arn)["executions"]
    assert json.loads(west_sfn.describe_execution(executionArn=execution["executionArn"])["input"]) == {"ok": True}


def test_replication_copies_once_and_returns_the_regional_copy(aws: Aws, settings: Settings, tmp_path: Path) -> None:
    aws.client("s3", region=EAST).create_bucket(Bucket="artifacts-east")
    west_s3 = aws.client("s3", region=WEST)
    west_s3.create_bucket(Bucket="artifacts-west", CreateBucketConfiguration={"LocationConstraint": WEST})
    store = store_from_settings(settings.model_copy(update={"data_dir": tmp_path / "data", "aws": True}))
    east = ArtifactLocation(bucket="artifacts-east", region=EAST)
    west = ArtifactLocation(bucket="artifacts-west", region=WEST)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    made = store.for_outputs([east]).put("A", tmp_path / "src", ["a.txt"])
    copy = replicate_for_action(store, made, [west])
    assert copy.digest == made.digest and copy.location == made.location.replace("artifacts-east", "artifacts-west")
    before = west_s3.head_object(Bucket="artifacts-west", Key=copy.location.removeprefix("s3://artifacts-west/"))
    again = replicate_for_action(store, made, [west])  # a retried action: found there, not copied again
    after = west_s3.head_object(Bucket="artifacts-west", Key=copy.location.removeprefix("s3://artifacts-west/"))
    assert again == copy and before["LastModified"] == after["LastModified"] and before["ETag"] == after["ETag"]
    assert replicate_for_action(store, copy, [west]) == copy  # already in the action's store
    store.extract(copy, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_text() == "a"


def test_an_action_region_without_an_artifact_store_is_refused_naming_it() -> None:
    report = validate_pipeline(declaration("arn:aws:states:eu-west-1:123456789012:stateMachine:m", west="eu-west-1"))
    found = [(i.path, i.message) for i in report.errors]
    assert any(
        path.endswith("actions[0].region") and "region 'eu-west-1' has no entry in artifactStores" in message
        for path, message in found
    ), found
