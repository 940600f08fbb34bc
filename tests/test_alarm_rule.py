"""The CloudWatchAlarm condition rule against moto's CloudWatch (alarms set with the real `set_alarm_state`): an alarm
raised while the rule watches fails the condition and the stage, alarms staying OK pass when WaitTime ends, a missing
alarm errors the rule, and the configuration is validated. WaitTime takes a decimal in Conveyor (minutes, as in
CodePipeline; `0.1` is 6 s), which keeps these tests short on a real worker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
from temporalio.client import Client

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.model import ExecutionStatus, RuleState, StageStatus
from conveyor.settings import Settings
from conveyor.spec import validate_pipeline
from conveyor.worker import build_worker
from tests.aws import REGION, Aws
from tests.helpers import pipeline

POLL_SECONDS = 0.2


def declaration(configuration: str) -> dict[str, Any]:
    return pipeline(
        f"""
name: alarms-{uuid.uuid4().hex[:8]}
stages:
  - name: Build
    actions:
      - {{name: Make, provider: Commands, commands: ["true"]}}
  - name: Deploy
    actions:
      - {{name: Ship, provider: Commands, commands: ["echo shipped"]}}
    onSuccess:
      conditions:
        - result: FAIL
          rules:
            - name: Bake
              ruleTypeId: {{category: Rule, owner: AWS, provider: CloudWatchAlarm, version: '1'}}
              configuration: {configuration}
"""
    )


@pytest.fixture
def cloudwatch(aws: Aws) -> Any:
    client = aws.client("cloudwatch")
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
    return client


@pytest_asyncio.fixture
async def client(temporal_client: Client, settings: Settings, tmp_path: Path) -> AsyncIterator[ConveyorClient]:
    worker_settings = settings.model_copy(update={"data_dir": tmp_path / "data", "alarm_poll_seconds": POLL_SECONDS})
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


async def bake_rule(client: ConveyorClient, ref: ExecutionRef) -> RuleState | None:
    state = await client.state(ref)
    deploy = state.stage("Deploy")
    if deploy is None or not deploy.conditions:
        return None
    return deploy.conditions[0].rules[0]


async def test_an_alarm_raised_while_the_rule_watches_fails_the_condition_and_the_stage(
    client: ConveyorClient, cloudwatch: Any
) -> None:
    ref, _ = await client.start(declaration("{AlarmName: 'api-errors, api-latency', WaitTime: '1'}"))
    for _ in range(300):  # until the rule says it is watching
        rule = await bake_rule(client, ref)
        if rule is not None and rule.summary and rule.summary.startswith("watching"):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the rule never started watching")
    assert rule.summary is not None and rule.summary.startswith("watching 2 alarms, ") and "min left" in rule.summary
    raised = time.monotonic()
    cloudwatch.set_alarm_state(AlarmName="api-latency", StateValue="ALARM", StateReason="p99 over 2 s")
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert time.monotonic() - raised < 20  # as soon as a check sees it, not when WaitTime (60 s) ends
    assert state.status == ExecutionStatus.FAILED
    deploy = state.stage("Deploy")
    assert deploy is not None and deploy.status == StageStatus.FAILED
    condition = deploy.conditions[0]
    assert condition.status == "Failed" and condition.rules[0].summary == "alarm 'api-latency' is ALARM"


async def test_alarms_staying_ok_pass_when_the_wait_time_ends(client: ConveyorClient, cloudwatch: Any) -> None:
    started = time.monotonic()
    ref, _ = await client.start(declaration("{AlarmName: 'api-errors,api-latency', WaitTime: '0.05'}"))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert time.monotonic() - started >= 3  # it watched for WaitTime (3 s), not one look
    deploy = state.stage("Deploy")
    assert deploy is not None
    assert deploy.conditions[0].rules[0].summary == "2 alarms not in ALARM for 0.1 min"


async def test_a_missing_alarm_errors_the_rule_naming_it(client: ConveyorClient, cloudwatch: Any) -> None:
    ref, _ = await client.start(declaration("{AlarmName: 'api-errors,api-gone', WaitTime: '1'}"))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    deploy = state.stage("Deploy")
    assert deploy is not None
    rule = deploy.conditions[0].rules[0]
    assert deploy.conditions[0].status == "Errored" and rule.summary == "alarm 'api-gone' does not exist"


async def test_watched_states_are_configurable(client: ConveyorClient, cloudwatch: Any) -> None:
    """AlarmStates OK: an alarm that is OK fails the rule at the first look."""
    ref, _ = await client.start(
        declaration("{AlarmName: api-errors, AlarmStates: 'OK,INSUFFICIENT_DATA', WaitTime: '1'}")
    )
    state = await asyncio.wait_for(client.wait(ref), 30)
    deploy = state.stage("Deploy")
    assert deploy is not None and deploy.conditions[0].rules[0].summary == "alarm 'api-errors' is OK"


@pytest.mark.parametrize(
    ("configuration", "path", "message"),
    [
        ("{AlarmName: a, WaitTime: soon}", "configuration.WaitTime", "'soon' is not a number of minutes"),
        ("{AlarmName: a, WaitTime: '0'}", "configuration.WaitTime", "give more than 0"),
        ("{AlarmName: a, AlarmStates: 'ALARM,RED'}", "configuration.AlarmStates", "'RED' is not an alarm state"),
        ("{AlarmName: ' , '}", "configuration.AlarmName", "names no alarm"),
        ("{WaitTime: '5'}", "configuration", "AlarmName"),
    ],
)
def test_validation_names_the_key(configuration: str, path: str, message: str) -> None:
    report = validate_pipeline(declaration(configuration))
    found = [(i.path, i.message) for i in report.errors]
    assert any(p.endswith(path) and message in m for p, m in found), found


async def test_a_rule_without_a_role_watches_in_the_pipelines_role_account(
    temporal_client: Client, settings: Settings, tmp_path: Path, aws: Aws, cloudwatch: Any
) -> None:
    """The pipeline's roleArn is the rule's identity when the rule declares none (a worker configured for AWS): the
    alarm lives only in the role's account B, so the rule errors as missing unless it looks there."""
    role = "arn:aws:iam::222222222222:role/pipeline"
    creds = aws.client("sts").assume_role(RoleArn=role, RoleSessionName="setup")["Credentials"]
    in_b = boto3.client(
        "cloudwatch",
        region_name=REGION,
        endpoint_url=aws.endpoint,
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    in_b.put_metric_alarm(
        AlarmName="b-only",
        MetricName="b",
        Namespace="Shop",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    in_b.set_alarm_state(AlarmName="b-only", StateValue="OK", StateReason="healthy")
    worker_settings = settings.model_copy(
        update={"data_dir": tmp_path / "data", "alarm_poll_seconds": POLL_SECONDS, "aws": True}
    )
    async with build_worker(temporal_client, worker_settings):
        client = ConveyorClient(temporal_client, worker_settings)
        ref, _ = await client.start(declaration("{AlarmName: b-only}") | {"roleArn": role})
        state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    deploy = state.stage("Deploy")
    assert deploy is not None and deploy.conditions[0].rules[0].summary == "1 alarms not in ALARM for 0 min"
