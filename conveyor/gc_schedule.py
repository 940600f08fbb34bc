"""The daily garbage collection: one Temporal Schedule per namespace and task queue, `conveyor-gc`.

Each run starts a `ConveyorGc` workflow whose `collect_garbage` activity runs conveyor.gc on a worker
(it shares the data directory, or the S3 store, with the others). `conveyor worker` creates the schedule
when it is missing; `conveyor gc --schedule` creates it or sets its cron. Visible and pausable with
`temporal schedule describe|toggle --schedule-id conveyor-gc`.
"""

from __future__ import annotations

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from conveyor.gc import GcRequest
from conveyor.interface import WorkflowType

SCHEDULE_ID = "conveyor-gc"
DEFAULT_CRON = "17 3 * * *"  # daily, 03:17 UTC: off the hour, when few releases run


def gc_schedule(task_queue: str, cron: str = DEFAULT_CRON) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            WorkflowType.GC.value, GcRequest(), id=f"{SCHEDULE_ID}/run", task_queue=task_queue
        ),
        spec=ScheduleSpec(cron_expressions=[cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_gc_schedule(client: Client, task_queue: str, cron: str | None = None) -> bool:
    """Create the schedule if it is missing (True); with `cron`, an existing one takes it (its paused
    state kept). Without `cron` an existing schedule is left as it is: an operator may have changed it."""
    schedule = gc_schedule(task_queue, cron or DEFAULT_CRON)
    try:
        await client.create_schedule(SCHEDULE_ID, schedule)
        return True
    except ScheduleAlreadyRunningError:
        if cron is None:
            return False

    def update(previous: ScheduleUpdateInput) -> ScheduleUpdate:
        schedule.state = previous.description.schedule.state
        return ScheduleUpdate(schedule=schedule)

    await client.get_schedule_handle(SCHEDULE_ID).update(update)
    return False
