"""The ElasticBeanstalk provider against a FAKE of Elastic Beanstalk (tests/beanstalk_fake.py: moto does not serve
application versions and environment updates), with S3 (the artifact store the bundle is read from) and STS on moto.
Every test that runs the provider is named a fake test: a success, health Red, an ERROR event, the compensation back
to the previous version, a worker SIGKILLed mid-update, a local artifact store refused; and validation."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client

from conveyor.client import ConveyorClient
from conveyor.model import ActionContext, ActionState, ActionStatus, ExecutionState, ExecutionStatus
from conveyor.providers.elastic_beanstalk import version_label
from conveyor.settings import S3Location, Settings
from conveyor.spec import validate_pipeline
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.beanstalk_fake import BeanstalkFake, Outcome
from tests.helpers import pipeline
from tests.test_durability import start_worker_process, wait_for

BUCKET = "conveyor-artifacts"
APP, ENV = "shop", "shop-prod"
POLL_SECONDS = 0.1
DECLARATION = """
name: eb-{suffix}
conveyor: {{heartbeatTimeoutSeconds: 2{strategy}}}
stages:
  - name: Source
    actions:
      - name: Pack
        provider: Commands
        commands: ["echo 'print(1)' > application.py"]
        outputArtifacts: [{{name: Bundle, files: [application.py]}}]
  - name: Deploy
    onFailure: {{result: ROLLBACK}}
    actions:
      - name: Release
        provider: ElasticBeanstalk
        namespace: Eb
        configuration: {{ApplicationName: {app}, EnvironmentName: {env}}}
        inputArtifacts: [{{name: Bundle}}]
      - name: Check
        provider: Commands
        runOrder: 2
        commands: ["test '#{{Eb.VersionLabel}}' != ''", "{then}"]
"""


def declaration(*, then: str = "true", compensate: bool = False, env: str = ENV) -> dict[str, Any]:
    strategy = ", rollbackStrategy: COMPENSATE" if compensate else ""
    text = DECLARATION.format(suffix=uuid.uuid4().hex[:8], strategy=strategy, app=APP, env=env, then=then)
    return pipeline(text)


@pytest.fixture
def beanstalk(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[BeanstalkFake]:
    """The fake, with environment shop-prod Ready and Green on version v1; boto3's elasticbeanstalk client points
    at it (S3 and STS stay on moto)."""
    fake = BeanstalkFake().start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_ELASTIC_BEANSTALK", fake.endpoint)
    fake.environment(APP, ENV, "v1")
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path, aws: Aws) -> Settings:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    return settings.model_copy(
        update={
            "data_dir": tmp_path / "data",
            "beanstalk_poll_seconds": POLL_SECONDS,
            "artifact_store": S3Location(bucket=BUCKET, prefix="ci"),
        }
    )


@pytest_asyncio.fixture
async def client(temporal_client: Client, worker_settings: Settings) -> AsyncIterator[ConveyorClient]:
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


async def finished(client: ConveyorClient, data: dict[str, Any]) -> tuple[ExecutionState, str]:
    ref, _ = await client.start(data)
    state = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    return state, expected_label(ref.pipeline_name, ref.execution_id)


def expected_label(pipeline_name: str, execution_id: str) -> str:
    context = ActionContext(
        pipeline_name=pipeline_name, execution_id=execution_id, stage_name="Deploy", action_name="Release"
    )
    return version_label(context)


def release(state: ExecutionState) -> ActionState:
    stage = state.stage("Deploy")
    assert stage is not None
    return next(a for a in stage.actions if a.action_name == "Release")


async def test_fake_beanstalk_success_version_from_the_s3_store_updated_ready_and_green(
    client: ConveyorClient, beanstalk: BeanstalkFake, aws: Aws
) -> None:
    state, label = await finished(client, declaration())
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    action = release(state)
    assert action.output_variables == {"VersionLabel": label}
    assert action.summary == f"environment {ENV} on version {label}: Ready, health Green (Ok)"
    assert beanstalk.version_label(ENV) == label
    assert beanstalk.calls["CreateApplicationVersion"] == 1 and beanstalk.updates == [(ENV, label)]
    # What the engine sent: the artifact store's zip as the source bundle, the previous label in the description.
    version = beanstalk.versions[(APP, label)]
    assert version["S3Bucket"] == BUCKET and version["S3Key"].startswith("ci/artifacts/sha256/")
    assert version["Description"].startswith("previous version: v1 | Conveyor ")
    body = aws.client("s3").get_object(Bucket=BUCKET, Key=version["S3Key"])["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.read("application.py") == b"print(1)\n"


async def test_fake_beanstalk_health_red_fails_the_action_naming_it(
    client: ConveyorClient, beanstalk: BeanstalkFake
) -> None:
    beanstalk.script(Outcome(health="Red", health_status="Severe"))
    state, label = await finished(client, declaration())
    assert state.status == ExecutionStatus.FAILED
    error = release(state).error
    assert error is not None and error.code == "DeploymentFailed"
    assert error.message == (f"action 'Release': environment {ENV} on version {label} is Ready, health Red (Severe)"), (
        error.message
    )
    # Not retried (a red deployment is not transient); a first release has no earlier success to redeploy, so by
    # the rollback rule its compensation ran: the environment is back on v1.
    assert beanstalk.updates == [(ENV, label), (ENV, "v1")]
    assert beanstalk.version_label(ENV) == "v1"


async def test_fake_beanstalk_an_error_event_fails_the_action_naming_it(
    client: ConveyorClient, beanstalk: BeanstalkFake
) -> None:
    beanstalk.script(Outcome(error_event="Failed to deploy application: pip install failed."))
    state, label = await finished(client, declaration())
    assert state.status == ExecutionStatus.FAILED
    error = release(state).error
    assert error is not None
    assert error.message == (
        f"action 'Release': environment {ENV} updating to version {label}: ERROR event: Failed to deploy "
        "application: pip install failed."
    ), error.message
    assert beanstalk.updates == [(ENV, label), (ENV, "v1")]


async def test_fake_beanstalk_compensation_updates_the_environment_back_to_the_previous_version(
    client: ConveyorClient, beanstalk: BeanstalkFake
) -> None:
    state, label = await finished(client, declaration(then="exit 1", compensate=True))
    assert state.status == ExecutionStatus.FAILED
    action = release(state)
    assert action.compensation is not None and action.compensation.status == "Succeeded", action.compensation
    assert beanstalk.updates == [(ENV, label), (ENV, "v1")]
    assert beanstalk.version_label(ENV) == "v1" and beanstalk.status(ENV) == "Ready"


async def test_fake_beanstalk_an_abandoned_update_is_aborted_and_the_compensation_restores_the_previous_version(
    client: ConveyorClient, beanstalk: BeanstalkFake
) -> None:
    """Fake test: the update would stay Updating for a minute; the execution is stopped with abandon. The action
    calls AbortEnvironmentUpdate (the fake rolls the environment back to v1) and the stage's compensation (a first
    release, rolled back on failure) follows the environment back to v1."""
    beanstalk.script(Outcome(seconds=60))
    ref, _ = await client.start(declaration())
    await wait_for(lambda: len(beanstalk.updates) == 1, 30, "UpdateEnvironment")
    await client.stop(ref, reason="wrong release", abandon=True)
    state = await asyncio.wait_for(client.wait(ref, interval=0.2), 30)
    label = expected_label(ref.pipeline_name, ref.execution_id)
    assert state.status == ExecutionStatus.STOPPED, state.status_summary
    action = release(state)
    assert action.status == ActionStatus.ABANDONED
    assert beanstalk.aborts == [(ENV, label)]
    assert action.compensation is not None and action.compensation.status == "Succeeded", action.compensation
    assert beanstalk.version_label(ENV) == "v1" and beanstalk.status(ENV) == "Ready"
    assert beanstalk.updates == [(ENV, label)]  # the abort put it back: no second update was needed


async def test_fake_beanstalk_local_artifact_store_is_refused_before_any_call(
    temporal_client: Client, worker_settings: Settings, beanstalk: BeanstalkFake
) -> None:
    local = worker_settings.model_copy(update={"artifact_store": None})
    async with build_worker(temporal_client, local):
        state, _ = await finished(ConveyorClient(temporal_client, local), declaration())
    assert state.status == ExecutionStatus.FAILED
    error = release(state).error
    assert error is not None and error.code == "ConfigurationError"
    assert "Elastic Beanstalk reads its source bundle from S3" in error.message
    assert "CONVEYOR_ARTIFACT_STORE=s3://" in error.message
    assert beanstalk.calls["CreateApplicationVersion"] == 0 and beanstalk.updates == []


async def test_fake_beanstalk_a_worker_killed_mid_update_is_followed_by_one_that_follows_the_same_update(
    temporal_client: Client,
    worker_settings: Settings,
    beanstalk: BeanstalkFake,
    aws: Aws,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in aws.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONVEYOR_BEANSTALK_POLL_SECONDS", str(POLL_SECONDS))
    monkeypatch.setenv("CONVEYOR_ARTIFACT_STORE", f"s3://{BUCKET}/ci")
    beanstalk.script(Outcome(seconds=5))
    client = ConveyorClient(temporal_client, worker_settings)
    first = start_worker_process(worker_settings, tmp_path / "worker1.log")
    try:
        ref, _ = await client.start(declaration())
        await wait_for(lambda: len(beanstalk.updates) == 1, 60, "UpdateEnvironment")
        first.kill()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert beanstalk.status(ENV) == "Updating"
    second = start_worker_process(worker_settings, tmp_path / "worker2.log")
    try:
        state = await asyncio.wait_for(client.wait(ref, interval=0.2), 90)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    label = expected_label(ref.pipeline_name, ref.execution_id)
    assert beanstalk.calls["CreateApplicationVersion"] == 1
    assert beanstalk.updates == [(ENV, label)]  # UpdateEnvironment once
    s3 = aws.client("s3")
    prefix = f"ci/logs/{ref.pipeline_name}/{ref.execution_id}/Deploy/Release/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", []))
    log = "".join(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode() for key in keys)
    assert f"following the update to version {label} of {ENV}" in log, log


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"EnvironmentName": "p"}, ("EnvironmentName", "'p' is not an environment name: 4-40 letters")),
        ({"EnvironmentName": "-prod-"}, ("EnvironmentName", "not starting or ending with a hyphen")),
        ({"ApplicationName": "a/b"}, ("ApplicationName", "'a/b' is not an application name")),
        ({"ApplicationName": None}, ("ApplicationName", "")),
    ],
)
def test_validation_names_the_key_and_what_to_change(change: dict[str, str | None], problem: tuple[str, str]) -> None:
    data = declaration()
    configuration = data["stages"][1]["actions"][0]["configuration"]
    for key, value in change.items():
        if value is None:
            configuration.pop(key)
        else:
            configuration[key] = value
    report = validate_pipeline(data)
    key, message = problem
    found = [(i.path, i.message) for i in report.errors]
    assert any(key in path + text and message in text for path, text in found), found


def test_validation_wants_one_input_artifact() -> None:
    data = declaration()
    data["stages"][1]["actions"][0]["inputArtifacts"] = []
    found = [(i.path, i.message) for i in validate_pipeline(data).errors]
    assert any("input" in text.lower() for _, text in found), found
    assert json.dumps(found)  # the report is plain data
