"""Side effects of coordination: reaching the `Pipeline` coordinator, storing declarations,
and telling which executions have ended. Workflows cannot start workflows or describe them."""

from __future__ import annotations

import asyncio
import time
from asyncio import FIRST_COMPLETED
from typing import Any

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from conveyor import visibility
from conveyor.coordinators import (
    SavedStateUnreadable,
    coordinator_input,
    parse_saved_state,
    read_coordinator_state,
)
from conveyor.interface import (
    Activity,
    Coordination,
    EntryDecision,
    ExecutionMode,
    Update,
    WorkflowType,
)
from conveyor.memo import coordinator_from_memo
from conveyor.model import (
    CoordinationRequest,
    CoordinatorState,
    StageEntryDecision,
    StageFactsRequest,
    StageLock,
    StoreDocumentInput,
    nullable,
)
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore

# How long `enter_stage` waits for the coordinator's answer before asking by signal instead.
ENTER_STAGE_UPDATE_WAIT = 10.0
# How long a worker trusts what it read of a pipeline's disabled transitions (PARALLEL executions).
TRANSITIONS_TTL = 1.0


class DisabledTransitions:
    """Which stages of a pipeline have their inbound transition disabled, read from the coordinator's
    memo with a describe (no task of the coordinator: PARALLEL executions at scale never queue behind
    it). Kept for TRANSITIONS_TTL seconds per pipeline and shared by the worker's concurrent lookups,
    so a disable reaches PARALLEL executions within that long."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[float, asyncio.Future[frozenset[str]]]] = {}

    async def disabled(self, client: Client, pipeline_name: str) -> frozenset[str]:
        now = time.monotonic()
        known = self._known.get(pipeline_name)
        if known is None or now - known[0] > TRANSITIONS_TTL or _failed(known[1]):
            known = (now, asyncio.ensure_future(self._read(client, pipeline_name)))
            self._known[pipeline_name] = known
        return await asyncio.shield(known[1])

    @staticmethod
    async def _read(client: Client, pipeline_name: str) -> frozenset[str]:
        try:
            description = await client.get_workflow_handle(pipeline_name).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return frozenset()  # never applied: nothing disabled
            raise
        return frozenset(coordinator_from_memo(await description.memo()).disabled_transitions)


class CoordinationActivities:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.transitions = DisabledTransitions()

    @activity.defn(name=Activity.COORDINATE)
    async def coordinate(self, request: CoordinationRequest) -> StageEntryDecision | None:
        """Signal the coordinator, starting it first if needed (signal-with-start): an execution
        started with `temporal workflow start` for a pipeline never applied still gets one.
        `enter_stage` is an update-with-start instead, and returns the coordinator's answer when it
        has one at once (None: wait for the `stage_decision` signal). The update needs a workflow
        task of the coordinator: if none comes soon (this worker is shutting down, or the coordinator
        is overloaded) the request goes as the `request_entry` signal, answered by signal."""
        payload = request.release if request.signal == Coordination.RELEASE_STAGE else request.entry
        if payload is None:
            raise ApplicationError(f"coordination request '{request.signal}' carries no payload", non_retryable=True)
        signal = request.signal
        if signal == Coordination.ENTER_PARALLEL:
            assert request.entry is not None
            stage = request.entry.stage_name
            if stage not in await self.transitions.disabled(activity.client(), request.pipeline_name):
                return StageEntryDecision(stage_name=stage, decision=EntryDecision.ENTER)
            # Held at a disabled transition: the coordinator answers when it is enabled.
            payload = request.entry.model_copy(update={"hold_at_transition": True})
            signal = Coordination.ENTER_STAGE
        coordinator = coordinator_input(request.pipeline_name, request.execution_mode, self.settings)
        summary = f"coordinator of pipeline {request.pipeline_name}"
        client, task_queue = activity.client(), activity.info().task_queue
        if signal == Coordination.ENTER_STAGE:
            start: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
                WorkflowType.COORDINATOR.value,
                coordinator,
                id=request.pipeline_name,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                task_queue=task_queue,
                static_summary=summary,
            )
            update = asyncio.ensure_future(
                client.execute_update_with_start_workflow(
                    Update.ENTER_STAGE,
                    payload,
                    start_workflow_operation=start,
                    result_type=nullable(StageEntryDecision),
                )
            )
            shutdown = asyncio.ensure_future(activity.wait_for_worker_shutdown())
            await asyncio.wait({update, shutdown}, timeout=ENTER_STAGE_UPDATE_WAIT, return_when=FIRST_COMPLETED)
            shutdown.cancel()
            if update.done():
                decision: StageEntryDecision | None = update.result()
                return decision
            update.cancel()
            await asyncio.gather(update, return_exceptions=True)
            # The cancelled call also settles the start operation: read it, or asyncio logs it as unread.
            started = asyncio.ensure_future(start.workflow_handle())
            await asyncio.wait({started}, timeout=0.1)
            started.cancel()
            if started.done() and not started.cancelled():
                started.exception()
            # A repeated request is harmless: the coordinator answers it again, by signal.
            signal = Coordination.REQUEST_ENTRY
        await client.start_workflow(
            WorkflowType.COORDINATOR.value,
            coordinator,
            id=request.pipeline_name,
            task_queue=task_queue,
            start_signal=signal,
            start_signal_args=[payload],
            static_summary=summary,
        )
        return None

    @activity.defn(name=Activity.STORE_DOCUMENT)
    async def store_document(self, document: StoreDocumentInput) -> None:
        try:
            await asyncio.to_thread(self.store.put_document, document.digest, document.data)
        except ArtifactError as err:
            raise ApplicationError(str(err), type="ArtifactError", non_retryable=True) from None

    @activity.defn(name=Activity.SAVE_COORDINATOR_STATE)
    async def save_coordinator_state(self, state: CoordinatorState) -> None:
        """What a coordinator that closes must not forget, for the run that starts after it."""
        text = state.model_dump_json(exclude_defaults=True)
        await asyncio.to_thread(self.store.put_coordinator_state, state.pipeline_name, text)

    @activity.defn(name=Activity.SAVED_COORDINATOR_STATE)
    async def saved_coordinator_state(self, pipeline_name: str) -> CoordinatorState | None:
        """The state the pipeline's coordinator saved when it last closed; None if it never closed.
        An unreadable one fails (and is retried): starting empty would silently lift a freeze or
        forget rollback targets."""
        text = await asyncio.to_thread(self.store.get_coordinator_state, pipeline_name)
        if text is None:
            return None
        try:
            return parse_saved_state(pipeline_name, text)
        except SavedStateUnreadable as err:
            where = f"coordinators/{pipeline_name}.json in the artifact store"
            raise ApplicationError(f"{err}; fix or remove {where}", type="SavedStateUnreadable") from None

    @activity.defn(name=Activity.STAGE_FACTS)
    async def stage_facts(self, request: StageFactsRequest) -> StageLock | None:
        """A stage's facts from the coordinator (newest entered, last succeeded), None if it has none.
        A PARALLEL execution's question (was the stage entered by an execution started after me?) is
        answered from visibility: PARALLEL executions do not report to the coordinator."""
        if request.execution_mode == ExecutionMode.PARALLEL and request.started_after is not None:
            newest = await visibility.newest_entered(
                activity.client(), request.pipeline_name, request.stage_name, started_after=request.started_after
            )
            return StageLock(stage_name=request.stage_name, newest_entered=newest)
        state = await read_coordinator_state(
            activity.client(), request.pipeline_name, self.store.get_coordinator_state
        )  # the saved state when the coordinator has closed
        if state is None:
            return None
        return next((s for s in state.stages if s.stage_name == request.stage_name), None)

    @activity.defn(name=Activity.CLOSED_WORKFLOWS)
    async def closed_workflows(self, workflow_ids: list[str]) -> list[str]:
        """The ids among these whose workflow is no longer running (or no longer exists)."""
        client = activity.client()

        async def closed(workflow_id: str) -> bool:
            try:
                description = await client.get_workflow_handle(workflow_id).describe()
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND:
                    return True
                raise
            return description.status != WorkflowExecutionStatus.RUNNING

        flags = await asyncio.gather(*(closed(w) for w in workflow_ids))
        return [w for w, is_closed in zip(workflow_ids, flags, strict=True) if is_closed]


def _failed(future: asyncio.Future[Any]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)
