"""AWS providers in real executions: S3 source -> S3 deploy into a second account through the pipeline's roleArn
(a worker configured for AWS), the credentials of that role nowhere in histories, memo, logs or status; and
polling S3 by object version and ECR by image digest through the poll schedule."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from conveyor.aws.identity import session_name
from conveyor.client import ConveyorClient
from conveyor.devserver import EmbeddedServer
from conveyor.interface import stage_workflow_id
from conveyor.model import ExecutionStatus, TriggerType
from conveyor.settings import Settings
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.aws_contract import assumed_role_credentials
from tests.test_cli import cli_env
from tests.test_cli import conveyor as cli
from tests.test_ecr_source import push

SECOND_ACCOUNT = "111111111111"
DEPLOYER = f"arn:aws:iam::{SECOND_ACCOUNT}:role/deployer"


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def versioned_bucket(aws: Aws, name: str) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def s3_pipeline(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "stages": [
            {
                "name": "Source",
                "actions": [
                    {
                        "name": "Fetch",
                        "provider": "S3",
                        "configuration": {"S3Bucket": "releases", "S3ObjectKey": "site.zip"},
                        "outputArtifacts": [{"name": "Site"}],
                        "namespace": "Src",
                    }
                ],
            },
            {
                "name": "Prod",
                "actions": [
                    {
                        "name": "Publish",
                        "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1"},
                        "configuration": {
                            "BucketName": "second-site",
                            "Extract": "true",
                            "ObjectKey": "#{Src.VersionId}",
                        },
                        "inputArtifacts": [{"name": "Site"}],
                    }
                ],
            },
        ],
    } | extra


async def test_an_execution_assumes_the_pipelines_role_and_keeps_its_credentials_out_of_every_record(
    aws: Aws, temporal_client: Client, conveyor: ConveyorClient, settings: Settings, server: EmbeddedServer
) -> None:
    versioned_bucket(aws, "releases")
    version = aws.client("s3").put_object(Bucket="releases", Key="site.zip", Body=zip_bytes({"index.html": "hi"}))
    aws.client("s3").create_bucket(Bucket="second-site")
    declaration = s3_pipeline("aws-roles", roleArn=DEPLOYER)
    async with build_worker(temporal_client, settings.model_copy(update={"aws": True})):
        ref, _ = await conveyor.start(declaration)
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    keys = [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket="second-site")["Contents"]]
    assert keys == [f"{version['VersionId']}/index.html"]
    assumed = assumed_role_credentials(SECOND_ACCOUNT)
    # Both actions ran as the pipeline's role, under the execution's session name (assumed once: cached).
    assert {entry[0] for entry in assumed} == {session_name("aws-roles", ref.execution_id)}
    secrets = {value for entry in assumed for value in entry[1:]}

    records: list[str] = []
    for workflow_id in (
        ref.workflow_id,
        *(stage_workflow_id("aws-roles", ref.execution_id, s) for s in ("Source", "Prod")),
    ):
        handle = temporal_client.get_workflow_handle(workflow_id)
        records.append((await handle.fetch_history()).to_json())
        description = await handle.describe()
        records.append(str(description.raw_description.workflow_execution_info.memo))
        records.append(json.dumps(await description.memo(), default=str))
    records += [path.read_text() for path in (settings.logs_dir / "aws-roles").rglob("*.log")]
    assert any("uploaded s3://second-site/" in record for record in records)  # the logs were read
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    status = await cli("status", ref.workflow_id, "-o", "json", env=env)
    assert status.code == 0, str(status)
    records += [status.out, status.err]
    for record in records:
        for secret in secrets:
            assert secret not in record


async def test_polling_starts_an_execution_per_new_s3_object_version(
    aws: Aws, conveyor: ConveyorClient, worker: Worker
) -> None:
    versioned_bucket(aws, "releases")
    aws.client("s3").create_bucket(Bucket="second-site")
    first = aws.client("s3").put_object(Bucket="releases", Key="site.zip", Body=zip_bytes({"index.html": "1"}))
    declaration = s3_pipeline("s3-polled", conveyor={"poll": {"intervalSeconds": 3600}})
    await conveyor.apply(declaration)
    poller = conveyor.temporal.get_schedule_handle("s3-polled/poll")
    await poller.trigger()
    (run,) = await executions(conveyor, "s3-polled", 1)
    state = await asyncio.wait_for(conveyor.wait(run.ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert state.trigger.trigger_type == TriggerType.POLL_FOR_SOURCE_CHANGES
    assert state.source_revisions[0].revision_id == first["VersionId"]
    await poller.trigger()  # no new version: nothing starts
    await executions(conveyor, "s3-polled", 1)
    aws.client("s3").put_object(Bucket="releases", Key="site.zip", Body=zip_bytes({"index.html": "2"}))
    await poller.trigger()
    await executions(conveyor, "s3-polled", 2)

    # PollForSourceChanges false: no poll schedule at all.
    declaration["stages"][0]["actions"][0]["configuration"]["PollForSourceChanges"] = "false"
    await conveyor.apply(declaration)
    assert "s3-polled/poll" not in [s.id async for s in await conveyor.temporal.list_schedules()]


async def test_polling_starts_an_execution_per_new_ecr_digest(
    aws: Aws, conveyor: ConveyorClient, worker: Worker
) -> None:
    aws.client("ecr").create_repository(repositoryName="web")
    push(aws, "latest", "b")
    declaration = {
        "name": "ecr-polled",
        "conveyor": {"poll": {"intervalSeconds": 3600}},
        "stages": [
            {
                "name": "Source",
                "actions": [
                    {
                        "name": "Image",
                        "provider": "ECR",
                        "configuration": {"RepositoryName": "web"},
                        "outputArtifacts": [{"name": "Img"}],
                    }
                ],
            },
            {
                "name": "Check",
                "actions": [
                    {
                        "name": "Read",
                        "provider": "Commands",
                        "inputArtifacts": [{"name": "Img"}],
                        "commands": ["grep -q ImageURI imageDetail.json"],
                    }
                ],
            },
        ],
    }
    await conveyor.apply(declaration)
    poller = conveyor.temporal.get_schedule_handle("ecr-polled/poll")
    await poller.trigger()
    (run,) = await executions(conveyor, "ecr-polled", 1)
    state = await asyncio.wait_for(conveyor.wait(run.ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    await poller.trigger()
    await executions(conveyor, "ecr-polled", 1)
    moved = push(aws, "latest", "c")
    await poller.trigger()
    rows = await executions(conveyor, "ecr-polled", 2)
    newest = await asyncio.wait_for(conveyor.wait(next(r.ref for r in rows if r.ref != run.ref)), 60)
    assert newest.source_revisions[0].revision_id == moved


async def executions(conveyor: ConveyorClient, name: str, count: int) -> list[Any]:
    async def enough() -> list[Any]:
        while len(rows := await conveyor.list(name)) < count:
            await asyncio.sleep(0.2)
        return rows

    await asyncio.wait_for(enough(), 30)
    await asyncio.sleep(1.0)  # anything more would have shown up by now
    rows = await conveyor.list(name)
    assert len(rows) == count, [r.execution for r in rows]
    return rows
