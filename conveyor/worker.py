"""The Conveyor worker: every workflow and activity, registered on one task queue."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.alarms import AlarmActivities
from activities.approvers import resolve_approvers
from activities.conditions import deployment_window, regex_matches
from activities.coordination import CoordinationActivities
from activities.event_sinks import EventSinks
from activities.events import EventActivities
from activities.gc import GcActivities
from activities.notifications import notify_approval
from activities.rollback import RollbackActivities
from activities.slack import notify_slack
from activities.triggers import TriggerActivities
from conveyor.providers.registry import all_contracts
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactStore, store_from_settings
from workflows.coordinator import PipelineWorkflow
from workflows.execution import PipelineExecutionWorkflow
from workflows.gc import GarbageCollectionWorkflow
from workflows.stage import StageWorkflow
from workflows.trigger import PipelineTriggerWorkflow

WORKFLOWS: Sequence[type] = (
    PipelineExecutionWorkflow,
    StageWorkflow,
    PipelineWorkflow,
    PipelineTriggerWorkflow,
    GarbageCollectionWorkflow,
)


def provider_activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """The activities of every registered provider: each contract names its activities module, whose
    `activities(settings, store)` builds them (the foundation's registry never imports activities/)."""
    modules = sorted({contract.activity.module for contract in all_contracts() if contract.activity})
    found: list[Callable[..., Any]] = []
    for module in modules:
        found += importlib.import_module(module).activities(settings, store)
    return found


def activities_for(settings: Settings) -> list[Callable[..., Any]]:
    store = store_from_settings(settings)
    coordination = CoordinationActivities(settings, store)
    rollbacks = RollbackActivities(store)
    triggers = TriggerActivities(settings, store)
    gc = GcActivities(settings, store)
    alarms = AlarmActivities(settings)
    events = EventActivities(settings, event_sinks=EventSinks(settings))
    return [
        *provider_activities(settings, store),
        coordination.coordinate,
        coordination.store_document,
        coordination.closed_workflows,
        coordination.stage_facts,
        coordination.save_coordinator_state,
        coordination.saved_coordinator_state,
        rollbacks.start_rollback,
        rollbacks.start_manual_rollback,
        triggers.sync_triggers,
        triggers.fire_trigger,
        gc.collect_garbage,
        deployment_window,
        regex_matches,
        alarms.check_alarms,
        resolve_approvers,
        notify_slack,
        notify_approval,
        events.deliver_events,
    ]


def worker_options() -> dict[str, Any]:
    """The worker settings Conveyor runs with (the benchmarks' baseline shares them)."""
    return {
        "activity_executor": concurrent.futures.ThreadPoolExecutor(max_workers=8),
        # Heartbeats are how a stop or abandon reaches a running action: send them within seconds,
        # not at the SDK's default of 80% of the heartbeat timeout.
        "max_heartbeat_throttle_interval": timedelta(seconds=2),
        "default_heartbeat_throttle_interval": timedelta(seconds=2),
        # A dead worker's sticky queue holds its workflows' next tasks this long before any worker
        # may take them (the SDK default of 10 s was most of the measured recovery time).
        "sticky_queue_schedule_to_start_timeout": timedelta(seconds=3),
    }


def workflow_runner(workflows: Sequence[type]) -> SandboxedWorkflowRunner:
    """The SDK's sandbox with its restrictions, except that the modules defining the workflows are shared
    rather than imported again for every workflow instance: that import was half of a parked execution's
    memory (518 -> 271 KB per execution, its stage included) and a large part of starting each workflow.
    Those modules hold no state (DESIGN.md), and the replay tests run every recorded history in the full,
    default sandbox, where a non-deterministic call in them still fails."""
    modules = sorted({cls.__module__ for cls in workflows})
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_modules(*modules))


def build_worker(
    client: Client,
    settings: Settings,
    *,
    extra_workflows: Sequence[type] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
    **options: Any,
) -> Worker:
    workflows = [*WORKFLOWS, *extra_workflows]
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=workflows,
        activities=[*activities_for(settings), *extra_activities],
        **(worker_options() | {"workflow_runner": workflow_runner(workflows)} | options),
    )


async def run_worker(client: Client, settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or forever); in-flight tasks finish or are handed back on shutdown."""
    worker = build_worker(client, settings)
    if stop is None:
        await worker.run()
        return
    async with worker:
        await stop.wait()
