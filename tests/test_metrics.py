"""Metrics scraped over HTTP after a run, checked for the values the run implies; serve's /metrics; tracing."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client
from temporalio.worker import Worker

from conveyor.cli.session import running_session
from conveyor.client import ConveyorClient
from conveyor.connection import connect
from conveyor.devserver import EmbeddedServer
from conveyor.model import ExecutionStatus
from conveyor.service.app import create_app
from conveyor.service.github import WebhookSecrets
from conveyor.service.jobs import create_jobs_app
from conveyor.service.metrics import ServiceMetrics
from conveyor.settings import Settings, SettingsError
from conveyor.stores.jobs import job_store
from conveyor.telemetry import metrics_runtime, tracing_interceptor, tracing_interceptors
from conveyor.worker import build_worker
from tests.helpers import pipeline, serving, waiting_token
from tests.test_pipelines import GATED as LOCKED
from tests.test_pipelines import holding, waiting_at
from tests.test_webhooks import SECRET, deliver, push

GATED = """
name: measured
stages:
  - name: Build
    actions:
      - {name: One, provider: Commands, commands: ["echo one"]}
      - {name: Two, provider: Commands, commands: ["echo two"]}
  - name: Prod
    actions:
      - {name: Gate, provider: Manual}
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    """A port free now: the Temporal core binds the metrics address itself (no socket can be handed over)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(url, timeout=10)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of `name` carrying (at least) these labels."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


@pytest_asyncio.fixture
async def measured(server: EmbeddedServer, settings: Settings) -> AsyncIterator[tuple[ConveyorClient, str]]:
    """A worker whose client serves metrics, as `conveyor worker` with CONVEYOR_METRICS_ADDRESS; the URL."""
    for attempt in (1, 2, 3):  # another process may take the port between choosing and the core binding it
        metered = settings.model_copy(update={"metrics_address": f"127.0.0.1:{free_port()}"})
        try:
            temporal = await connect(server.address, metered, telemetry=True)
            break
        except SettingsError:
            if attempt == 3:
                raise
    worker: Worker = build_worker(temporal, metered)
    async with worker:
        yield ConveyorClient(temporal, metered), f"http://{metered.metrics_address}/metrics"


async def test_worker_metrics_count_what_the_run_did(measured: tuple[ConveyorClient, str]) -> None:
    conveyor, url = measured
    declaration = pipeline(GATED)
    name = declaration["name"]
    ref, _ = await conveyor.start(declaration)
    await waiting_token(conveyor, ref)
    await conveyor.decide(ref, "Prod", "Gate", approve=True, summary="ship it", by="alice")
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED

    async def settled() -> Samples:  # the core exports what the workflow task recorded a moment later
        while True:
            samples = await scrape(url)
            # The status is final before the workflow closes (after its last events leave): wait for both.
            finished = value(samples, "conveyor_executions_finished_total", pipeline=name) >= 1
            if finished and value(samples, "temporal_workflow_completed_total", workflow_type="PipelineExecution"):
                return samples
            await asyncio.sleep(0.2)

    samples = await asyncio.wait_for(settled(), 15)
    assert value(samples, "conveyor_executions_started_total", pipeline=name) == 1
    assert value(samples, "conveyor_executions_finished_total", pipeline=name, status="Succeeded") == 1
    assert value(samples, "conveyor_executions_finished_total", pipeline=name, status="Failed") == 0
    assert value(samples, "conveyor_actions_executed_total", pipeline=name) == 3
    assert value(samples, "conveyor_actions_executed_total", pipeline=name, provider="Commands") == 2
    build = {"pipeline": name, "stage": "Build", "status": "Succeeded"}
    assert value(samples, "conveyor_stage_duration_seconds_count", **build) == 1
    assert value(samples, "conveyor_stage_duration_seconds_sum", **build) > 0
    assert (
        value(samples, "conveyor_action_duration_seconds_count", pipeline=name, action="One", status="Succeeded") == 1
    )
    assert value(samples, "conveyor_approval_wait_seconds_count", pipeline=name, action="Gate", outcome="Approved") == 1
    assert value(samples, "conveyor_executions_waiting", pipeline=name, stage="Build") == 0
    # Seconds, in Conveyor's buckets (the SDK's default ones are milliseconds): a stage of two echoes ends
    # within a minute.
    assert value(samples, "conveyor_stage_duration_seconds_bucket", le="60", **build) == 1
    assert value(samples, "conveyor_stage_duration_seconds_bucket", le="86400", **build) == 1
    # The SDK's own metrics, on the same endpoint.
    assert value(samples, "temporal_workflow_completed_total", workflow_type="PipelineExecution") >= 1
    assert any(n.startswith("temporal_activity_execution_latency") for n, _ in samples)


async def test_executions_waiting_per_stage_is_the_coordinators_queue(measured: tuple[ConveyorClient, str]) -> None:
    conveyor, url = measured
    declaration = pipeline(LOCKED.format(mode="QUEUED"))
    name = declaration["name"]
    first, _ = await conveyor.start(declaration)
    await holding(conveyor, name, "Gate", first)  # its approval keeps the stage locked
    second, _ = await conveyor.start(declaration)
    await waiting_at(conveyor, name, "Gate", second)

    async def gauge() -> float:
        while (found := value(await scrape(url), "conveyor_executions_waiting", pipeline=name, stage="Gate")) != 1:
            await asyncio.sleep(0.2)
        return found

    assert await asyncio.wait_for(gauge(), 15) == 1
    samples = await scrape(url)
    assert value(samples, "conveyor_executions_waiting", pipeline=name, stage="Build") == 0
    assert value(samples, "conveyor_executions_finished_total", pipeline=name) == 0


def test_metrics_address_is_checked() -> None:
    for wrong in ("9464", "localhost:9464", "127.0.0.1:0", "127.0.0.1:http"):
        with pytest.raises(SettingsError, match=f"CONVEYOR_METRICS_ADDRESS='{wrong}': write IP:PORT"):
            _from_env({"CONVEYOR_METRICS_ADDRESS": wrong})
    assert _from_env({"CONVEYOR_METRICS_ADDRESS": "[::1]:9464"}).metrics_address == "[::1]:9464"
    assert _from_env({}).metrics_address is None


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(SettingsError, match=f"CONVEYOR_METRICS_ADDRESS='{address}': cannot serve metrics there"):
            metrics_runtime(Settings(data_dir=tmp_path, metrics_address=address))


def _from_env(env: dict[str, str]) -> Settings:
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, env):
        return Settings.from_env()


async def test_serve_metrics_count_webhooks_and_job_calls(conveyor: ConveyorClient, settings: Settings) -> None:
    async def client() -> ConveyorClient:
        return conveyor

    counted = ServiceMetrics()
    app = create_app(client, WebhookSecrets({"CONVEYOR_WEBHOOK_SECRET": SECRET}), metrics=counted)
    jobs = create_jobs_app(job_store(settings), counted)
    async with serving(app) as url, serving(jobs) as jobs_url, httpx.AsyncClient() as http:
        hook = f"{url}/webhooks/github/not-registered"
        assert (await deliver(http, hook, "ping", {})).status_code == 200
        assert (await deliver(http, hook, "push", {}, secret="wrong")).status_code == 401
        assert (await deliver(http, hook, "push", push("refs/heads/main", "abc", ["a"]))).status_code == 404
        target = {"X-Amz-Target": "CodePipeline_20150709.PutJobSuccessResult"}
        assert (await http.post(jobs_url, content=b"{}", headers=target)).status_code == 400
        samples = await scrape(f"{url}/metrics")
    assert value(samples, "conveyor_serve_webhooks_received_total", pipeline="not-registered", outcome="ignored") == 1
    assert value(samples, "conveyor_serve_webhooks_received_total", outcome="unknown_pipeline") == 1
    assert value(samples, "conveyor_serve_webhooks_refused_total", reason="bad_signature") == 1
    assert value(samples, "conveyor_serve_webhooks_received_total", outcome="started") == 0
    assert value(samples, "conveyor_serve_job_listener_calls_total", operation="PutJobSuccessResult", status="400") == 1


TRACED = """
name: traced
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Commands, commands: ["echo compiled"]}
"""


async def test_tracing_names_spans_after_the_pipeline_its_stages_and_actions(
    temporal_client: Client, settings: Settings
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = Client(**(temporal_client.config() | {"interceptors": [tracing_interceptor(provider)]}))
    conveyor = ConveyorClient(traced, settings)
    declaration = pipeline(TRACED)
    name = declaration["name"]
    async with build_worker(traced, settings):
        ref, _ = await conveyor.start(declaration)
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert {f"Pipeline:{name}", "Stage:Build", "Action:Compile"} <= spans.keys(), sorted(spans)
    action = spans["Action:Compile"].attributes or {}
    assert action["conveyor.pipeline"] == name and action["conveyor.provider"] == "Commands"
    assert action["conveyor.status"] == "Succeeded"
    assert spans[f"Pipeline:{name}"].attributes["conveyor.status"] == "Succeeded"  # type: ignore[index]
    # The SDK's own spans, in the same trace as ours.
    assert "RunWorkflow:PipelineExecution" in spans
    assert any(n.startswith("RunActivity:") for n in spans)
    assert spans["Action:Compile"].context.trace_id == spans["RunWorkflow:PipelineExecution"].context.trace_id


def test_tracing_is_configured_by_otel_traces_exporter() -> None:
    assert tracing_interceptors({}) == []
    assert tracing_interceptors({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert len(tracing_interceptors({"OTEL_TRACES_EXPORTER": "console"})) == 1
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER='jaeger': Conveyor exports traces with otlp"):
        tracing_interceptors({"OTEL_TRACES_EXPORTER": "jaeger"})


async def test_conveyor_runs_worker_serves_metrics_too(settings: Settings) -> None:
    """`conveyor run`'s in-process worker (here on the test server, as with --worker) gets a client of its own."""
    metered = settings.model_copy(update={"metrics_address": f"127.0.0.1:{free_port()}"})
    async with running_session(metered, with_worker=True) as session:
        declaration = pipeline(TRACED)
        ref, _ = await session.client.start(declaration)
        state = await asyncio.wait_for(session.client.wait(ref), 60)
        assert state.status == ExecutionStatus.SUCCEEDED

        async def counted() -> None:
            url = f"http://{metered.metrics_address}/metrics"
            while value(await scrape(url), "conveyor_actions_executed_total", pipeline=declaration["name"]) != 1:
                await asyncio.sleep(0.2)

        await asyncio.wait_for(counted(), 15)
