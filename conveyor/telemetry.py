"""The worker's telemetry: the Temporal runtime that serves Prometheus metrics (CONVEYOR_METRICS_ADDRESS), and
OpenTelemetry tracing through the SDK's TracingInterceptor when the `otel` extra is installed and the standard
OTEL_TRACES_EXPORTER variable names an exporter (README "Metrics and traces")."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from conveyor.metrics import BUCKETS
from conveyor.settings import Settings, SettingsError


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A Temporal runtime whose Prometheus endpoint serves the SDK's metrics and Conveyor's (which go through
    the same meter), or None when CONVEYOR_METRICS_ADDRESS is unset (the SDK's default runtime, no endpoint)."""
    if settings.metrics_address is None:
        return None
    config = PrometheusConfig(
        bind_address=settings.metrics_address,
        counters_total_suffix=True,  # Prometheus' convention: conveyor_executions_finished_total
        durations_as_seconds=True,
        histogram_bucket_overrides={name: list(buckets) for name, buckets in BUCKETS.items()},
    )
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=config))
    except Exception as exc:  # noqa: BLE001 - the core reports a bind failure as a bare exception
        raise SettingsError(
            f"CONVEYOR_METRICS_ADDRESS='{settings.metrics_address}': cannot serve metrics there ({exc}); "
            "choose a free port, e.g. CONVEYOR_METRICS_ADDRESS=127.0.0.1:9464"
        ) from None


TRACES_EXPORTERS = ("otlp", "console")


def telemetry_wanted(settings: Settings, env: Mapping[str, str] | None = None) -> bool:
    """Metrics or traces are asked for (a worker then needs a client of its own to serve them)."""
    env = os.environ if env is None else env
    return settings.metrics_address is not None or env.get("OTEL_TRACES_EXPORTER", "").strip().lower() not in (
        "",
        "none",
    )


def tracing_interceptors(env: Mapping[str, str] | None = None) -> list[Any]:
    """[TracingInterceptor] when OTEL_TRACES_EXPORTER is `otlp` (OTEL_EXPORTER_OTLP_* say where) or `console`,
    else []. Tracing needs `pip install 'conveyor[otel]'`; asked for without it, a clear error."""
    env = os.environ if env is None else env
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter in ("", "none"):
        return []
    if exporter not in TRACES_EXPORTERS:
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER='{exporter}': Conveyor exports traces with otlp or console (or none)"
        )
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError:
        raise SettingsError(
            f"OTEL_TRACES_EXPORTER='{exporter}': tracing needs the otel extra: pip install 'conveyor[otel]'"
        ) from None
    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise SettingsError(
                "OTEL_TRACES_EXPORTER='otlp': the OTLP exporter needs the otel extra: pip install 'conveyor[otel]'"
            ) from None
        span_exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, ...
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
    provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "conveyor"}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return [tracing_interceptor(provider)]


def tracing_interceptor(provider: Any) -> Any:
    """The SDK's interceptor on a tracer provider. Workflow spans are made even when no client span started the
    workflow (a coordinator, a trigger or a schedule starts most executions)."""
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return TracingInterceptor(provider.get_tracer("conveyor"), always_create_workflow_spans=True)
