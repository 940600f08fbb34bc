"""The ASGI application behind `conveyor serve`: health, readiness, Git hosting webhooks and the Slack app."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from conveyor.client import ConveyorClient, ConveyorError
from conveyor.console.app import console_app
from conveyor.console.auth import ConsoleOptions
from conveyor.model import SourceRevisionOverride, Trigger, TriggerType
from conveyor.service.github import (
    PullRequestPayload,
    PushPayload,
    WebhookSecrets,
    pull_request_event,
    push_event,
    signature_valid,
)
from conveyor.service.metrics import ServiceMetrics, WebhookOutcome, WebhookRefusal
from conveyor.slack.app import SlackOptions, create_slack_app
from conveyor.spec.validation import parse_pipeline
from conveyor.triggers import GitEvent, matching_trigger

log = structlog.get_logger("conveyor.service")
ClientFactory = Callable[[], Awaitable[ConveyorClient]]


def create_app(
    client_factory: ClientFactory,
    secrets: WebhookSecrets | None = None,
    slack: SlackOptions | None = None,
    metrics: ServiceMetrics | None = None,
    console: ConsoleOptions | None = None,
) -> FastAPI:
    """The service; `client_factory` connects to Temporal once, at start-up. With `slack`, the Slack app
    takes interactions at /slack/events (HTTP mode) and/or over a Socket Mode websocket. With `console`,
    the web console is served under /console/ (and / leads there)."""
    secrets = secrets or WebhookSecrets()
    counted = metrics or ServiceMetrics()  # served at /metrics (the job listener counts into the same one)
    holder: dict[str, ConveyorClient] = {}
    bolt = (
        create_slack_app(lambda: holder["client"], slack.web_client(), slack.directory, slack.signing_secret)
        if slack
        else None
    )
    slack_http = AsyncSlackRequestHandler(bolt) if bolt and slack and slack.signing_secret else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        holder["client"] = await client_factory()
        socket = None
        if bolt is not None and slack is not None and slack.app_token:
            socket = AsyncSocketModeHandler(bolt, slack.app_token)
            await socket.connect_async()  # type: ignore[no-untyped-call]  # slack_sdk leaves it unannotated
            log.info("slack.socket_mode_connected")
        try:
            yield
        finally:
            if socket is not None:
                await socket.close_async()  # type: ignore[no-untyped-call]

    app = FastAPI(title="Conveyor", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def access_log(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # Method, path, status and time only: never headers or bodies, which carry signatures and secrets.
        began = time.perf_counter()
        response = await call_next(request)
        log.info(
            "http.request",
            method=request.method,
            path=request.url.path,
            status=response.status_code,
            duration_ms=round((time.perf_counter() - began) * 1000, 1),
        )
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            await asyncio.wait_for(
                holder["client"].temporal.workflow_service.get_system_info(GetSystemInfoRequest()), 5
            )
        except Exception as err:  # noqa: BLE001 - not ready, whatever the cause
            return JSONResponse({"status": "unavailable", "reason": f"Temporal: {type(err).__name__}"}, 503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        body, content_type = counted.exposition()
        return Response(body, media_type=content_type)

    if console is not None:
        app.mount("/console", console_app(lambda: holder["client"], console))

        @app.get("/", include_in_schema=False)
        async def home() -> RedirectResponse:
            return RedirectResponse("/console/", status_code=303)

    @app.post("/slack/events")
    async def slack_events(request: Request) -> Response:
        if slack_http is None:
            return _error(404, "the Slack app is not served over HTTP here (no slack signing secret configured)")
        response = await slack_http.handle(request)
        counted.slack(response.status_code)
        if response.status_code == 401:
            log.warning("slack.refused", reason="bad or stale signature")
        return response

    @app.post("/webhooks/github/{pipeline}")
    async def github(pipeline: str, request: Request) -> JSONResponse:
        body = await request.body()  # the raw bytes: the signature is over exactly these
        secret = secrets.for_pipeline(pipeline)
        if secret is None:
            log.warning("webhook.refused", pipeline=pipeline, reason="no secret configured")
            counted.refused(WebhookRefusal.NO_SECRET)
            variable = secrets.variable_for_pipeline(pipeline)
            return _error(401, f"no webhook secret is configured for this pipeline ({variable})")
        if not signature_valid(secret, body, request.headers.get("X-Hub-Signature-256")):
            log.warning("webhook.refused", pipeline=pipeline, reason="bad signature")
            counted.refused(WebhookRefusal.BAD_SIGNATURE)
            return _error(401, "missing or invalid X-Hub-Signature-256")
        response, outcome = await delivered(pipeline, body, request)
        counted.webhook(pipeline, outcome)
        return response

    async def delivered(pipeline: str, body: bytes, request: Request) -> tuple[JSONResponse, WebhookOutcome]:
        """A signed delivery: what it did, and the answer."""
        kind = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery")
        if kind == "ping":
            return JSONResponse({"pong": True}), WebhookOutcome.IGNORED
        if kind not in ("push", "pull_request"):
            return JSONResponse(
                {"started": False, "reason": f"event '{kind}' is not handled"}, 202
            ), WebhookOutcome.IGNORED
        if not delivery:
            return _error(400, "missing X-GitHub-Delivery"), WebhookOutcome.INVALID
        try:
            data = json.loads(body)
            event = _parse(kind, data)
        except (ValueError, ValidationError) as err:
            return _error(400, f"unreadable {kind} payload: {str(err).splitlines()[0]}"), WebhookOutcome.INVALID
        if event is None:
            return JSONResponse({"started": False, "reason": "this event starts nothing"}, 200), WebhookOutcome.IGNORED
        client = holder["client"]
        try:
            _, declaration = await client.registered(pipeline)
        except ConveyorError as err:
            return _error(404, str(err)), WebhookOutcome.UNKNOWN_PIPELINE
        registered = parse_pipeline(declaration, pipeline)
        trigger = matching_trigger(registered, event)
        if trigger is None:
            log.info("webhook.filtered", pipeline=pipeline, kind=kind, delivery=delivery)
            return JSONResponse({"started": False, "reason": "no trigger filter matched"}, 200), WebhookOutcome.FILTERED
        ref, started = await client.start(
            declaration,
            # The delivery id maps to the execution id: a redelivery, even days later, starts nothing new.
            token=f"github-delivery:{delivery}",
            source_revisions=[
                SourceRevisionOverride(
                    action_name=trigger.git_configuration.source_action_name, revision_value=event.commit
                )
            ],
            trigger=Trigger(
                trigger_type=TriggerType.WEBHOOK_V2, trigger_detail=f"GitHub {kind} {_describe(event)} ({delivery})"
            ),
            started_by=f"github:{_sender(data)}",
            source_name=f"{pipeline} (webhook)",
        )
        log.info("webhook.started", pipeline=pipeline, execution=ref.execution_id, started=started)
        outcome = WebhookOutcome.STARTED if started else WebhookOutcome.DUPLICATE
        return JSONResponse({"execution": str(ref), "started": started}, 202), outcome

    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def _parse(kind: str, data: Any) -> GitEvent | None:
    if kind == "push":
        return push_event(PushPayload.model_validate(data))
    return pull_request_event(PullRequestPayload.model_validate(data))


def _sender(data: Any) -> str:
    sender = data.get("sender") if isinstance(data, dict) else None
    return str(sender.get("login", "unknown")) if isinstance(sender, dict) else "unknown"


def _describe(event: GitEvent) -> str:
    where = f"tag {event.tag}" if event.tag else f"branch {event.branch}"
    return f"{where} at {event.commit[:12]}"
