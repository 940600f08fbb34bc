"""The `collect_garbage` activity: conveyor.gc run on a worker, for the daily schedule (conveyor.gc_schedule)."""

from __future__ import annotations

from temporalio import activity

from conveyor.gc import GcRequest, GcSummary, collect_garbage
from conveyor.interface import Activity
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactStore


class GcActivities:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store

    @activity.defn(name=Activity.COLLECT_GARBAGE)
    async def collect_garbage(self, request: GcRequest) -> GcSummary:
        report = await collect_garbage(activity.client(), self.settings, self.store, dry_run=request.dry_run)
        for item in report.removed:
            activity.logger.info("gc %s %s (%d bytes)", item.kind.value, item.name, item.size)
        return report.summary()
