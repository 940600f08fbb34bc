"""A workflow's outbox of state-change events (issue 18): each event is numbered in its producer (`origin`: the
execution workflow, or a stage child "stage/<name>/<attempt>"), so its id is stable across replays and re-sends.

Events leave in batches: everything added during one workflow activation goes together, at the workflow's next wait,
to the `deliver_events` activity, started in the background; one batch in flight per workflow, in order (events added
meanwhile wait for it and go as the next batch). Delivery never fails or blocks the workflow: the activity's failures
are retried a few times (short), then logged and counted; `drain` waits (bounded) before the execution completes.
A stage does not wait: it hands what is not confirmed delivered (`hand_off`) to the execution in its StageResult, whose
outbox sends it (`take_over`) as a batch of the stage's origin, same ids, before the stage's own event. At least once:
the stage's batch in flight may arrive too (a duplicate by id; receivers de-duplicate).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from conveyor.event_delivery import DeliveryReport
    from conveyor.event_sinks_config import SinkConfig
    from conveyor.event_states import pipeline_event_state, stage_event_state
    from conveyor.events import (
        ActionType,
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


def stage_origin(stage_name: str, attempt: int) -> str:
    """A stage child's events are numbered under this origin (the execution's under "execution")."""
    return f"stage/{stage_name}/{attempt}"


class Outbox:
    def __init__(self, pipeline: str, execution_id: str, origin: str, version: int) -> None:
        self.pipeline, self.execution_id, self.origin, self.version = pipeline, execution_id, origin, version
        self._pending: list[PipelineEvent] = []
        self._taken_over: list[tuple[str, list[PipelineEvent]]] = []  # (origin, events): stages' handed-off events
        self._in_flight: list[PipelineEvent] = []  # the batch the activity has, until it answers
        self._sequence = 0
        self._sender: asyncio.Task[None] | None = None
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
        self._wake()

    def take_over(self, origin: str, events: list[PipelineEvent]) -> None:
        """A finished stage's undelivered events: they leave as its own batch (its origin and ids), after what is
        queued here already and before anything added from now on (the stage's own event)."""
        if not events:
            return
        if self._pending:  # what was added before keeps its place ahead of them
            self._taken_over.append((self.origin, self._pending))
            self._pending = []
        self._taken_over.append((origin, list(events)))
        self._wake()

    def hand_off(self) -> list[PipelineEvent]:
        """Everything not confirmed delivered (the batch in flight, then the pending ones), for whoever sends it
        on: nothing is left pending here (the batch in flight may still arrive: a duplicate by id)."""
        events, self._pending = [*self._in_flight, *self._pending], []
        return events

    def _wake(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())

    @property
    def empty(self) -> bool:
        return not self._pending and not self._taken_over and (self._sender is None or self._sender.done())

    async def drain(self, timeout: timedelta = DRAIN_TIMEOUT) -> None:
        """Wait (at most `timeout`) until every event added so far has left."""
        if self.empty:
            return
        try:
            await workflow.wait_condition(lambda: self.empty, timeout=timeout)
        except TimeoutError:
            workflow.logger.warning("events of %s not delivered within %s", self.origin, timeout)

    async def _send(self) -> None:
        # Conditions are checked once every ready task has run: what the rest of this step adds joins the batch.
        await workflow.wait_condition(lambda: True)
        while self._taken_over or self._pending:
            if self._taken_over:
                origin, events = self._taken_over.pop(0)
            else:
                origin, events, self._pending = self.origin, self._pending, []
            self._in_flight = events
            try:
                await self._deliver(origin, events)
            finally:
                self._in_flight = []

    async def _deliver(self, origin: str, events: list[PipelineEvent]) -> None:
        batch = EventBatch(
            pipeline_name=self.pipeline,
            execution_id=self.execution_id,
            origin=origin,
            events=events,
            pipeline_sinks=self.sinks,
        )
        try:
            report = await workflow.execute_activity(
                Activity.DELIVER_EVENTS,
                batch,
                result_type=DeliveryReport,
                start_to_close_timeout=DELIVERY_TIMEOUT,
                heartbeat_timeout=DELIVERY_HEARTBEAT,
                retry_policy=DELIVERY_RETRY,
                summary=f"events {events[0].sequence}-{events[-1].sequence} of {origin}",
            )
        except ActivityError as err:
            self.undelivered += len(events)
            workflow.logger.warning("events of %s not delivered: %s", origin, err.cause or err)
            return
        if report.dead_lettered:
            self.dead_lettered += len(events) * len(report.dead_lettered)


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
