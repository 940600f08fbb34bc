"""Approval notifications: SNS through a moto server on loopback, an HMAC-signed webhook, reminders."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import boto3
import pytest
import pytest_asyncio
from fastapi import FastAPI, Request
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.notifications import sign
from conveyor.client import ConveyorClient
from conveyor.devserver import free_port
from conveyor.model import ActionStatus, ExecutionStatus
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.helpers import pipeline, serving, waiting_token

HOOK_SECRET = "hook-secret-for-tests"


@pytest.fixture
def aws_endpoint(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's moto server (tests/aws.py), wiped; the worker's boto3 reaches it through AWS_ENDPOINT_URL."""
    monkeypatch.setenv("TEST_HOOK_SECRET", HOOK_SECRET)
    return aws.endpoint


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[dict, bytes]]]]:
    """A webhook receiver over real HTTP that keeps what it was sent."""
    received: list[tuple[dict, bytes]] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> dict:
        received.append((dict(request.headers), await request.body()))
        return {"ok": True}

    async with serving(app) as url:
        yield f"{url}/hook", received


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.05)


def approval(topic: str, hook: str, extra: str = "") -> dict:
    return pipeline(
        f"""
name: notified
stages:
  - name: Prod
    actions:
      - name: Gate
        provider: Manual
        {extra}
        configuration: {{NotificationArn: "{topic}", CustomData: "ship #{{codepipeline.PipelineExecutionId}}?"}}
        conveyor:
          approval: {{notifyWebhook: "{hook}", notifyWebhookSecretEnv: TEST_HOOK_SECRET, reminderMinutes: 60}}
"""
    )


async def test_sns_and_signed_webhook_carry_the_approval(
    conveyor: ConveyorClient,
    worker: Worker,
    aws_endpoint: str,
    receiver: tuple[str, list],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hook, received = receiver
    monkeypatch.setenv("CONVEYOR_PUBLIC_URL", "https://conveyor.example.com/console/")  # the worker's (in-process)
    sns = boto3.client("sns", endpoint_url=aws_endpoint, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=aws_endpoint, region_name="us-east-1")
    topic = sns.create_topic(Name=f"approvals-{uuid.uuid4().hex[:6]}")["TopicArn"]
    queue = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    ref, _ = await conveyor.start(approval(topic, hook), started_by="dave")
    token = await waiting_token(conveyor, ref, "Prod", "Gate")

    async def delivered() -> dict:
        # Keep the SQS message once read: it stays invisible for 30 s, and the webhook may come a moment later.
        found: list[dict] = []
        while not (found and received):
            messages = (await asyncio.to_thread(sqs.receive_message, QueueUrl=queue, WaitTimeSeconds=1)).get("Messages")
            found += [json.loads(json.loads(m["Body"])["Message"]) for m in messages or []]
            await asyncio.sleep(0.2)
        return found[0]

    message = await asyncio.wait_for(delivered(), 30)
    assert message["region"] == "us-east-1"
    assert message["approval"]["token"] == token and message["approval"]["actionName"] == "Gate"
    assert message["approval"]["customData"] == f"ship {ref.execution_id}?"  # variables resolved
    review = f"https://conveyor.example.com/console/pipelines/{ref.pipeline_name}/executions/{ref.execution_id}"
    assert message["approval"]["approvalReviewLink"] == f"{review}/approvals/Prod/Gate"  # the console's page
    assert message["conveyor"]["startedBy"] == "dave" and message["conveyor"]["kind"] == "opened"
    headers, body = received[0]
    assert headers["x-conveyor-event"] == "approval.opened"
    assert headers["x-conveyor-signature-256"] == sign(HOOK_SECRET, body)  # verifiable by the receiver
    await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="alice")
    assert (await asyncio.wait_for(conveyor.wait(ref), 30)).status == ExecutionStatus.SUCCEEDED


async def test_a_failing_notification_never_fails_the_approval(
    conveyor: ConveyorClient, worker: Worker, aws_endpoint: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/nobody-listens"
    ref, _ = await conveyor.start(approval("arn:aws:sns:us-east-1:123456789012:missing-topic", closed))
    token = await waiting_token(conveyor, ref, "Prod", "Gate")
    await asyncio.sleep(1)  # the notification has failed at least once by now
    await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="alice")
    final = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert final.status == ExecutionStatus.SUCCEEDED


async def test_reminders_until_the_approval_expires(
    aws_endpoint: str, receiver: tuple[str, list], time_skipping: tuple[WorkflowEnvironment, ConveyorClient]
) -> None:
    hook, received = receiver
    env, conveyor = time_skipping
    declaration = approval("", hook, extra="timeoutInMinutes: 180")
    declaration["stages"][0]["actions"][0]["configuration"].pop("NotificationArn")
    async with build_worker(env.client, conveyor.settings):
        ref, _ = await conveyor.start(declaration)
        await waiting_token(conveyor, ref, "Prod", "Gate")
        for sent in (2, 3):  # an hour on, each reminder is sent before time skips on
            await env.sleep(timedelta(minutes=61))
            await asyncio.wait_for(until(lambda sent=sent: len(received) >= sent), 30)
        await env.sleep(timedelta(minutes=61))  # past the 3 hours
        state = await asyncio.wait_for(conveyor.wait(ref), 30)
    kinds = [json.loads(body)["conveyor"]["kind"] for _, body in received]
    assert kinds == ["opened", "reminder", "reminder"]  # every hour until it expired at 3 hours
    gate = state.stages[0].actions[0]
    assert gate.status == ActionStatus.FAILED and gate.error is not None and gate.error.code == "ApprovalTimedOut"
