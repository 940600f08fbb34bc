"""Is a worker there to take a message? Task-queue presence, and updates bounded by how long a worker
may take to accept them.

Temporal's limits shape both. A task queue's description keeps listing a stopped worker's pollers for
minutes, so presence can only be denied when no poll was seen recently, never confirmed. And an update
that no worker has accepted cannot be withdrawn, yet is not durable: the server holds it in memory and
delivers it when a worker polls, unless it restarts, or evicts the workflow from its cache (after an
hour untouched, by default), first.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowUpdateHandle, WorkflowUpdateRPCTimeoutOrCancelledError

from conveyor.text import utc_time

# How long a worker that is there may take to accept an update (its validator runs at once).
ACCEPT_WITHIN = timedelta(seconds=5)
# How long an accepted update's handler may run (an activity, a message to the coordinator) before the
# command stops waiting for it; accepted updates are durable and finish when a worker runs.
FINISH_WITHIN = timedelta(seconds=30)
DESCRIBE_TIMEOUT = timedelta(seconds=5)


@dataclass(frozen=True)
class WorkerPresence:
    """What the task queue's description says about the workers polling it for workflow tasks."""

    task_queue: str
    address: str
    last_poll: datetime | None  # the newest poll the server lists (server clock)
    checked_at: datetime  # when we asked (our clock)
    window: timedelta  # a poll this recent counts as a worker being there (Settings.worker_poll_window)

    @property
    def recent(self) -> bool:
        return self.last_poll is not None and self.checked_at - self.last_poll <= self.window

    def absence(self) -> str:
        """Why a command refuses to send: names the queue, the server and what to run."""
        since = (
            f"the last poll was at {utc_time(self.last_poll)}"
            if self.last_poll is not None
            else "none has polled it recently"
        )
        return (
            f"no worker is polling task queue '{self.task_queue}' at {self.address} ({since}); "
            "start one with `conveyor worker`"
        )

    def unattended(self) -> str:
        """Why a new execution will not move yet (a start is stored and waits: it is not refused)."""
        return (
            f"no worker is polling task queue '{self.task_queue}' at {self.address}: "
            "the execution will wait until one runs (`conveyor worker`)"
        )


async def worker_presence(temporal: Client, task_queue: str, window: timedelta) -> WorkerPresence:
    """One DescribeTaskQueue call (a few milliseconds)."""
    response = await temporal.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=temporal.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        ),
        retry=True,
        timeout=DESCRIBE_TIMEOUT,
    )
    polls = [p.last_access_time.ToDatetime(UTC) for p in response.pollers if p.HasField("last_access_time")]
    return WorkerPresence(
        task_queue=task_queue,
        address=temporal.service_client.config.target_host,
        last_poll=max(polls, default=None),
        checked_at=datetime.now(UTC),
        window=window,
    )


class Unfinished(enum.Enum):
    """Why an update sent to a workflow has no answer yet."""

    NOT_ACCEPTED = "not accepted"  # no worker took it: it applies when one runs, unless the server drops it
    NOT_FINISHED = "not finished"  # a worker accepted it (durable); its handler has not returned yet


StartUpdate = Callable[[timedelta], Awaitable[WorkflowUpdateHandle[Any]]]


async def update_outcome(start: StartUpdate) -> Any:
    """The update's result, or an `Unfinished` saying why there is none yet. `start(rpc_timeout)` sends the
    update and returns once a worker accepted it (`wait_for_stage=ACCEPTED`). The SDK turns a deadline
    into WorkflowUpdateRPCTimeoutOrCancelledError; the server keeps the update either way."""
    try:
        # The SDK re-sends while the server answers "admitted": the outer deadline bounds the whole call.
        async with asyncio.timeout(ACCEPT_WITHIN.total_seconds() + 1):
            handle = await start(ACCEPT_WITHIN)
    except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError):
        return Unfinished.NOT_ACCEPTED
    try:
        async with asyncio.timeout(FINISH_WITHIN.total_seconds()):
            return await handle.result()
    except (WorkflowUpdateRPCTimeoutOrCancelledError, TimeoutError):
        return Unfinished.NOT_FINISHED
