"""Spans named after pipelines, stages and actions, in the trace of the execution's workflow, when the worker runs
the SDK's TracingInterceptor (conveyor/telemetry.py; the `otel` extra). The SDK's own spans are named after
workflow types and activities (RunWorkflow:PipelineExecution, RunActivity:run_commands); these add one span per
finished pipeline, stage and action, with its status and duration. A span is made when the thing ends (the
workflow cannot choose a span's start time), so its length is an attribute. Nothing without the interceptor,
nothing while history is replayed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow

completed_span: Callable[..., None] | None
with workflow.unsafe.imports_passed_through():
    try:
        from temporalio.contrib.opentelemetry import TracingWorkflowInboundInterceptor
        from temporalio.contrib.opentelemetry.workflow import completed_span
    except ImportError:  # the otel extra is not installed
        completed_span = None


def finished(kind: str, name: str, attributes: dict[str, Any]) -> None:
    """A span `kind:name` (Pipeline:deploy-web, Stage:Prod, Action:Migrate)."""
    # Without the interceptor on this worker, completed_span would fall back to the global tracer: not ours.
    if completed_span is None or TracingWorkflowInboundInterceptor._from_context() is None:
        return
    completed_span(f"{kind}:{name}", attributes=attributes)
