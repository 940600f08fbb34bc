"""Conveyor's own metrics, emitted through the Temporal SDK's metric meter: they share the worker's Prometheus
endpoint with the SDK's metrics, and a workflow's meter (`workflow.metric_meter()`) records nothing while history
is replayed, so a worker restart counts no execution twice. Every `conveyor_*` metric a worker exposes is
recorded here (README "Metrics and traces" says what each means); callers pass the meter they have
(`workflow.metric_meter()` in a workflow, `activity.metric_meter()` in an activity)."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from temporalio.common import MetricMeter


class MetricName(StrEnum):
    EXECUTIONS_STARTED = "conveyor_executions_started"
    EXECUTIONS_FINISHED = "conveyor_executions_finished"
    STAGE_DURATION = "conveyor_stage_duration_seconds"
    ACTION_DURATION = "conveyor_action_duration_seconds"
    ACTIONS_EXECUTED = "conveyor_actions_executed"
    APPROVAL_WAIT = "conveyor_approval_wait_seconds"
    EXECUTIONS_WAITING = "conveyor_executions_waiting"
    EVENTS_DELIVERED = "conveyor_events_delivered"
    EVENTS_DEAD_LETTERED = "conveyor_events_dead_lettered"


# Seconds: an action takes from under a second (a local command) to hours (a CloudFormation stack, a bake),
# an approval up to its 7 days. The SDK's default buckets are for milliseconds-long tasks.
DURATION_BUCKETS: tuple[float, ...] = (0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600)
APPROVAL_BUCKETS: tuple[float, ...] = (60, 300, 900, 3600, 4 * 3600, 24 * 3600, 3 * 24 * 3600, 7 * 24 * 3600)
BUCKETS: dict[str, tuple[float, ...]] = {
    MetricName.STAGE_DURATION: DURATION_BUCKETS,
    MetricName.ACTION_DURATION: DURATION_BUCKETS,
    MetricName.APPROVAL_WAIT: APPROVAL_BUCKETS,
}


def _duration(value: timedelta) -> timedelta:
    return max(value, timedelta(0))  # a clock step backwards between two workers must not fail a workflow task


def execution_started(meter: MetricMeter, pipeline: str) -> None:
    meter.create_counter(MetricName.EXECUTIONS_STARTED, "Pipeline executions started").add(1, {"pipeline": pipeline})


def execution_finished(meter: MetricMeter, pipeline: str, status: str) -> None:
    """An execution reached a final status (Succeeded, Failed, Stopped, Superseded...)."""
    meter.create_counter(MetricName.EXECUTIONS_FINISHED, "Pipeline executions that reached a final status").add(
        1, {"pipeline": pipeline, "status": status}
    )


def stage_finished(meter: MetricMeter, pipeline: str, stage: str, status: str, duration: timedelta) -> None:
    meter.create_histogram_timedelta(
        MetricName.STAGE_DURATION, "Time from a stage attempt's start to its final status", "duration"
    ).record(_duration(duration), {"pipeline": pipeline, "stage": stage, "status": status})


def action_finished(
    meter: MetricMeter, pipeline: str, stage: str, action: str, provider: str, status: str, duration: timedelta
) -> None:
    """An action run ended: its duration, and one more action executed for the pipeline (the cost model)."""
    meter.create_histogram_timedelta(
        MetricName.ACTION_DURATION, "Time from an action's start to its final status", "duration"
    ).record(
        _duration(duration),
        {"pipeline": pipeline, "stage": stage, "action": action, "provider": provider, "status": status},
    )
    meter.create_counter(MetricName.ACTIONS_EXECUTED, "Action runs that reached a final status").add(
        1, {"pipeline": pipeline, "provider": provider}
    )


def approval_decided(
    meter: MetricMeter, pipeline: str, stage: str, action: str, outcome: str, waited: timedelta
) -> None:
    """A manual approval ended (Approved, Rejected, or its timeout) after waiting this long."""
    meter.create_histogram_timedelta(
        MetricName.APPROVAL_WAIT, "Time an approval waited for its decision", "duration"
    ).record(_duration(waited), {"pipeline": pipeline, "stage": stage, "action": action, "outcome": outcome})


def executions_waiting(meter: MetricMeter, pipeline: str, stage: str, count: int) -> None:
    """Executions queued in front of a stage (its lock held by another), as the pipeline's coordinator sees it."""
    meter.create_gauge(MetricName.EXECUTIONS_WAITING, "Executions waiting to enter a stage").set(
        count, {"pipeline": pipeline, "stage": stage}
    )


def events_delivered(meter: MetricMeter, sink: str, count: int) -> None:
    """The events engineers' hook: state-change events a sink accepted."""
    meter.create_counter(MetricName.EVENTS_DELIVERED, "State-change events delivered to a sink").add(
        count, {"sink": sink}
    )


def events_dead_lettered(meter: MetricMeter, sink: str, count: int) -> None:
    """The events engineers' hook: events given up on after the retry bound, written to the dead-letter file."""
    meter.create_counter(MetricName.EVENTS_DEAD_LETTERED, "State-change events written to the dead-letter file").add(
        count, {"sink": sink}
    )
