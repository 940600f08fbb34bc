"""The events outbox emits a batch's command where the event is added (program order), so its place among the
workflow's commands does not depend on how a workflow task's jobs were grouped into activations.

The replay failure seen once in CI (TMPRL1100: 'deliver_events' does not match 'notify_slack', on an approval's stage):
a closing approval creates a Slack notice chained on the previous one (workflows/stage.py `_notify`), then its
action's event is added. The old outbox sent from a task that waited for the end of the activation, so the notice went
first when the previous one had already answered, and last when that answer was applied later in the activation (an
update is applied before an activity's result that shares its activation): two orders for one history. Now the batch
goes at the add, before the chained notice can run in either grouping. The probe below builds the grouping in which
the two orders differed (the previous notice answered before the step that adds the event) with the real Outbox.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Replayer

with workflow.unsafe.imports_passed_through():  # the sandbox imports this module again for the probe
    from conveyor.events import EventScope, EventState
    from conveyor.payloads import data_converter
    from conveyor.settings import Settings
    from conveyor.worker import WORKFLOWS, build_worker
    from workflows.outbox import Outbox

NOTICE = "probe_notice"


@activity.defn(name=NOTICE)
async def probe_notice(text: str) -> str:
    return text


@workflow.defn(name="OutboxOrderProbe")
class OutboxOrderProbe:
    @workflow.run
    async def run(self, execution_id: str) -> None:
        outbox = Outbox("probe", execution_id, "probe", 1)

        async def notice(text: str, previous: asyncio.Task[None] | None) -> None:
            if previous is not None:
                await previous
            await workflow.execute_activity(NOTICE, text, start_to_close_timeout=timedelta(seconds=10))

        opened = asyncio.create_task(notice("opened", None))
        await opened  # the previous notice has answered
        closed = asyncio.create_task(notice("closed", opened))  # `_notify(CLOSED)`: chained, created first
        outbox.add(EventScope.ACTION, EventState.SUCCEEDED, workflow.now(), stage="Prod", action="Gate")
        await closed
        await outbox.drain()


async def test_a_batch_is_scheduled_where_its_event_is_added_before_a_chained_notice(
    temporal_client: Client, settings: Settings
) -> None:
    async with build_worker(
        temporal_client, settings, extra_workflows=[OutboxOrderProbe], extra_activities=[probe_notice]
    ):
        handle = await temporal_client.start_workflow(
            OutboxOrderProbe.run,
            str(uuid.uuid4()),
            id=f"outbox-order-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
        )
        await asyncio.wait_for(handle.result(), 60)
    history = await handle.fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    # The old sender emitted after the chained notice here: [notice, notice, deliver_events].
    assert scheduled == [NOTICE, "deliver_events", NOTICE]
    replayer = Replayer(workflows=[*WORKFLOWS, OutboxOrderProbe], data_converter=data_converter)
    await replayer.replay_workflow(history)
