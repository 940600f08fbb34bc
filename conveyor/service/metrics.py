"""`conveyor serve`'s own Prometheus metrics, served at its /metrics: webhook deliveries, Slack requests and the
Lambda job listener's calls. One registry per service (not the process-wide default), so two services in one
process (the tests) never collide. Labels never carry what an unauthenticated caller chose: a refused webhook is
counted by reason, not by the pipeline named in its URL."""

from __future__ import annotations

from enum import StrEnum

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest


class WebhookOutcome(StrEnum):
    STARTED = "started"  # a new execution
    DUPLICATE = "duplicate"  # a redelivery: its execution exists already
    FILTERED = "filtered"  # no trigger filter matched
    IGNORED = "ignored"  # a ping, an event kind or action that starts nothing
    INVALID = "invalid"  # an unreadable payload or a missing delivery id
    UNKNOWN_PIPELINE = "unknown_pipeline"


class WebhookRefusal(StrEnum):
    NO_SECRET = "no_secret"
    BAD_SIGNATURE = "bad_signature"


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhooks_received = Counter(
            "conveyor_serve_webhooks_received",
            "Signed Git hosting webhook deliveries, by pipeline and what they did",
            ["pipeline", "outcome"],
            registry=self.registry,
        )
        self.webhooks_refused = Counter(
            "conveyor_serve_webhooks_refused",
            "Webhook deliveries refused before reading them (no secret, bad signature)",
            ["reason"],
            registry=self.registry,
        )
        self.slack_requests = Counter(
            "conveyor_serve_slack_requests",
            "Slack app requests over HTTP (interactions, commands, events), by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.job_calls = Counter(
            "conveyor_serve_job_listener_calls",
            "Calls to the Lambda job listener (PutJobSuccessResult/PutJobFailureResult), by operation and status",
            ["operation", "status"],
            registry=self.registry,
        )

    def webhook(self, pipeline: str, outcome: WebhookOutcome) -> None:
        self.webhooks_received.labels(pipeline=pipeline, outcome=outcome.value).inc()

    def refused(self, reason: WebhookRefusal) -> None:
        self.webhooks_refused.labels(reason=reason.value).inc()

    def slack(self, status: int) -> None:
        self.slack_requests.labels(status=str(status)).inc()

    def job_call(self, operation: str, status: int) -> None:
        known = operation in ("PutJobSuccessResult", "PutJobFailureResult")
        self.job_calls.labels(operation=operation if known else "other", status=str(status)).inc()

    def exposition(self) -> tuple[bytes, str]:
        """The text format and its content type, for the /metrics response."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
