"""Bake time (`conveyor.bake`) and waves (`conveyor.waves`): the pure decisions table-tested, the declaration
validated, and real runs on a worker against moto's CloudWatch and S3 (alarms raised with the real
`set_alarm_state`, a second and third account reached through AssumeRole). Bakes are a few seconds long: minutes may
be decimals, and the worker checks the alarms every POLL_SECONDS."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
import yaml
from rich.console import Console
from temporalio.client import Client

from conveyor.alarms import AlarmAnswer, AlarmState
from conveyor.bake import bake_summary, bake_verdict, next_wait, start_bake, wave_line
from conveyor.cli.render import execution_table
from conveyor.client import ConveyorClient, ExecutionRef, StateNotRecorded
from conveyor.model import ActionState, ActionStatus, BakeStatus, ExecutionState, ExecutionStatus, WaveState
from conveyor.settings import Settings
from conveyor.spec import validate_pipeline
from conveyor.worker import build_worker
from tests.aws import REGION, Aws
from tests.helpers import pipeline
from tests.test_durability import start_worker_process

POLL_SECONDS = 0.3
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ACCOUNT_A, ACCOUNT_B = "111111111111", "222222222222"
ROLE_A, ROLE_B = (f"arn:aws:iam::{account}:role/deployer" for account in (ACCOUNT_A, ACCOUNT_B))


# --- pure decisions ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (AlarmAnswer(next_check_seconds=1), None, None),
        (
            AlarmAnswer(tripped={"api-errors": AlarmState.ALARM}, next_check_seconds=1),
            "AlarmDuringBake",
            "alarm 'api-errors' went ALARM during the bake",
        ),
        (
            AlarmAnswer(missing=["gone"], tripped={"x": AlarmState.ALARM}, next_check_seconds=1),
            "AlarmMissing",
            "alarm 'gone' does not exist (watched during the bake)",
        ),
    ],
)
def test_what_an_alarm_answer_means_for_the_bake(answer: AlarmAnswer, code: str | None, message: str | None) -> None:
    verdict = bake_verdict(answer)
    assert (verdict.code if verdict else None, verdict.message if verdict else None) == (code, message)


@pytest.mark.parametrize(
    ("now", "poll", "wait"),
    [
        (T0, 60.0, timedelta(seconds=60)),  # the poll interval
        (T0 + timedelta(minutes=9, seconds=50), 60.0, timedelta(seconds=10)),  # never past the deadline
        (T0 + timedelta(minutes=10), 60.0, None),  # over
        (T0 + timedelta(minutes=11), 60.0, None),  # a late replay: over, not a negative timer
    ],
)
def test_the_next_look_never_passes_the_deadline(now: datetime, poll: float, wait: timedelta | None) -> None:
    assert next_wait(T0 + timedelta(minutes=10), now, poll) == wait


def test_how_status_shows_a_bake_and_a_wave() -> None:
    baking = start_bake(10, ["api-errors"], T0)
    assert baking.deadline == T0 + timedelta(minutes=10)
    assert bake_summary(baking, T0 + timedelta(minutes=5, seconds=30)) == (
        "baking, 4.5 min left, alarms OK (alarm 'api-errors' watched)"
    )
    assert bake_summary(baking, T0 + timedelta(minutes=12)).startswith("baking, 0 min left")
    passed = baking.model_copy(update={"status": BakeStatus.PASSED, "alarms": ["a", "b"]})
    assert bake_summary(passed, T0) == "baked 10 min, 2 alarms OK"
    failed = baking.model_copy(update={"status": BakeStatus.FAILED, "tripped": "alarm 'a' went ALARM during the bake"})
    assert bake_summary(failed, T0) == "bake failed: alarm 'a' went ALARM during the bake"
    wave = WaveState(name="eu", region="eu-west-1", role_arn=ROLE_A, status=ActionStatus.SUCCEEDED, bake=passed)
    assert wave_line(wave, T0) == f"wave eu (eu-west-1, {ROLE_A}): Succeeded, baked 10 min, 2 alarms OK"
    assert wave_line(WaveState(name="us"), T0) == "wave us: waiting"


# --- validation ------------------------------------------------------------------------------------------------------


def _declaration(
    extension: str, provider: str = "S3", configuration: str = "{BucketName: site, Extract: 'true'}"
) -> Any:
    return pipeline(
        f"""
name: bake-valid
stages:
  - name: Source
    actions:
      - name: Src
        provider: S3
        configuration: {{S3Bucket: src, S3ObjectKey: app.zip}}
        outputArtifacts: [{{name: App}}]
  - name: Prod
    actions:
      - name: Ship
        provider: {provider}
        category: {"Deploy" if provider == "S3" else "Approval"}
        inputArtifacts: [{{name: App}}]
        configuration: {configuration}
        conveyor: {extension}
"""
    )


@pytest.mark.parametrize(
    ("extension", "path", "message"),
    [
        ("{bake: {minutes: 0, alarms: [a]}}", "conveyor.bake.minutes", "greater than 0"),
        ("{bake: {minutes: 20000, alarms: [a]}}", "conveyor.bake.minutes", "10080"),
        ("{bake: {minutes: 5, alarms: []}}", "conveyor.bake.alarms", "at least 1"),
        ("{bake: {minutes: 5, alarms: [a], alarmStates: [RED]}}", "conveyor.bake.alarmStates[0]", "ALARM"),
        ("{waves: [{name: a}, {name: a}]}", "conveyor.waves[1].name", "wave 'a' is listed twice"),
        (
            "{waves: [{name: a, configuration: {Bucket: x}}]}",
            "conveyor.waves[0].configuration.Bucket",
            "'Bucket' is not a configuration key of 'S3'; use one of BucketName, Extract",
        ),
        ("{waves: [{name: a, configuration: {Extract: maybe}}]}", "conveyor.waves[0].configuration.Extract", "true"),
        (
            "{waves: [{name: a, configuration: {Extract: 'false'}}]}",
            "conveyor.waves[0].configuration.ObjectKey",
            "required when Extract is false",
        ),
        ("{waves: [" + ", ".join(f"{{name: w{i}}}" for i in range(21)) + "]}", "conveyor.waves", "at most 20"),
        ("{waves: []}", "conveyor.waves", "at least 1"),
        (
            "{waves: [{name: a, configuration: {BucketName: '#{nope.Bucket}'}}]}",
            "conveyor.waves[0].configuration.BucketName",
            "nope",
        ),
    ],
)
def test_bake_and_waves_are_validated_naming_the_field(extension: str, path: str, message: str) -> None:
    found = [(issue.path, issue.message) for issue in validate_pipeline(_declaration(extension)).errors]
    assert any(p.endswith(path) and message in m for p, m in found), found


def test_a_manual_approval_cannot_bake() -> None:
    declaration = _declaration("{bake: {minutes: 1, alarms: [a]}}", provider="Manual", configuration="{}")
    declaration["stages"][1]["actions"][0].pop("inputArtifacts")
    found = [(issue.path, issue.message) for issue in validate_pipeline(declaration).errors]
    assert any(p.endswith("conveyor.bake") and "not sources or approvals" in m for p, m in found), found


def test_a_valid_waved_and_baked_action_passes() -> None:
    extension = (
        "{bake: {minutes: 0.5, alarms: [a, b], alarmStates: [ALARM, INSUFFICIENT_DATA]}, "
        f"waves: [{{name: a, roleArn: '{ROLE_A}', configuration: {{BucketName: site-a}}}}, "
        "{name: b, region: eu-west-1, configuration: {BucketName: site-b}}]}"
    )
    assert validate_pipeline(_declaration(extension)).errors == []


# --- real runs -------------------------------------------------------------------------------------------------------


def _alarms(client: Any) -> None:
    for name in ("api-errors", "api-latency"):
        client.put_metric_alarm(
            AlarmName=name,
            MetricName=name,
            Namespace="Shop",
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1.0,
            ComparisonOperator="GreaterThanThreshold",
        )
        client.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="healthy")


@pytest.fixture
def cloudwatch(aws: Aws) -> Any:
    client = aws.client("cloudwatch")
    _alarms(client)
    return client


def _assumed(aws: Aws, service: str, role: str) -> Any:
    """A client acting in the role's account, as the test's own AssumeRole."""
    credentials = aws.client("sts").assume_role(RoleArn=role, RoleSessionName="test")["Credentials"]
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=aws.endpoint,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


@pytest_asyncio.fixture
async def client(temporal_client: Client, settings: Settings, tmp_path: Path) -> AsyncIterator[ConveyorClient]:
    worker_settings = settings.model_copy(
        update={
            "data_dir": tmp_path / "data",
            "alarm_poll_seconds": POLL_SECONDS,
            "task_queue": f"bake-{uuid.uuid4().hex[:8]}",
        }
    )
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


def baked(minutes: float, tmp_path: Path, result: str = "ROLLBACK") -> dict[str, Any]:
    return pipeline(
        f"""
name: bake
stages:
  - name: Build
    actions:
      - {{name: Make, provider: Commands, commands: ["true"]}}
  - name: Deploy
    onFailure: {{result: {result}}}
    actions:
      - name: Ship
        provider: Commands
        commands: ["echo shipped >> {tmp_path}/shipped.log"]
        conveyor:
          rollback: ["echo undone >> {tmp_path}/undone.log"]
          bake: {{minutes: {minutes}, alarms: [api-errors, api-latency]}}
  - name: After
    actions:
      - {{name: Next, provider: Commands, commands: ["echo next >> {tmp_path}/next.log"]}}
"""
    )


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _action(client: ConveyorClient, ref: ExecutionRef, stage: str, action: str) -> ActionState | None:
    try:
        state = await client.state(ref)
    except StateNotRecorded:  # a worker process still starting
        return None
    found = state.stage(stage)
    return None if found is None else next((a for a in found.actions if a.action_name == action), None)


async def _until(client: ConveyorClient, ref: ExecutionRef, check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.1)
    state = await client.state(ref)
    raise AssertionError(f"timed out waiting for {what}: {state.model_dump_json(exclude_none=True)[:3000]}")


def rendered(state: ExecutionState) -> str:
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(execution_table(state))
    return out.getvalue()


async def test_an_alarm_during_the_bake_fails_the_stage_at_once_and_rolls_back_once(
    client: ConveyorClient, cloudwatch: Any, tmp_path: Path
) -> None:
    ref, _ = await client.start(baked(1, tmp_path))

    async def baking() -> ActionState | None:
        ship = await _action(client, ref, "Deploy", "Ship")
        return ship if ship is not None and ship.bake is not None else None

    ship = await _until(client, ref, baking, "the bake to start")
    assert ship.status == ActionStatus.IN_PROGRESS and ship.bake.status == BakeStatus.BAKING
    table = rendered(await client.state(ref))  # `conveyor status` while it bakes
    assert "baking, 1 min left, alarms OK (2 alarms watched)" in table or "baking, 0.9 min left" in table, table
    assert (await client.state(ref)).model_dump(mode="json", by_alias=True)["stages"][1]["actions"][0]["bake"][
        "status"
    ] == "Baking"  # `-o json`

    raised = time.monotonic()
    cloudwatch.set_alarm_state(AlarmName="api-latency", StateValue="ALARM", StateReason="p99 over 2 s")
    state = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    assert time.monotonic() - raised < 15  # at the next look, not when the bake (60 s) would end
    assert state.status == ExecutionStatus.FAILED
    deploy = state.stage("Deploy")
    assert deploy is not None and deploy.status == "Failed"
    (ship,) = deploy.actions
    assert ship.error is not None and ship.error.code == "AlarmDuringBake"
    assert ship.error.message == "alarm 'api-latency' went ALARM during the bake"
    assert ship.bake is not None and ship.bake.status == BakeStatus.FAILED
    # A first release: no earlier success to redeploy, so by the ONE rule its compensation ran instead, once.
    assert state.rollback_execution is None
    assert _lines(tmp_path / "undone.log") == ["undone"]
    assert ship.compensation is not None and ship.compensation.status == "Succeeded"
    assert _lines(tmp_path / "next.log") == []
    assert "bake failed: alarm 'api-latency' went ALARM during the bake" in rendered(state)


async def test_alarms_staying_ok_end_the_bake_after_its_time_and_the_next_stage_runs(
    client: ConveyorClient, cloudwatch: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    ref, _ = await client.start(baked(0.05, tmp_path))
    state = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert time.monotonic() - started >= 3  # baked 3 s, not one look
    deploy, after = state.stage("Deploy"), state.stage("After")
    assert deploy is not None and after is not None
    bake = deploy.actions[0].bake
    assert bake is not None and bake.status == BakeStatus.PASSED and bake.finished_at is not None
    assert bake.finished_at >= bake.deadline and bake.checked_at is not None
    assert after.started_at is not None and after.started_at >= bake.deadline
    assert _lines(tmp_path / "next.log") == ["next"] and _lines(tmp_path / "undone.log") == []
    assert "baked 0.1 min, 2 alarms OK" in rendered(state)


async def test_a_worker_killed_during_the_bake_is_continued_by_a_new_worker_to_the_same_deadline(
    conveyor: ConveyorClient, settings: Settings, cloudwatch: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_ALARM_POLL_SECONDS", str(POLL_SECONDS))
    first = start_worker_process(settings, tmp_path / "worker1.log")
    try:
        # 15 s: long enough that the new worker takes over well before the deadline (the dead worker's sticky
        # queue holds the next workflow task up to 10 s), short enough for CI.
        ref, _ = await conveyor.start(baked(0.25, tmp_path))

        async def baking() -> ActionState | None:
            ship = await _action(conveyor, ref, "Deploy", "Ship")
            return ship if ship is not None and ship.bake is not None and ship.bake.checked_at else None

        ship = await _until(conveyor, ref, baking, "the bake to start")
        deadline = ship.bake.deadline
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    second = start_worker_process(settings, tmp_path / "worker2.log")
    try:
        state = await asyncio.wait_for(conveyor.wait(ref, interval=0.2), 90)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    deploy = state.stage("Deploy")
    assert deploy is not None
    bake = deploy.actions[0].bake
    assert bake is not None and bake.status == BakeStatus.PASSED and bake.finished_at is not None
    assert bake.deadline == deadline  # the same bake, not one restarted from zero
    # It ends at the deadline: a bake restarted from zero would end 15 s after the new worker took over.
    assert timedelta(0) <= bake.finished_at - deadline < timedelta(seconds=3)
    assert _lines(tmp_path / "shipped.log") == ["shipped"]  # the deploy ran once


def waved(tmp_path: Path) -> dict[str, Any]:
    return pipeline(
        f"""
name: waves
variables:
  - {{name: Version, defaultValue: "1"}}
  - {{name: BucketB, defaultValue: site-b}}
stages:
  - name: Build
    actions:
      - name: Package
        provider: Commands
        commands: ['mkdir -p out && echo "build #{{variables.Version}}" > out/app.txt']
        outputArtifacts: [{{name: App, files: ["out/*"]}}]
  - name: Prod
    onFailure: {{result: ROLLBACK}}
    actions:
      - name: Site
        provider: S3
        category: Deploy
        inputArtifacts: [{{name: App}}]
        configuration: {{BucketName: unused, Extract: "true"}}
        conveyor:
          bake: {{minutes: 0.02, alarms: [api-errors]}}
          waves:
            - {{name: a, roleArn: "{ROLE_A}", configuration: {{BucketName: site-a}}}}
            - {{name: b, roleArn: "{ROLE_B}", configuration: {{BucketName: "#{{variables.BucketB}}"}}}}
"""
    )


def _content(s3: Any, bucket: str) -> str:
    body: bytes = s3.get_object(Bucket=bucket, Key="out/app.txt")["Body"].read()
    return body.decode().strip()


async def test_waves_deploy_into_two_accounts_in_turn_and_a_failed_wave_rolls_back_the_ones_done(
    client: ConveyorClient, aws: Aws, tmp_path: Path
) -> None:
    s3_a, s3_b = _assumed(aws, "s3", ROLE_A), _assumed(aws, "s3", ROLE_B)
    s3_a.create_bucket(Bucket="site-a")
    s3_a.put_bucket_versioning(Bucket="site-a", VersioningConfiguration={"Status": "Enabled"})  # its history
    s3_b.create_bucket(Bucket="site-b")
    for role in (ROLE_A, ROLE_B):  # each wave's bake watches the alarm in its own account
        _alarms(_assumed(aws, "cloudwatch", role))
    declaration = waved(tmp_path)

    good, _ = await client.start(declaration)
    first = await asyncio.wait_for(client.wait(good, interval=0.2), 90)
    assert first.status == ExecutionStatus.SUCCEEDED, first.status_summary
    assert (_content(s3_a, "site-a"), _content(s3_b, "site-b")) == ("build 1", "build 1")
    prod = first.stage("Prod")
    assert prod is not None
    (site,) = prod.actions
    assert [(w.name, w.role_arn, w.status) for w in site.waves] == [
        ("a", ROLE_A, ActionStatus.SUCCEEDED),
        ("b", ROLE_B, ActionStatus.SUCCEEDED),
    ]
    a, b = site.waves
    assert a.bake is not None and b.bake is not None and b.started_at is not None and a.finished_at is not None
    assert a.bake.status == BakeStatus.PASSED and b.started_at >= a.bake.deadline  # baked before the next wave
    assert site.summary == "2 waves done: a, b"

    # The second release: wave a deploys build 2, wave b fails (its bucket does not exist in account B).
    bad, _ = await client.start(declaration, variables={"Version": "2", "BucketB": "site-missing"})
    failed = await asyncio.wait_for(client.wait(bad, interval=0.2), 90)
    assert failed.status == ExecutionStatus.FAILED
    prod = failed.stage("Prod")
    assert prod is not None
    a, b = prod.actions[0].waves
    assert a.status == ActionStatus.SUCCEEDED and b.status == ActionStatus.FAILED and b.error is not None
    assert "site-missing" in b.error.message
    table = rendered(failed)
    assert f"wave a ({ROLE_A}): Succeeded, baked" in table and f"wave b ({ROLE_B}): Failed: " in table, table

    # The ONE rule (REDEPLOY): one ROLLBACK execution re-runs every wave with the last good release.
    assert failed.rollback_execution is not None
    rolled = await asyncio.wait_for(client.wait(ExecutionRef(bad.pipeline_name, failed.rollback_execution)), 90)
    assert rolled.status == ExecutionStatus.SUCCEEDED, rolled.status_summary
    assert rolled.rollback_of == good.execution_id
    assert (_content(s3_a, "site-a"), _content(s3_b, "site-b")) == ("build 1", "build 1")
    versions = s3_a.list_object_versions(Bucket="site-a", Prefix="out/app.txt")["Versions"]
    written = [
        s3_a.get_object(Bucket="site-a", Key="out/app.txt", VersionId=v["VersionId"])["Body"].read().decode().strip()
        for v in sorted(versions, key=lambda v: v["LastModified"])
    ]
    assert written == ["build 1", "build 2", "build 1"]  # wave a went out with build 2, then was rolled back once
    rolled_prod = rolled.stage("Prod")
    assert rolled_prod is not None and [w.status for w in rolled_prod.actions[0].waves] == [ActionStatus.SUCCEEDED] * 2
    assert all(a.compensation is None for a in prod.actions)  # redeployed, not compensated as well


EXAMPLE = Path(__file__).parent.parent / "examples" / "canary-waves"


async def test_the_shipped_canary_waves_example_runs_against_moto(client: ConveyorClient, aws: Aws) -> None:
    setup = subprocess.run(
        [sys.executable, str(EXAMPLE / "setup.py")], env=os.environ | aws.environment, capture_output=True, text=True
    )
    assert setup.returncode == 0, setup.stderr
    declaration = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
    declaration["name"] = f"{declaration['name']}-{uuid.uuid4().hex[:8]}"  # executions of tests never shared
    assert validate_pipeline(declaration).ok
    ref, _ = await client.start(declaration)
    state = await asyncio.wait_for(client.wait(ref, interval=0.2), 90)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    production = state.stage("Production")
    assert production is not None
    (publish,) = production.actions
    assert [(w.name, w.status) for w in publish.waves] == [
        ("canary", ActionStatus.SUCCEEDED),
        ("eu", ActionStatus.SUCCEEDED),
        ("us", ActionStatus.SUCCEEDED),
    ]
    s3 = aws.client("s3")
    for bucket in ("example-canary", "example-eu", "example-us"):
        page = s3.get_object(Bucket=bucket, Key="site/index.html")["Body"].read().decode()
        assert page.strip() == "<h1>release 1</h1>"


async def test_without_an_earlier_release_each_started_wave_is_compensated_once_in_reverse(
    client: ConveyorClient, cloudwatch: Any, tmp_path: Path
) -> None:
    """A first release (nothing to redeploy): by the ONE rule the compensations run, one per wave started."""
    declaration = pipeline(
        f"""
name: wave-undo
stages:
  - name: Prod
    onFailure: {{result: ROLLBACK}}
    actions:
      - name: Ship
        provider: Commands
        commands: ["echo shipped >> {tmp_path}/shipped.log"]
        conveyor:
          rollback: ["echo undone >> {tmp_path}/undone.log"]
          bake: {{minutes: 0.1, alarms: [api-errors]}}  # 6 s: the alarm is raised early in wave b's
          waves: [{{name: a}}, {{name: b}}, {{name: c}}]
"""
    )
    ref, _ = await client.start(declaration)

    async def second_wave_baking() -> bool:
        ship = await _action(client, ref, "Prod", "Ship")
        return ship is not None and len(ship.waves) == 3 and ship.waves[1].bake is not None

    await _until(client, ref, second_wave_baking, "wave b's bake")
    cloudwatch.set_alarm_state(AlarmName="api-errors", StateValue="ALARM", StateReason="wave b broke it")
    state = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    assert state.status == ExecutionStatus.FAILED and state.rollback_execution is None
    prod = state.stage("Prod")
    assert prod is not None
    (ship,) = prod.actions
    assert [w.status for w in ship.waves] == [ActionStatus.SUCCEEDED, ActionStatus.FAILED, None]
    assert (
        ship.waves[1].bake is not None and ship.waves[1].bake.tripped == "alarm 'api-errors' went ALARM during the bake"
    )
    assert _lines(tmp_path / "shipped.log") == ["shipped", "shipped"]  # wave c never started
    assert _lines(tmp_path / "undone.log") == ["undone", "undone"]  # waves b and a, each once
    result = await client.state(ref)
    assert "wave c: waiting" in rendered(result)
