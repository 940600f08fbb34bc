"""Delivering a batch of state-change events to the sinks: each sink independently, with bounded retries.

A sink that is down never fails or delays the pipeline beyond the bound: after the retries its failure is returned
as a `SinkResult` (the delivery activity dead-letters the batch for it), never raised. Secrets (the webhook's HMAC
key, the Slack token) are read from the worker's environment when sending and appear in no result, log or error.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from slack_sdk.errors import SlackApiError, SlackClientError

from conveyor.aws.identity import SESSION_NAME_LIMIT, AwsIdentity
from conveyor.event_sinks_config import (
    EventBridgeSink,
    EventsConfig,
    NotificationRule,
    SinkResult,
    SlackSink,
    SnsSink,
    WebhookSink,
    global_events_config,
)
from conveyor.events import EVENT_SOURCE, EventBatch, EventScope, EventState, PipelineEvent
from conveyor.interface import ActionCategory
from conveyor.links import approval_link, execution_link
from conveyor.model import TriggerType
from conveyor.settings import Settings
from conveyor.slack.web import client as slack_client
from conveyor.text import shorten

from .aws.session import AwsSessions

log = structlog.get_logger("conveyor.events")

SIGNATURE_HEADER = "X-Conveyor-Signature"
TIMESTAMP_HEADER = "X-Conveyor-Timestamp"
ATTEMPTS = 4
FIRST_BACKOFF_SECONDS = 0.5  # doubled after each failed attempt: 0.5 + 1 + 2 = 3.5 s of waiting in all
DEADLINE_SECONDS = 40.0  # a sink's whole delivery of a batch, retries included: then its failure is returned
# boto3's own retries and timeouts, kept short so that ours (above) stay the bound
_BOTO_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 2})
EVENTBRIDGE_BATCH = 10  # PutEvents' limit

Sink = WebhookSink | SnsSink | EventBridgeSink | SlackSink

# Events delivered and failed per sink, since the worker started (the metrics exporter reads it).
DELIVERY_COUNTS: Counter[tuple[str, str]] = Counter()


def delivery_counts() -> dict[tuple[str, str], int]:
    """{(sink name, "delivered" | "failed"): events}."""
    return dict(DELIVERY_COUNTS)


class SinkError(Exception):
    """A delivery attempt failed; `retry` False when another attempt cannot do better (a 4xx, a missing secret)."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body): what a receiver recomputes and compares."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class EventSinks:
    """The worker's sinks (CONVEYOR_EVENTS_CONFIG) plus each batch's pipeline sinks."""

    def __init__(
        self,
        settings: Settings,
        *,
        config: EventsConfig | None = None,
        attempts: int = ATTEMPTS,
        first_backoff: float = FIRST_BACKOFF_SECONDS,
        deadline: float = DEADLINE_SECONDS,
    ) -> None:
        self.settings = settings
        self.config = config if config is not None else global_events_config()
        self.attempts = attempts
        self.first_backoff = first_backoff
        self.deadline = deadline
        self.aws = AwsSessions(settings)
        # Kept for the worker's life: a new HTTP client or boto3 client per batch costs about 100 ms (measured).
        self._http: httpx.AsyncClient | None = None
        self._clients: dict[tuple[str | None, str | None, str], tuple[object, Any]] = {}

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def deliver(self, batch: EventBatch) -> list[SinkResult]:
        """One result per sink that had events of the batch to send (its filter matched some)."""
        jobs = []
        for sink in [*self.config.sinks, *batch.pipeline_sinks]:
            events = [
                e
                for e in batch.events
                if sink.filter.matches(batch.pipeline_name, e.scope.value, e.detail.state.value)
                and (not isinstance(sink, SlackSink) or _rule_for(sink, e) is not None)
            ]
            if events:
                jobs.append(self._deliver_to(sink, batch, events))
        return list(await asyncio.gather(*jobs))

    async def _deliver_to(self, sink: Sink, batch: EventBatch, events: list[PipelineEvent]) -> SinkResult:
        """Attempts until the sink accepted every event, a non-retryable error, the attempts or the deadline run out.
        A retry sends only what the sink has not acknowledged yet (`sent`: event ids)."""
        send = self._sender(sink)
        sent: set[str] = set()
        bound = log.bind(sink=sink.name, pipeline=batch.pipeline_name, execution=batch.execution_id)
        error = ""
        try:
            async with asyncio.timeout(self.deadline):
                delay = self.first_backoff
                for attempt in range(1, self.attempts + 1):
                    try:
                        await send([e for e in events if e.id not in sent], sent)
                        error = ""
                        break
                    except SinkError as err:
                        error = str(err)
                        bound.warning("events.sink_failed", attempt=attempt, error=error)
                        if not err.retry or attempt == self.attempts:
                            break
                        await asyncio.sleep(delay)
                        delay *= 2
                    except Exception as err:  # noqa: BLE001  a sink's bug must not fail the delivery of the others
                        error = f"unexpected {type(err).__name__}"  # its text may quote a URL with a token
                        bound.error("events.sink_crashed", attempt=attempt, error=error)
                        break
        except TimeoutError:
            error = f"no delivery within {self.deadline:g} s" + (f" (last error: {error})" if error else "")
        delivered = sum(1 for e in events if e.id in sent)
        DELIVERY_COUNTS[(sink.name, "delivered")] += delivered
        if not error:
            return SinkResult(sink=sink.name, delivered=delivered)
        undelivered = [e.id for e in events if e.id not in sent]
        DELIVERY_COUNTS[(sink.name, "failed")] += len(undelivered)
        return SinkResult(
            sink=sink.name,
            delivered=delivered,
            failed=len(undelivered),
            undelivered=undelivered,
            error=f"sink '{sink.name}' ({sink.type}): {error}",
        )

    def _sender(self, sink: Sink) -> Callable[[list[PipelineEvent], set[str]], Awaitable[None]]:
        if isinstance(sink, WebhookSink):
            return lambda events, sent: _post_webhook(self._http_client(), sink, events, sent)
        if isinstance(sink, SnsSink):
            return lambda events, sent: asyncio.to_thread(self._publish_sns, sink, events, sent)
        if isinstance(sink, EventBridgeSink):
            return lambda events, sent: asyncio.to_thread(self._put_events, sink, events, sent)
        return lambda events, sent: _post_slack(sink, events, sent)

    # -- AWS ----------------------------------------------------------------------------------------------------

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        return self._http

    def _client(self, sink: SnsSink | EventBridgeSink, service: str, region: str | None) -> Any:
        """A boto3 client, reused while its session is (the worker's own credentials refresh themselves; an
        assumed role's session is replaced by AwsSessions before it expires, and with it the client)."""
        key = (sink.role_arn, region, service)
        cached = self._clients.get(key)
        if cached is not None and sink.role_arn is None:
            return cached[1]
        identity = AwsIdentity(
            role_arn=sink.role_arn, region=region, session_name=f"conveyor-events-{sink.name}"[:SESSION_NAME_LIMIT]
        )  # STS allows 64
        try:
            session = self.aws.session(identity, f"events sink {sink.name}")
        except Exception as err:  # an ApplicationError from AssumeRole, already free of credentials
            raise SinkError(shorten(str(err), 300)) from None
        if cached is not None and cached[0] is session:
            return cached[1]
        client = session.client(service, config=_BOTO_CONFIG)  # type: ignore[call-overload]
        self._clients[key] = (session, client)
        return client

    def _publish_sns(self, sink: SnsSink, events: list[PipelineEvent], sent: set[str]) -> None:
        sns = self._client(sink, "sns", sink.region or sink.topic_arn.split(":")[3])
        fifo = sink.topic_arn.endswith(".fifo")
        with _aws_call("sns:Publish", sink.topic_arn):
            for event in events:
                extra = (
                    {"MessageGroupId": event.detail.execution_id, "MessageDeduplicationId": event.id} if fifo else {}
                )
                sns.publish(
                    TopicArn=sink.topic_arn,
                    Message=json.dumps(event.wire()),
                    MessageAttributes={
                        name: {"DataType": "String", "StringValue": value} for name, value in _attributes(event).items()
                    },
                    **extra,
                )
                sent.add(event.id)

    def _put_events(self, sink: EventBridgeSink, events: list[PipelineEvent], sent: set[str]) -> None:
        arn_region = sink.event_bus_name.split(":")[3] if sink.event_bus_name.startswith("arn:") else None
        bridge = self._client(sink, "events", sink.region or arn_region)
        with _aws_call("events:PutEvents", sink.event_bus_name):
            for start in range(0, len(events), EVENTBRIDGE_BATCH):
                entries = [_entry(sink, e) for e in events[start : start + EVENTBRIDGE_BATCH]]
                chunk = events[start : start + EVENTBRIDGE_BATCH]
                response = bridge.put_events(Entries=entries)
                sent.update(e.id for e, r in zip(chunk, response["Entries"], strict=True) if not r.get("ErrorCode"))
                if response.get("FailedEntryCount"):
                    codes = {str(e.get("ErrorCode")) for e in response["Entries"] if e.get("ErrorCode")}
                    raise SinkError(f"PutEvents rejected {response['FailedEntryCount']} events ({', '.join(codes)})")


def _attributes(event: PipelineEvent) -> dict[str, str]:
    """SNS message attributes a subscription's filter policy can select on."""
    attributes = {
        "pipeline": event.detail.pipeline,
        "detail-type": event.scope.detail_type,
        "state": event.detail.state.value,
        "execution-id": event.detail.execution_id,
    }
    if event.detail.stage:
        attributes["stage"] = event.detail.stage
    return attributes


def _entry(sink: EventBridgeSink, event: PipelineEvent) -> dict[str, Any]:
    wire = event.wire()
    return {
        "Source": EVENT_SOURCE,
        "DetailType": event.scope.detail_type,
        "Detail": json.dumps(wire["detail"]),
        "Resources": wire["resources"],
        "Time": event.time,
        "EventBusName": sink.event_bus_name,
    }


@contextmanager
def _aws_call(call: str, target: str) -> Iterator[None]:
    """AWS failures as SinkErrors: throttling, 5xx and connection failures retried; the rest not. The messages
    carry the error code and AWS's message, never credentials."""
    try:
        yield
    except ClientError as err:
        error = err.response.get("Error", {})
        code = str(error.get("Code") or "")
        status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = "" if status == 403 else shorten(str(error.get("Message") or ""), 200)
        retry = status >= 500 or status == 429 or "Throttl" in code
        text = f"{call} on {target}: {code or status}" + (f": {message}" if message else "")
        raise SinkError(text, retry=retry) from None
    except NoCredentialsError:
        raise SinkError(f"{call}: the worker has no AWS credentials (boto3's standard chain)", retry=False) from None
    except BotoCoreError as err:
        raise SinkError(f"{call} on {target}: {shorten(str(err), 200)}") from None


# -- webhook ----------------------------------------------------------------------------------------------------


def _origin(url: str) -> str:
    """The URL's scheme and host only, for errors and logs: some receivers put a token in the path or query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."


async def _post_webhook(
    http: httpx.AsyncClient, sink: WebhookSink, events: list[PipelineEvent], sent: set[str]
) -> None:
    secret = os.environ.get(sink.secret_env)
    if not secret:
        raise SinkError(f"the worker has no {sink.secret_env} (the webhook's signing secret)", retry=False)
    where = _origin(sink.url)
    body = json.dumps([e.wire() for e in events], separators=(",", ":")).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        "User-Agent": "conveyor-events",
    }
    try:
        response = await http.post(sink.url, content=body, headers=headers, timeout=sink.timeout_seconds)
    except httpx.HTTPError as err:
        detail = shorten(str(err).replace(sink.url, where), 200)
        raise SinkError(f"POST {where}: {type(err).__name__}" + (f": {detail}" if detail else "")) from None
    if response.status_code >= 300:
        retry = response.status_code >= 500 or response.status_code in (408, 429)
        raise SinkError(f"POST {where}: HTTP {response.status_code}", retry=retry)
    sent.update(e.id for e in events)


# -- Slack notification rules -----------------------------------------------------------------------------------


def _rule_for(sink: SlackSink, event: PipelineEvent) -> NotificationRule | None:
    """The sink's rule the event answers to, if any."""
    detail = event.detail
    if event.scope == EventScope.PIPELINE and detail.state == EventState.FAILED:
        rule: NotificationRule | None = NotificationRule.FAILURE
    elif (
        event.scope == EventScope.ACTION
        and detail.state == EventState.STARTED
        and detail.type is not None
        and detail.type.category == ActionCategory.APPROVAL
    ):
        rule = NotificationRule.APPROVAL_WAITING
    elif (
        event.scope == EventScope.PIPELINE
        and detail.state == EventState.STARTED
        and detail.execution_trigger is not None
        and detail.execution_trigger.trigger_type in (TriggerType.AUTOMATED_ROLLBACK, TriggerType.MANUAL_ROLLBACK)
    ):
        rule = NotificationRule.ROLLBACK_STARTED
    else:
        rule = None
    return rule if rule in sink.rules else None


def notification_text(rule: NotificationRule, event: PipelineEvent) -> str:
    detail = event.detail
    where = f"*{detail.pipeline}* execution `{detail.execution_id}`"
    if rule == NotificationRule.FAILURE:
        text = f":x: {where} failed" + (f": {shorten(detail.summary, 500)}" if detail.summary else "")
    elif rule == NotificationRule.APPROVAL_WAITING:
        text = f":hourglass: {where} is waiting for approval `{detail.action}` in stage `{detail.stage}`"
    else:
        trigger = detail.execution_trigger.trigger_type if detail.execution_trigger else ""
        text = f":rewind: {where} started a rollback ({trigger})"
    if rule == NotificationRule.APPROVAL_WAITING and detail.stage and detail.action:
        link, label = approval_link(detail.pipeline, detail.execution_id, detail.stage, detail.action), "Review it"
    else:
        link, label = execution_link(detail.pipeline, detail.execution_id), "Open the execution"
    return f"{text}\n<{link}|{label}>" if link else text


async def _post_slack(sink: SlackSink, events: list[PipelineEvent], sent: set[str]) -> None:
    token = os.environ.get(sink.token_env)
    if not token:
        raise SinkError(f"the worker has no {sink.token_env} to post to Slack with", retry=False)
    slack = slack_client(token)
    for event in events:
        rule = _rule_for(sink, event)
        if rule is None:  # deliver() passes only events a rule chose
            continue
        try:
            await slack.chat_postMessage(
                channel=sink.channel,
                text=notification_text(rule, event),
                metadata={"event_type": "conveyor_event", "event_payload": {"id": event.id, "rule": rule.value}},
            )
        except SlackApiError as err:
            error = str(err.response.get("error"))
            retry = error in ("ratelimited", "internal_error", "service_unavailable", "fatal_error")
            raise SinkError(f"Slack refused the message: {error}", retry=retry) from None
        except (SlackClientError, OSError) as err:
            raise SinkError(f"Slack is unreachable: {shorten(str(err), 200)}") from None
        sent.add(event.id)
