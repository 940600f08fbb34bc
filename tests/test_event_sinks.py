"""The event sinks (activities/event_sinks.py) called directly with events built from conveyor/events.py: a signed
webhook on loopback, retries and the bounded failure, filters, SNS and EventBridge on moto, Slack notification rules
against the fake Slack Web API, and the configuration's error messages."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from activities.event_sinks import (
    FIRST_BACKOFF_SECONDS,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EventSinks,
    delivery_counts,
)
from conveyor.event_sinks_config import (
    EVENTS_CONFIG_ENV,
    EventsConfig,
    EventsConfigError,
    WebhookSink,
    global_events_config,
    load_events_config,
)
from conveyor.events import (
    ActionType,
    EventBatch,
    EventDetail,
    EventScope,
    EventState,
    ExecutionTrigger,
    PipelineEvent,
    event_id,
)
from conveyor.settings import Settings
from conveyor.spec.validation import validate_pipeline
from tests.aws import ACCOUNT, REGION, Aws
from tests.slack_fake import FakeSlack

SECRET = "s3cr3t-for-tests"
SECRET_ENV = "TEST_CONVEYOR_WEBHOOK_SECRET"
EXECUTION = "e-0001"


def event(
    sequence: int,
    scope: EventScope,
    state: EventState,
    *,
    pipeline: str = "web",
    stage: str | None = None,
    action: str | None = None,
    category: str | None = None,
    trigger: str | None = None,
    summary: str | None = None,
) -> PipelineEvent:
    return PipelineEvent(
        id=event_id(EXECUTION, "execution", sequence),
        sequence=sequence,
        scope=scope,
        time=datetime(2026, 11, 29, 12, 0, sequence, tzinfo=UTC),
        detail=EventDetail(
            pipeline=pipeline,
            version=1,
            execution_id=EXECUTION,
            state=state,
            stage=stage,
            action=action,
            type=ActionType(owner="AWS", category=category, provider="Manual") if category else None,
            execution_trigger=ExecutionTrigger(trigger_type=trigger) if trigger else None,
            summary=summary,
        ),
    )


def run_events(pipeline: str = "web") -> list[PipelineEvent]:
    """A small execution: started, a stage and its action, then a failure."""
    return [
        event(1, EventScope.PIPELINE, EventState.STARTED, pipeline=pipeline, trigger="StartPipelineExecution"),
        event(2, EventScope.STAGE, EventState.STARTED, pipeline=pipeline, stage="Build"),
        event(3, EventScope.ACTION, EventState.STARTED, pipeline=pipeline, stage="Build", action="b", category="Build"),
        event(4, EventScope.ACTION, EventState.FAILED, pipeline=pipeline, stage="Build", action="b", category="Build"),
        event(5, EventScope.STAGE, EventState.FAILED, pipeline=pipeline, stage="Build"),
        event(6, EventScope.PIPELINE, EventState.FAILED, pipeline=pipeline, summary="action b failed: exit 2"),
    ]


def batch(
    events: list[PipelineEvent], *, pipeline: str = "web", sinks: list[dict[str, Any]] | None = None
) -> EventBatch:
    return EventBatch.model_validate(
        {
            "pipelineName": pipeline,
            "executionId": EXECUTION,
            "origin": "execution",
            "events": [e.model_dump(mode="json", by_alias=True) for e in events],
            "pipelineSinks": sinks or [],
        }
    )


def config(*sinks: dict[str, Any]) -> EventsConfig:
    return EventsConfig.model_validate({"sinks": list(sinks)})


_OPEN: list[EventSinks] = []


def sinks(tmp_path: Path, *configured: dict[str, Any], backoff: float = 0.05, **options: Any) -> EventSinks:
    made = EventSinks(Settings(data_dir=tmp_path), config=config(*configured), first_backoff=backoff, **options)
    _OPEN.append(made)
    return made


@pytest_asyncio.fixture(autouse=True)
async def _close_sinks() -> AsyncIterator[None]:
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


@dataclass
class Receiver:
    """A webhook receiver on loopback that verifies signatures as the README says a receiver should."""

    statuses: list[int] = field(default_factory=list)  # answers to the first requests (then 200)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    delay: float = 0  # seconds each answer takes

    def verified(self) -> list[list[dict[str, Any]]]:
        """Each request's events, after checking its signature and timestamp (AssertionError if either is bad)."""
        out = []
        for headers, body in self.requests:
            timestamp = headers[TIMESTAMP_HEADER]
            assert abs(time.time() - int(timestamp)) < 300, "a stale timestamp: a replay"
            expected = (
                "sha256=" + hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
            )
            assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
            out.append(json.loads(body))
        return out

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


@pytest_asyncio.fixture
async def receiver(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Receiver]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    found = Receiver()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    found.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield found
    await runner.cleanup()


def webhook(url: str, name: str = "hook", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "url": url, "secretEnv": SECRET_ENV, **extra}


# -- webhook ------------------------------------------------------------------------------------------------------


async def test_webhook_receives_the_batch_signed_in_order(tmp_path: Path, receiver: Receiver) -> None:
    events = run_events()
    results = await sinks(tmp_path, webhook(receiver.url)).deliver(batch(events))
    assert [(r.sink, r.delivered, r.error) for r in results] == [("hook", 6, None)]
    (received,) = receiver.verified()
    assert [e["id"] for e in received] == [e.id for e in events]
    assert received[0]["detail-type"] == "CodePipeline Pipeline Execution State Change"
    assert received[0]["source"] == "conveyor"
    assert received[-1]["detail"]["state"] == "FAILED"
    assert received[-1]["detail"]["execution-id"] == EXECUTION


async def test_a_tampered_body_fails_verification(tmp_path: Path, receiver: Receiver) -> None:
    await sinks(tmp_path, webhook(receiver.url)).deliver(batch(run_events()[:1]))
    headers, body = receiver.requests[0]
    receiver.requests[0] = (headers, body.replace(b"STARTED", b"SUCCEEDED"))
    with pytest.raises(AssertionError):
        receiver.verified()


async def test_webhook_down_then_up_is_retried(tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [503, 502]
    before = delivery_counts().get(("flaky", "delivered"), 0)
    results = await sinks(tmp_path, webhook(receiver.url, "flaky")).deliver(batch(run_events()))
    assert [(r.delivered, r.error) for r in results] == [(6, None)]
    assert len(receiver.requests) == 3
    assert len(receiver.verified()) == 3  # each attempt signed
    assert delivery_counts()[("flaky", "delivered")] == before + 6


async def test_webhook_down_for_good_returns_the_failure_within_the_bound(tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [503] * 10
    before = delivery_counts().get(("down", "failed"), 0)
    started = time.monotonic()
    # the default retries and backoff: the bound a real worker has
    results = await sinks(tmp_path, webhook(receiver.url, "down"), backoff=FIRST_BACKOFF_SECONDS).deliver(
        batch(run_events())
    )
    elapsed = time.monotonic() - started
    (result,) = results
    assert result.sink == "down" and result.delivered == 0 and result.failed == 6
    assert result.error is not None and "HTTP 503" in result.error
    assert len(receiver.requests) == 4
    assert elapsed < 15
    assert result.undelivered == [e.id for e in run_events()]
    assert delivery_counts()[("down", "failed")] == before + 6


async def test_a_hanging_webhook_is_cut_off_at_the_deadline(tmp_path: Path, receiver: Receiver) -> None:
    receiver.delay = 3  # longer than the deadline (the teardown waits for the answer)
    configured = sinks(tmp_path, webhook(receiver.url, "slow", timeoutSeconds=20), deadline=1)
    started = time.monotonic()
    (result,) = await configured.deliver(batch(run_events()))
    assert time.monotonic() - started < 5
    assert result.error is not None and "no delivery within 1 s" in result.error and result.failed == 6


async def test_an_unreachable_webhook_and_a_client_error(tmp_path: Path, receiver: Receiver) -> None:
    refused = receiver.url.replace("/hook", "/nowhere")  # 404: not worth retrying
    unreachable = "http://127.0.0.1:9/hook"  # the discard port: nothing listens on loopback
    results = await sinks(tmp_path, webhook(refused, "a"), webhook(unreachable, "b")).deliver(batch(run_events()[:2]))
    by_name = {r.sink: r for r in results}
    assert by_name["a"].error is not None and "HTTP 404" in by_name["a"].error
    assert by_name["b"].error is not None and "ConnectError" in by_name["b"].error
    assert len(receiver.requests) == 0  # the 404 route is not the receiver's


async def test_errors_do_not_show_a_webhooks_path_or_query(tmp_path: Path, receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    secret_url = receiver.url + "?token=T0KEN"
    url_with_token_path = receiver.url.replace("/hook", "/T0KEN/hook")  # 404 on this receiver
    results = await sinks(tmp_path, webhook(secret_url, "q"), webhook(url_with_token_path, "p")).deliver(
        batch(run_events()[:1])
    )
    errors = [r.error or "" for r in results]
    assert all("HTTP" in e for e in errors)
    assert not any("T0KEN" in e for e in errors), errors


async def test_a_sink_that_crashes_is_a_returned_failure(tmp_path: Path, receiver: Receiver) -> None:
    broken = WebhookSink.model_construct(
        type="webhook", name="bad", url="http://[::1/hook", secret_env=SECRET_ENV
    )  # unvalidated
    made = sinks(tmp_path, webhook(receiver.url, "good"))
    made.config = EventsConfig.model_construct(sinks=[broken, *made.config.sinks])
    results = await made.deliver(batch(run_events()[:1]))
    assert [(r.sink, r.failed, r.error) for r in results] == [
        ("bad", 1, "sink 'bad' (webhook): unexpected ValueError"),
        ("good", 0, None),
    ]


async def test_a_missing_secret_fails_without_retrying_and_names_the_variable(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    (result,) = await sinks(tmp_path, webhook(receiver.url), backoff=5).deliver(batch(run_events()[:1]))
    assert result.error is not None and SECRET_ENV in result.error
    assert receiver.requests == []


async def test_one_sink_down_does_not_stop_another(tmp_path: Path, receiver: Receiver) -> None:
    results = await sinks(tmp_path, webhook("http://127.0.0.1:9/x", "dead"), webhook(receiver.url, "live")).deliver(
        batch(run_events())
    )
    assert {r.sink: r.delivered for r in results} == {"dead": 0, "live": 6}


# -- filters ------------------------------------------------------------------------------------------------------


async def test_filters_choose_pipelines_scopes_and_states(tmp_path: Path, receiver: Receiver) -> None:
    configured = sinks(
        tmp_path,
        webhook(receiver.url, "prod-failures", filter={"pipelines": ["prod-*"], "states": ["failed"]}),
        webhook(receiver.url, "stages", filter={"scopes": ["Stage"]}),
    )
    results = await configured.deliver(batch(run_events("prod-web"), pipeline="prod-web"))
    assert {r.sink: r.delivered for r in results} == {"prod-failures": 3, "stages": 2}
    results = await configured.deliver(batch(run_events("dev-web"), pipeline="dev-web"))
    assert {r.sink: r.delivered for r in results} == {"stages": 2}  # no result for a sink with nothing to send
    states = sorted(
        e["detail"]["state"] + "/" + e["detail-type"].split()[1] for body in receiver.verified() for e in body
    )
    assert states.count("FAILED/Pipeline") == 1
    assert states.count("STARTED/Stage") == 2  # stages' STARTED of both pipelines


async def test_a_pipelines_own_sinks_travel_in_the_batch(tmp_path: Path, receiver: Receiver) -> None:
    own = [webhook(receiver.url, "own", filter={"scopes": ["Pipeline"]})]
    results = await sinks(tmp_path).deliver(batch(run_events(), sinks=own))
    assert [(r.sink, r.delivered) for r in results] == [("own", 2)]
    # and the batch crosses Temporal as JSON
    again = EventBatch.model_validate_json(batch(run_events(), sinks=own).model_dump_json(by_alias=True))
    assert again.pipeline_sinks[0].name == "own"


# -- SNS and EventBridge on moto ----------------------------------------------------------------------------------


def _queue(aws: Aws, name: str) -> tuple[Any, str, str]:
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs, url, arn


def _drain(sqs: Any, url: str, expected: int) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(bodies) < expected and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []):
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


async def test_sns_publishes_each_event_with_attributes(tmp_path: Path, aws: Aws) -> None:
    topic = aws.client("sns").create_topic(Name="conveyor-events")["TopicArn"]
    sqs, url, queue_arn = _queue(aws, "from-sns")
    aws.client("sns").subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    configured = sinks(tmp_path, {"name": "topic", "type": "sns", "topicArn": topic, "filter": {"states": ["FAILED"]}})
    results = await configured.deliver(batch(run_events()))
    assert [(r.sink, r.delivered, r.error) for r in results] == [("topic", 3, None)]
    notifications = _drain(sqs, url, 3)
    assert len(notifications) == 3
    messages = [json.loads(n["Message"]) for n in notifications]
    assert sorted(m["detail"]["state"] for m in messages) == ["FAILED"] * 3
    attributes = {n["MessageAttributes"]["detail-type"]["Value"] for n in notifications}
    assert attributes == {f"CodePipeline {s} Execution State Change" for s in ("Pipeline", "Stage", "Action")}
    assert {n["MessageAttributes"]["pipeline"]["Value"] for n in notifications} == {"web"}


async def test_sns_to_a_missing_topic_is_a_returned_failure(tmp_path: Path, aws: Aws) -> None:
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:nobody-made-this"
    (result,) = await sinks(tmp_path, {"name": "t", "type": "sns", "topicArn": topic}).deliver(batch(run_events()[:1]))
    assert result.delivered == 0 and result.error is not None and "sns:Publish" in result.error


async def test_eventbridge_puts_events_a_rule_routes_to_sqs(tmp_path: Path, aws: Aws) -> None:
    events_client = aws.client("events")
    events_client.create_event_bus(Name="releases")
    sqs, url, queue_arn = _queue(aws, "from-bridge")
    events_client.put_rule(
        Name="conveyor-actions",
        EventBusName="releases",
        EventPattern=json.dumps(
            {"source": ["conveyor"], "detail-type": ["CodePipeline Action Execution State Change"]}
        ),
    )
    events_client.put_targets(Rule="conveyor-actions", EventBusName="releases", Targets=[{"Id": "q", "Arn": queue_arn}])
    many = [
        event(i, EventScope.ACTION, EventState.SUCCEEDED, stage="Deploy", action=f"a{i}", category="Deploy")
        for i in range(1, 24)
    ]  # three PutEvents calls of at most 10
    bus = {
        "name": "bus",
        "type": "eventbridge",
        "eventBusName": "releases",
        "roleArn": f"arn:aws:iam::{ACCOUNT}:role/conveyor-events",  # assumed (moto's STS)
    }
    results = await sinks(tmp_path, bus).deliver(batch([*run_events()[:2], *many]))
    assert [(r.sink, r.delivered, r.error) for r in results] == [(bus["name"], 25, None)]
    received = _drain(sqs, url, 23)
    assert len(received) == 23  # the rule matched the actions only
    assert {r["source"] for r in received} == {"conveyor"}
    assert sorted(r["detail"]["action"] for r in received) == sorted(f"a{i}" for i in range(1, 24))
    assert received[0]["detail"]["execution-id"] == EXECUTION


# -- Slack notification rules -------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def slack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    await fake.start()
    monkeypatch.setenv("SLACK_BOT_TOKEN", fake.bot_token)
    monkeypatch.setenv("SLACK_API_URL", fake.base_url)
    monkeypatch.setenv("CONVEYOR_PUBLIC_URL", "https://conveyor.example.com/")
    yield fake
    await fake.stop()


async def test_slack_posts_a_failure_an_approval_and_a_rollback_with_links(tmp_path: Path, slack: FakeSlack) -> None:
    events = [
        *run_events(),
        event(7, EventScope.ACTION, EventState.STARTED, stage="Prod", action="sign-off", category="Approval"),
        event(8, EventScope.PIPELINE, EventState.STARTED, trigger="AutomatedRollback"),
        event(9, EventScope.PIPELINE, EventState.SUCCEEDED),
    ]
    results = await sinks(tmp_path, {"name": "ops", "type": "slack", "channel": "C0OPS"}).deliver(batch(events))
    assert [(r.sink, r.delivered, r.error) for r in results] == [("ops", 3, None)]
    texts = [m.text for m in slack.messages]
    assert [m.channel for m in slack.messages] == ["C0OPS"] * 3
    assert "failed: action b failed: exit 2" in texts[0]
    assert "waiting for approval `sign-off` in stage `Prod`" in texts[1]
    assert "rollback" in texts[2] and "AutomatedRollback" in texts[2]
    link = f"https://conveyor.example.com/pipelines/web/executions/{EXECUTION}"
    assert f"<{link}|Open the execution>" in texts[0] and f"<{link}|Open the execution>" in texts[2]
    assert f"<{link}/approvals/Prod/sign-off|Review it>" in texts[1]  # the console's approval page


async def test_slack_rules_choose_the_events(tmp_path: Path, slack: FakeSlack) -> None:
    only_failures = {"name": "f", "type": "slack", "channel": "C1", "rules": ["failure"]}
    events = [
        *run_events(),
        event(7, EventScope.ACTION, EventState.STARTED, stage="P", action="x", category="Approval"),
    ]
    results = await sinks(tmp_path, only_failures).deliver(batch(events))
    assert [(r.delivered, r.error) for r in results] == [(1, None)]
    assert len(slack.messages) == 1 and "failed" in slack.messages[0].text


async def test_slack_without_a_token_is_a_returned_failure(
    tmp_path: Path, slack: FakeSlack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    (result,) = await sinks(tmp_path, {"name": "f", "type": "slack", "channel": "C1"}).deliver(batch(run_events()))
    assert result.error is not None and "SLACK_BOT_TOKEN" in result.error
    assert slack.messages == []


# -- configuration ------------------------------------------------------------------------------------------------


def _load(tmp_path: Path, text: str) -> str:
    path = tmp_path / "events.yaml"
    path.write_text(text)
    with pytest.raises(EventsConfigError) as raised:
        load_events_config(path)
    message = str(raised.value)
    assert str(path) in message
    return message


def test_config_file_loads_every_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "events.yaml"
    path.write_text(
        """
sinks:
  - {name: hook, type: webhook, url: "https://example.com/h", secretEnv: HOOK_SECRET,
     filter: {pipelines: ["prod-*"], states: [FAILED, succeeded], scopes: [pipeline]}}
  - {name: topic, type: sns, topicArn: "arn:aws:sns:eu-west-1:123456789012:events"}
  - {name: bus, type: eventbridge}
  - {name: ops, type: slack, channel: C0OPS, rules: [failure, rollback-started]}
"""
    )
    monkeypatch.setenv(EVENTS_CONFIG_ENV, str(path))
    loaded = global_events_config()
    assert [s.name for s in loaded.sinks] == ["hook", "topic", "bus", "ops"]
    assert loaded.sinks[0].filter.states == ["FAILED", "SUCCEEDED"]
    assert loaded.sinks[0].filter.scopes == ["Pipeline"]
    monkeypatch.delenv(EVENTS_CONFIG_ENV)
    assert global_events_config().sinks == []


def test_config_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    message = _load(tmp_path, "sinks:\n  - {name: h, type: webhook, url: 'https://x', secret: hunter2}\n")
    assert "sinks.0.webhook.secret: unknown field" in message and "secretEnv" in message
    assert "hunter2" not in message.replace("secret: hunter2", "")  # the value is not echoed
    message = _load(tmp_path, "sinks:\n  - {name: h, type: webhook, url: 'https://x', secretEnv: 'not a name'}\n")
    assert "sinks.0.webhook.secretEnv" in message and "environment variable name" in message
    message = _load(tmp_path, "sinks:\n  - {name: h, type: webhook, url: 'http://[::1/x', secretEnv: S}\n")
    assert "sinks.0.webhook.url" in message and "not a usable URL" in message
    message = _load(tmp_path, "sinks:\n  - {name: h, type: webhook, url: 'ftp://x/y', secretEnv: S}\n")
    assert "not an http(s) URL" in message
    message = _load(tmp_path, "sinks:\n  - {name: h, type: carrier-pigeon}\n")
    assert "unknown sink type: one of webhook, sns, eventbridge, slack" in message
    message = _load(tmp_path, "sinks:\n  - {name: h, type: sns, topicArn: mytopic}\n")
    assert "sinks.0.sns.topicArn" in message and "not an SNS topic ARN" in message
    message = _load(tmp_path, "sinks:\n  - {name: h, type: eventbridge, filter: {states: [EXPLODED]}}\n")
    assert "sinks.0.eventbridge.filter.states" in message and "unknown state 'EXPLODED'" in message
    message = _load(tmp_path, "sinks:\n  - {name: h, type: slack, channel: C1, rules: [birthdays]}\n")
    assert "sinks.0.slack.rules.0" in message
    message = _load(tmp_path, "sinks:\n  - {name: a, type: eventbridge}\n  - {name: a, type: eventbridge}\n")
    assert "two sinks are named 'a'" in message
    assert "cannot read it as YAML" in _load(tmp_path, "sinks: [\n")
    assert "expected a mapping" in _load(tmp_path, "- a\n")
    with pytest.raises(EventsConfigError, match="no such file"):
        load_events_config(tmp_path / "missing.yaml")


def _declaration(events: dict[str, Any]) -> dict[str, Any]:
    commands = {"actionTypeId": {"category": "Build", "owner": "Custom", "provider": "Commands"}, "commands": ["true"]}
    return {
        "name": "web",
        "conveyor": {"events": events},
        "stages": [{"name": s, "actions": [{"name": s.lower(), **commands}]} for s in ("One", "Two")],
    }


def test_a_pipelines_events_in_its_declaration() -> None:
    report = validate_pipeline(
        _declaration({"sinks": [{"name": "mine", "type": "eventbridge", "filter": {"states": ["FAILED"]}}]})
    )
    assert report.ok, report.errors
    assert report.pipeline is not None and report.pipeline.conveyor is not None
    events = report.pipeline.conveyor.events
    assert events is not None and events.sinks[0].name == "mine"
    report = validate_pipeline(
        _declaration(
            {
                "sinks": [
                    {"name": "h", "type": "webhook", "url": "https://x", "secret": "hunter2"},
                    {"name": "b", "type": "eventbridge", "filter": {"scopes": ["Job"]}},
                    {"name": "c", "type": "pigeon"},
                ]
            }
        )
    )
    rendered = [issue.render("web.yaml") for issue in report.errors]
    assert "web.yaml: conveyor.events.sinks[0].webhook.secretEnv: required field is missing" in rendered
    assert any("sinks[0].webhook.secret: unknown field 'secret'" in line for line in rendered)
    assert any("sinks[1].eventbridge.filter.scopes" in line and "unknown scope 'Job'" in line for line in rendered)
    assert any("sinks[2]" in line and "'webhook', 'sns', 'eventbridge', 'slack'" in line for line in rendered)
    assert not any("hunter2" in line for line in rendered)
