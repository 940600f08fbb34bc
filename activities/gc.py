"""The `collect_garbage` activity: conveyor.gc run on a worker, for the daily schedule (conveyor.gc_schedule)."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from conveyor.gc import GcRefused, GcRequest, GcSummary, collect_garbage
from conveyor.interface import Activity
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactStore


class GcActivities:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store

    @activity.defn(name=Activity.COLLECT_GARBAGE)
    async def collect_garbage(self, request: GcRequest) -> GcSummary:
        try:
            report = await collect_garbage(activity.client(), self.settings, self.store, dry_run=request.dry_run)
        except GcRefused as refused:  # the next run tries again; retrying now would meet the same stage
            raise ApplicationError(str(refused), type="GcRefused", non_retryable=True) from None
        for item in report.removed:
            activity.logger.info("gc %s %s (%d bytes)", item.kind.value, item.name, item.size)
        return report.summary()
