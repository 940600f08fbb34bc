"""A workflow's outbox of state-change events (issue 18): each event is numbered in its producer (`origin`: the
execution workflow, or a stage child "stage/<name>/<attempt>"), so its id is stable across replays and re-sends.

Events leave in batches to the `deliver_events` activity: one batch in flight per workflow, in order. A batch starts
synchronously, in program order, where an event is added while none is in flight; events added while one is in flight
wait for it and go together as the next batch. Delivery never fails or blocks the workflow: the activity's failures
are retried a few times (short), then logged and counted; `drain` waits (bounded) before the execution completes.
A stage does not wait: it holds its events for STAGE_HOLD before a batch of their own starts, and at its end hands
what is not confirmed delivered (`hand_off`: the batch in flight, which it cancels, and the pending ones) to the
execution in its StageResult; the execution's next batch carries them (`take_over`: their origin and ids) ahead of the
stage's own event. At least once: the cancelled batch may have arrived already (a duplicate by id; receivers
de-duplicate).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from conveyor.event_delivery import DeliveryReport
    from conveyor.event_sinks_config import SinkConfig
    from conveyor.event_states import pipeline_event_state, stage_event_state
    from conveyor.events import (
        ActionType,
        CarriedEvents,
        EventBatch,
        EventDetail,
        EventScope,
        EventState,
        ExecutionTrigger,
        PipelineEvent,
        event_id,
    )
    from conveyor.interface import Activity
    from conveyor.model import ExecutionState, ExecutionStatus, StageStatus, Transition, TransitionScope
    from conveyor.spec.declaration import Action

DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=4),
    maximum_attempts=5,
)
DELIVERY_TIMEOUT = timedelta(seconds=90)  # one try: the record's write, then the sinks' bounded tries (40 s each)
DELIVERY_HEARTBEAT = timedelta(seconds=5)  # the activity beats every second: a lost worker's batch goes again soon
DRAIN_TIMEOUT = timedelta(seconds=60)  # how long a finishing execution waits for its last events to leave
# A stage that ends without a result to carry its events (cancelled, or failed before one existed) waits this long.
STAGE_DRAIN_TIMEOUT = timedelta(seconds=10)
# A stage's events wait this long before a batch of their own starts: a stage whose actions end sooner hands them to
# the execution in its result (no delivery activity, no workflow task for its answer); a long action's or approval's
# events still arrive within about a second.
STAGE_HOLD = timedelta(milliseconds=500)


def stage_origin(stage_name: str, attempt: int) -> str:
    """A stage child's events are numbered under this origin (the execution's under "execution")."""
    return f"stage/{stage_name}/{attempt}"


class Outbox:
    def __init__(
        self, pipeline: str, execution_id: str, origin: str, version: int, *, hold: timedelta | None = None
    ) -> None:
        self.pipeline, self.execution_id, self.origin, self.version = pipeline, execution_id, origin, version
        # With `hold`, a batch starts only once its first event has waited that long (a durable timer): what ends
        # sooner (a stage's quick actions) is handed off with the stage's result and needs no activity of its own.
        self._hold = hold
        self._timer: asyncio.TimerHandle | None = None
        self._pending: list[PipelineEvent] = []
        self._carried: list[CarriedEvents] = []  # finished stages' handed-off events: ahead of the pending ones
        self._in_flight: list[PipelineEvent] = []  # the batch the activity has, until it answers
        self._delivery: workflow.ActivityHandle[DeliveryReport] | None = None
        self._watcher: asyncio.Task[None] | None = None  # awaits the batch in flight, then starts the next
        self._handed_off = False  # a stage that ended: nothing more leaves from here
        self._sequence = 0
        self.sinks: list[SinkConfig] = []  # the pipeline's own (conveyor.events), besides the worker's
        self.undelivered = 0  # events whose batch the activity never took (its retries ran out)
        self.dead_lettered = 0  # events a sink could not take (kept as dead letters)

    def add(
        self,
        scope: EventScope,
        state: EventState,
        at: datetime,
        *,
        stage: str | None = None,
        action: str | None = None,
        action_type: ActionType | None = None,
        trigger: ExecutionTrigger | None = None,
        summary: str | None = None,
    ) -> None:
        self._sequence += 1
        detail = EventDetail(
            pipeline=self.pipeline,
            version=self.version,
            execution_id=self.execution_id,
            state=state,
            stage=stage,
            action=action,
            type=action_type,
            execution_trigger=trigger,
            summary=summary,
        )
        self._pending.append(
            PipelineEvent(
                id=event_id(self.execution_id, self.origin, self._sequence),
                sequence=self._sequence,
                scope=scope,
                time=at,
                detail=detail,
            )
        )
        self._start_batch()

    def take_over(self, origin: str, events: list[PipelineEvent]) -> None:
        """A finished stage's undelivered events: the next batch carries them (their origin and ids) ahead of this
        outbox's own pending events, among them the stage's own event added next: one activity for both."""
        if not events:
            return
        self._carried.append(CarriedEvents(origin=origin, events=list(events)))
        self._start_batch()

    def hand_off(self) -> list[PipelineEvent]:
        """A stage ending now: everything not confirmed delivered (the batch in flight, then the pending ones), for
        the execution to send on. The batch in flight is cancelled, and `settle` waits for the cancel to complete (at
        once if it had not started; else at its next heartbeat, about a second): a closed workflow must leave no
        activity behind it, which its worker would run to no avail and which, scheduled as the stage closed, kept the
        time-skipping test server from ever skipping time again. It may have arrived already: a duplicate by id."""
        events, self._pending = [*self._in_flight, *self._pending], []
        self._handed_off = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._delivery is not None and not self._delivery.done():
            self._delivery.cancel()
        return events

    async def settle(self) -> None:
        """Until the batch in flight has answered (a cancelled one: once its cancel completed)."""
        if self._watcher is not None and not self._watcher.done():
            await asyncio.wait([self._watcher])

    @property
    def empty(self) -> bool:
        return not self._pending and not self._carried and self._delivery is None

    async def drain(self, timeout: timedelta = DRAIN_TIMEOUT) -> None:
        """Wait (at most `timeout`) until every event added so far has left."""
        if self.empty:
            return
        try:
            await workflow.wait_condition(lambda: self.empty, timeout=timeout)
        except TimeoutError:
            workflow.logger.warning("events of %s not delivered within %s", self.origin, timeout)

    def _start_batch(self, *, held: bool = False) -> None:
        """Start the next batch now, if none is in flight (with `hold`: once its first event has waited).

        Synchronous on purpose: `start_activity` (and `call_later`, the hold's timer) emit their command at the call,
        so a batch's place among the workflow's commands is fixed by program order: the add or take-over, the hold's
        timer firing, or the previous batch's answer, each one history event. The sender task this replaced waited
        for "the end of the activation" (`wait_condition(lambda: True)`), so it emitted after whatever other tasks
        became ready in that activation, and which those were depended on how the workflow task's jobs were grouped
        into activations (the SDK applies an update before an activity's result when they share one): a chained
        Slack notice (workflows/stage.py `_notify`), ready at once in one grouping and blocked on the previous
        notice in the other, went before the batch live and after it in the replay on another worker (TMPRL1100:
        'deliver_events' does not match 'notify_slack'). tests/test_outbox_order.py pins the order. Left: a batch
        that waited for the previous one starts at that one's answer, so an add and that answer arriving in one
        workflow task but grouped otherwise on replay could still move it; with the stage's hold, a batch rarely
        follows another."""
        if self._delivery is not None or self._handed_off or not (self._carried or self._pending):
            return
        if self._hold is not None and not held:
            if self._timer is None:  # its start and cancel commands, too, are emitted at the call
                self._timer = asyncio.get_running_loop().call_later(self._hold.total_seconds(), self._held)
            return
        carried, events, self._carried, self._pending = self._carried, self._pending, [], []
        batch = EventBatch(
            pipeline_name=self.pipeline,
            execution_id=self.execution_id,
            origin=self.origin,
            events=events,
            pipeline_sinks=self.sinks,
            carried=carried,
        )
        self._in_flight = events  # a stage's own (a stage carries nothing): what `hand_off` passes on
        count = len(events) + sum(len(c.events) for c in carried)
        what = f"events {events[0].sequence}-{events[-1].sequence} of {self.origin}" if events else "events"
        self._delivery = workflow.start_activity(
            Activity.DELIVER_EVENTS,
            batch,
            result_type=DeliveryReport,
            start_to_close_timeout=DELIVERY_TIMEOUT,
            heartbeat_timeout=DELIVERY_HEARTBEAT,
            retry_policy=DELIVERY_RETRY,
            # A stage's cancelled batch ends before the stage does (`settle`): no activity outlives its workflow.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=what + "".join(f", {len(c.events)} of {c.origin}" for c in carried),
        )
        self._watcher = asyncio.create_task(self._watch(self._delivery, self.origin, count))

    async def _watch(self, delivery: workflow.ActivityHandle[DeliveryReport], origin: str, count: int) -> None:
        try:
            report = await delivery
            if report.dead_lettered:
                self.dead_lettered += count * len(report.dead_lettered)
        except asyncio.CancelledError:
            pass  # handed off: the execution sends these events
        except ActivityError as err:
            if not self._handed_off:
                self.undelivered += count
                workflow.logger.warning("events of %s not delivered: %s", origin, err.cause or err)
        self._delivery, self._in_flight = None, []
        self._start_batch(held=True)  # what was added meanwhile has waited already

    def _held(self) -> None:
        self._timer = None
        self._start_batch(held=True)


def tell_transition(outbox: Outbox, state: ExecutionState, transition: Transition) -> None:
    """The execution's pipeline and stage transitions as events (its stage children send their actions' own)."""
    if transition.scope == TransitionScope.PIPELINE:
        assert isinstance(transition.to_status, ExecutionStatus)
        before = transition.from_status if isinstance(transition.from_status, ExecutionStatus) else None
        pipeline_state = pipeline_event_state(before, transition.to_status)
        if pipeline_state is not None:
            trigger = ExecutionTrigger(
                trigger_type=state.trigger.trigger_type.value, trigger_detail=state.trigger.trigger_detail
            )
            outbox.add(EventScope.PIPELINE, pipeline_state, transition.at, trigger=trigger, summary=transition.reason)
    elif transition.scope == TransitionScope.STAGE:
        assert isinstance(transition.to_status, StageStatus)
        was = transition.from_status if isinstance(transition.from_status, StageStatus) else None
        stage_state = stage_event_state(was, transition.to_status)
        if stage_state is not None:
            summary = transition.reason
            if transition.to_status == StageStatus.SKIPPED:
                summary = f"skipped: {summary}" if summary else "skipped"
            outbox.add(EventScope.STAGE, stage_state, transition.at, stage=transition.stage_name, summary=summary)


def action_type(action: Action) -> ActionType:
    type_id = action.action_type_id
    return ActionType(
        owner=type_id.owner.value, category=type_id.category.value, provider=type_id.provider, version=type_id.version
    )
