"""The long-lived processes: the embedded server and the worker."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from temporalio.service import RPCError

from conveyor.cli.common import (
    app,
    errors,
    fail,
    run_async,
    say,
    settings,
)
from conveyor.cli.session import connect_existing, resolve_address
from conveyor.client import ConveyorClient
from conveyor.connection import (
    DEFAULT_RETENTION_DAYS,
    fix_commands,
    missing_search_attributes,
    retention,
)
from conveyor.devserver import EmbeddedServer
from conveyor.gc_schedule import SCHEDULE_ID, ensure_gc_schedule

if TYPE_CHECKING:
    import uvicorn
from conveyor.logging import configure_logging

# --- long-lived processes -----------------------------------------------------------------------------


@app.command(rich_help_panel="Processes")
def server(
    port: Annotated[int, typer.Option(help="gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port")] = 8233,
    headless: Annotated[bool, typer.Option(help="No Temporal UI")] = False,
    retention_days: Annotated[int, typer.Option(help="Keep closed executions this many days")] = DEFAULT_RETENTION_DAYS,
) -> None:
    """Run the embedded Temporal server (SQLite in the data directory) until Ctrl-C."""
    if retention_days < 1:
        fail("--retention-days must be at least 1", 2)

    async def serve() -> int:
        config = settings()
        embedded = EmbeddedServer(config, port=port, ui_port=ui_port, headless=headless, retention_days=retention_days)
        await embedded.start()
        try:
            say(f"Temporal server: {embedded.address} (namespace {config.temporal_namespace})")
            if embedded.ui_url:
                say(f"Temporal UI:     {embedded.ui_url}")
            say(f"Data:            {embedded.db_file} (retention {retention_days} days)")
            say("Stop with Ctrl-C.")
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(embedded.stop)
        return 0

    run_async(serve())


@app.command(rich_help_panel="Processes")
def worker(
    min_retention_days: Annotated[
        int, typer.Option(help="Refuse a namespace that forgets executions sooner than this")
    ] = DEFAULT_RETENTION_DAYS,
) -> None:
    """Run a worker (the same as `python worker.py`) until Ctrl-C."""
    run_async(_worker(min_retention_days))


async def _worker(min_retention_days: int) -> int:
    from conveyor.worker import run_worker

    config = settings()
    configure_logging(os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"), json=bool(os.environ.get("CONVEYOR_LOG_JSON")))
    session = await connect_existing(config, telemetry=True)
    temporal = session.client.temporal
    if config.temporal_address:
        missing = await missing_search_attributes(temporal)
        short = (await retention(temporal)).days < min_retention_days
        if missing or short:
            say("The namespace is not ready for Conveyor. Fix it with:", to=errors)
            for line in fix_commands(
                session.address, config.temporal_namespace, missing, min_retention_days if short else None
            ):
                say(f"  {line}", to=errors)
            return 1
    say(f"Worker on {resolve_address(config)} namespace {config.temporal_namespace} task queue {config.task_queue}")
    if config.metrics_address:
        say(f"Metrics at http://{config.metrics_address}/metrics")
    try:
        if await ensure_gc_schedule(temporal, config.task_queue):
            say(f"Created the daily garbage collection schedule '{SCHEDULE_ID}' (see `conveyor gc --schedule`)")
    except RPCError as err:  # e.g. no permission to create schedules: the worker still runs
        say(f"warning: could not create the schedule '{SCHEDULE_ID}' ({err.message}); run `conveyor gc`", to=errors)
    await run_worker(temporal, config)
    return 0


@app.command(rich_help_panel="Processes")
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8080)")] = None,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config", help="YAML: host, port, webhookSecretEnv, identities, slack, jobs, console (see README)"
        ),
    ] = None,
    slack: Annotated[bool, typer.Option("--slack", help="Serve the Slack app (settings: the config's slack)")] = False,
    socket_mode: Annotated[
        bool, typer.Option("--socket-mode", help="Slack app over Socket Mode (SLACK_APP_TOKEN): no public URL")
    ] = False,
    jobs_host: Annotated[
        str | None, typer.Option(help="Address of the Lambda job listener (default 127.0.0.1)")
    ] = None,
    jobs_port: Annotated[
        int | None,
        typer.Option(help="Port of the Lambda job listener (PutJobSuccessResult/PutJobFailureResult); off if unset"),
    ] = None,
) -> None:
    """Run the HTTP service (GitHub webhooks at /webhooks/github/PIPELINE, the Slack app at /slack/events,
    /healthz, /readyz, /metrics, and with the config's console the web console at /console/) until Ctrl-C.
    With --jobs-port (or the config's jobs), also the listener Lambda
    actions' functions report to (AWS_ENDPOINT_URL_CODEPIPELINE=http://HOST:PORT in the function's environment).

    Webhook secrets: CONVEYOR_WEBHOOK_SECRET_<PIPELINE> (upper-cased, other characters as _), else
    CONVEYOR_WEBHOOK_SECRET (or the variable --config names); a pipeline with none refuses every delivery.
    Slack: SLACK_BOT_TOKEN, and SLACK_SIGNING_SECRET (HTTP) and/or SLACK_APP_TOKEN (Socket Mode)."""

    async def go() -> int:
        import uvicorn

        from conveyor.service.app import create_app
        from conveyor.service.config import JobListenerConfig, ServiceConfig, SlackConfig, load_service_config
        from conveyor.service.github import WebhookSecrets
        from conveyor.slack.app import slack_options

        service = load_service_config(config_file) if config_file else ServiceConfig()
        bind_host, bind_port = host or service.host, port or service.port
        config = settings()
        configure_logging(os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"), json=bool(os.environ.get("CONVEYOR_LOG_JSON")))

        async def client() -> ConveyorClient:
            return (await connect_existing(config)).client

        secrets = WebhookSecrets(names=service.webhook_secret_env)
        slack_config = service.slack or (SlackConfig() if slack or socket_mode else None)
        if slack_config is not None and socket_mode:
            slack_config = slack_config.model_copy(update={"socket_mode": True})
        options = slack_options(slack_config, service.identities) if slack_config else None
        from conveyor.service.metrics import ServiceMetrics

        counted = ServiceMetrics()  # /metrics: the service's and the job listener's
        console = None
        if service.console is not None:
            from conveyor.console.auth import console_options

            console = console_options(service.console, service.identities)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(client, secrets, options, counted, console),
                host=bind_host,
                port=bind_port,
                log_config=None,
                access_log=False,
                # The console trusts a user header by the TCP peer's address (console.trustedProxies):
                # uvicorn must not replace that address with an X-Forwarded-For value.
                proxy_headers=False,
            )
        )
        say(f"Serving on http://{bind_host}:{bind_port} (Temporal at {resolve_address(config)})")
        jobs = service.jobs
        if jobs_port is not None:
            jobs = JobListenerConfig(host=jobs_host or (jobs.host if jobs else "127.0.0.1"), port=jobs_port)
        elif jobs is not None and jobs_host:
            jobs = jobs.model_copy(update={"host": jobs_host})
        if jobs is None:
            await server.serve()
            return 0
        from conveyor.service.jobs import create_jobs_app
        from conveyor.stores.jobs import job_store

        listener = uvicorn.Server(
            uvicorn.Config(
                create_jobs_app(job_store(config), counted),
                host=jobs.host,
                port=jobs.port,
                log_config=None,
                access_log=False,
            )
        )
        say(f"Lambda job listener on http://{jobs.host}:{jobs.port}")
        await _serve_together(server, listener)
        return 0

    run_async(go())


async def _serve_together(*servers: uvicorn.Server) -> None:
    """Run uvicorn servers side by side; when one stops (Ctrl-C, a bind failure), the others are told to stop."""

    async def one(server: uvicorn.Server) -> None:
        try:
            await server.serve()
        finally:
            for other in servers:
                other.should_exit = True

    await asyncio.gather(*(one(server) for server in servers))
