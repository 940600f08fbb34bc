"""The `deliver_events` activity: one batch of a workflow's state-change events, kept in the record, then handed
to every sink. A sink gets SINK_ATTEMPTS short tries; after them the batch is dead-lettered for that sink and the
report says so: a sink never fails the activity, so it never delays the pipeline. Only the record's write can fail
it (Temporal retries it, a few times). Re-sent as a whole after a lost worker: ids are stable, receivers de-duplicate.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from temporalio import activity

from activities.event_sinks import EventSinks
from conveyor.event_delivery import SINK_ATTEMPTS, SINK_BACKOFF_SECONDS, DeadLettered, DeliveryReport
from conveyor.events import EventBatch
from conveyor.interface import Activity
from conveyor.metrics import events_dead_lettered, events_delivered
from conveyor.settings import Settings
from conveyor.stores.event_record import dead_letter, record_batch
from conveyor.stores.records import record_backend

HEARTBEAT_SECONDS = 1.0


async def _heartbeat(every: float) -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(every)


class EventSink(Protocol):
    name: str

    def deliver(self, batch: EventBatch) -> None:
        """Take the whole batch or raise (blocking: called in a thread)."""


class JsonLinesSink:
    """CONVEYOR_EVENTS_FILE: every delivered event's wire form, one JSON line each, appended in order."""

    name = "file"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # one batch's lines stay together

    def deliver(self, batch: EventBatch) -> None:
        lines = "".join(json.dumps(event.wire(), separators=(",", ":")) + "\n" for event in batch.events)
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(lines)


def configured_sinks(settings: Settings) -> list[EventSink]:
    return [JsonLinesSink(settings.events_file)] if settings.events_file is not None else []


class EventActivities:
    """`sinks`: the worker's own simple sinks (the file); `event_sinks`: the configured and per-pipeline ones
    (webhook, SNS, EventBridge, Slack: activities/event_sinks.py), which retry within their own bound."""

    def __init__(
        self, settings: Settings, sinks: Sequence[EventSink] | None = None, event_sinks: EventSinks | None = None
    ) -> None:
        self.settings = settings
        self.sinks = list(sinks) if sinks is not None else configured_sinks(settings)
        self.event_sinks = event_sinks

    @activity.defn(name=Activity.DELIVER_EVENTS)
    async def deliver_events(self, batch: EventBatch) -> DeliveryReport:
        # Heartbeats while a sink is slow: a lost worker's batch is sent again within seconds, not at the timeout.
        beating = asyncio.create_task(_heartbeat(HEARTBEAT_SECONDS))
        try:
            return await self._deliver(batch)
        finally:
            beating.cancel()

    async def _deliver(self, received: EventBatch) -> DeliveryReport:
        # The record keeps each producer's events apart (a carried stage's under its own origin); sinks get them all,
        # in order, as one batch; a dead letter keeps each producer's undelivered events apart, as the record does.
        backend = record_backend(self.settings)
        paths = [await asyncio.to_thread(record_batch, backend, part) for part in received.parts()]
        report = DeliveryReport(recorded=paths[-1] if paths else "")
        batch = received.whole()
        for sink in self.sinks:
            error = await self._try(sink, batch)
            if error is None:
                report.delivered.append(sink.name)
                events_delivered(activity.metric_meter(), sink.name, len(batch.events))
                continue
            where = await self._dead_letter(received, set(e.id for e in batch.events), sink.name, error)
            activity.logger.warning("events dead-lettered for sink %s: %s (%s)", sink.name, error, where)
            report.dead_lettered.append(DeadLettered(sink=sink.name, error=error, where=where))
            events_dead_lettered(activity.metric_meter(), sink.name, len(batch.events))
        if self.event_sinks is not None:
            for result in await self.event_sinks.deliver(batch):
                if result.delivered:
                    events_delivered(activity.metric_meter(), result.sink, result.delivered)
                if result.error is None:
                    report.delivered.append(result.sink)
                    continue
                undelivered = set(result.undelivered)
                where = await self._dead_letter(received, undelivered, result.sink, result.error)
                activity.logger.warning("events dead-lettered for sink %s: %s (%s)", result.sink, result.error, where)
                report.dead_lettered.append(DeadLettered(sink=result.sink, error=result.error, where=where))
                events_dead_lettered(activity.metric_meter(), result.sink, len(undelivered))
        return report

    async def _dead_letter(self, received: EventBatch, ids: set[str], sink: str, error: str) -> str:
        """Each producer's undelivered events as a dead letter of their own; where the last one went."""
        where = ""
        for part in received.parts():
            left = part.model_copy(update={"events": [e for e in part.events if e.id in ids]})
            if left.events:
                where = await asyncio.to_thread(dead_letter, self.settings, left, sink, error)
        return where

    @staticmethod
    async def _try(sink: EventSink, batch: EventBatch) -> str | None:
        """None once the sink took the batch; else the last error, after SINK_ATTEMPTS tries."""
        error = ""
        for attempt in range(SINK_ATTEMPTS):
            if attempt:
                await asyncio.sleep(SINK_BACKOFF_SECONDS[min(attempt, len(SINK_BACKOFF_SECONDS)) - 1])
            try:
                await asyncio.to_thread(sink.deliver, batch)
                return None
            except Exception as exc:  # any sink failure: retried, then dead-lettered, never raised
                error = f"{type(exc).__name__}: {exc}"
        return error
