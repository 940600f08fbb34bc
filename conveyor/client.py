"""A typed client over `temporalio.client` for starting, reading and deciding executions."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self, TypeVar

from pydantic import Field
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecution,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from conveyor import search_attributes as sa
from conveyor import visibility
from conveyor.coordinators import (
    SavedStateUnreadable,
    coordinator_input,
    parse_saved_state,
    read_coordinator_state,
)
from conveyor.interface import (
    ExecutionId,
    ExecutionMode,
    Query,
    RetryMode,
    Update,
    WorkflowType,
    split_execution_workflow_id,
)
from conveyor.memo import CoordinatorMemo, coordinator_from_memo, header_from_memo, state_from_memo
from conveyor.model import (
    ActionState,
    ApplyRequest,
    ApplyResult,
    ApprovalDecision,
    ApprovalResult,
    CamelModel,
    ConditionOverride,
    CoordinatorState,
    ErrorDetails,
    ExecutionState,
    ExecutionStatus,
    PipelineVersion,
    RollbackRequest,
    SourceRevisionOverride,
    StageRetryRequest,
    StageState,
    StageStatus,
    StopRequest,
    TransitionChange,
    TransitionState,
    Trigger,
)
from conveyor.presence import ACCEPT_WITHIN, FINISH_WITHIN, StartUpdate, Unfinished, update_outcome, worker_presence
from conveyor.settings import Settings
from conveyor.spec.declaration import RETRY_WINDOW_ADVICE
from conveyor.starter import start_execution
from conveyor.stores.artifacts import ArtifactStore, store_from_settings
from conveyor.temporal_status import ClosedByTemporal, close_details, closed_by_temporal, stuck_reason
from conveyor.text import utc_time
from conveyor.visibility import ExecutionFilter, executions_query

FIRST_STATE_WAIT = 60.0  # seconds `wait` gives a new execution to record its first state
QUERY_TIMEOUT = timedelta(seconds=3)
LIST_DESCRIBES = 8  # describes `list` runs at once (to tell a stuck execution from a running one)
PRESENCE_RECHECKS, PRESENCE_RECHECK_EVERY = 4, 0.25  # a refusal waits 1 s for a worker that is just starting
ResultT = TypeVar("ResultT")


class ConveyorError(RuntimeError):
    """An operation that cannot be done; the message says why and what to do."""


class ExecutionEnded(ConveyorError):
    """An update reached an execution whose workflow has closed."""

    def __init__(self, ref: ExecutionRef, status: ExecutionStatus) -> None:
        super().__init__(f"execution {ref} has already ended: {status.value}")
        self.status = status


class StateNotRecorded(ConveyorError):
    """The execution exists but neither its workflow nor its memo has a state yet (no first task yet)."""


class WorkerNotPolling(ConveyorError):
    """Refused before sending: no worker has polled the target's task queue recently, so nothing was sent."""


class UpdateNotApplied(ConveyorError):
    """Sent, but no worker answered within seconds: not a failure, the update may still apply (see message)."""


@dataclass(frozen=True)
class ExecutionRef(ExecutionId):
    """An execution a person named (`PIPELINE/EXECUTION-ID`, as `conveyor start` prints it)."""

    @classmethod
    def parse(cls, text: str) -> Self:
        pipeline, sep, execution_id = text.strip().partition("/")
        if not sep or not pipeline or not execution_id or "/" in execution_id:
            raise ConveyorError(
                f"'{text}' is not an execution: write it as PIPELINE/EXECUTION-ID, as `conveyor start` prints it"
            )
        return cls(pipeline, execution_id)


class ExecutionSummary(CamelModel):
    """One row of `conveyor list`: what visibility and the memo say, with no worker needed."""

    execution: str
    pipeline_name: str
    execution_id: str
    status: str
    note: str | None = None  # terminated or timed out through Temporal, or stuck (its workflow task failing)
    trigger: str | None = None
    pipeline_version: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    source_revisions: list[str] = Field(default_factory=list)
    temporal_status: str

    @property
    def ref(self) -> ExecutionRef:
        return ExecutionRef(self.pipeline_name, self.execution_id)


class ExecutionPage(CamelModel):
    """One page of `list_page`: its rows and the opaque token of the next page (None: no more)."""

    rows: list[ExecutionSummary]
    next_page_token: bytes | None = None


class ConveyorClient:
    def __init__(self, client: Client, settings: Settings) -> None:
        self.temporal = client
        self.settings = settings

    # --- starting ------------------------------------------------------------------------------

    async def start(
        self,
        pipeline: dict[str, Any],
        *,
        variables: dict[str, str] | None = None,
        source_revisions: list[SourceRevisionOverride] | None = None,
        token: str | None = None,
        started_by: str | None = None,
        trigger: Trigger | None = None,
        source_name: str = "<declaration>",
    ) -> tuple[ExecutionRef, bool]:
        """Start an execution; with a token, a repeat returns the existing one. Returns (ref, started)."""
        execution, started = await start_execution(
            self.temporal,
            self.settings.task_queue,
            pipeline,
            variables=variables,
            source_revisions=source_revisions,
            token=token,
            started_by=started_by,
            trigger=trigger,
            source_name=source_name,
        )
        return ExecutionRef(execution.pipeline_name, execution.execution_id), started

    # --- reading -------------------------------------------------------------------------------

    async def state(self, ref: ExecutionRef, *, live: bool = True) -> ExecutionState:
        """The execution's state: live from its workflows when a worker answers, else from the memo."""
        handle = self.temporal.get_workflow_handle(ref.workflow_id)
        try:
            description = await handle.describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise ConveyorError(f"execution '{ref}' was not found (or its history is past retention)") from None
            raise
        memo_state = state_from_memo(await description.memo())
        stuck = await stuck_reason(self.temporal, description)
        state: ExecutionState | None = None
        if live and description.status == WorkflowExecutionStatus.RUNNING and stuck is None:
            try:
                state = await handle.query(Query.STATE, result_type=ExecutionState, rpc_timeout=QUERY_TIMEOUT)
            except (TimeoutError, RPCError):
                state = None  # no worker answering: the memo is the best we have
            if state is not None:
                await self._merge_live_stages(ref, state)
            if state is not None and state.waiting_for_stage:
                state.waiting_reason = await self._waiting_reason(ref.pipeline_name, state.waiting_for_stage)
        if state is None:
            if memo_state is None:
                why = stuck or "is a worker running?"
                raise StateNotRecorded(f"execution '{ref}' has not recorded any state yet ({why})")
            state = memo_state
        state.stuck = stuck
        closed = closed_by_temporal(state.status.value, description.status)
        if closed is not None:
            await self._show_closed_by_temporal(state, closed, description)
        return state

    async def _show_closed_by_temporal(
        self, state: ExecutionState, closed: ClosedByTemporal, description: WorkflowExecutionDescription
    ) -> None:
        """Temporal closed the workflow before the execution recorded an end: show Temporal's status,
        its reason, and stop every duration at the close time."""
        details = await close_details(self.temporal, description)
        state.status = closed.status
        state.status_summary = f"{closed.summary}: {details}" if details else closed.summary
        at = description.close_time or datetime.now(UTC)
        state.finished_at = state.finished_at or at
        error = ErrorDetails(code="ClosedByTemporal", message=closed.summary)
        state.close_unfinished(at, error, stopped=closed.stopped)

    async def _waiting_reason(self, pipeline: str, stage: str) -> str | None:
        try:
            coordinator = await self.pipeline_state(pipeline)
        except ConveyorError:
            return None
        lock = next((s for s in coordinator.stages if s.stage_name == stage), None)
        if lock is None:
            return None
        transition = lock.transition
        if not transition.enabled:
            when = utc_time(transition.changed_at) if transition.changed_at else "?"
            why = transition.reason or "no reason given"
            return f"the transition into {stage} was disabled by {transition.changed_by or 'unknown'} at {when}: {why}"
        if lock.holder is not None:
            return f"stage {stage} is held by execution {lock.holder.execution_id}"
        return None

    async def _merge_live_stages(self, ref: ExecutionRef, state: ExecutionState) -> None:
        for index, stage in enumerate(state.stages):
            if stage.status not in (StageStatus.IN_PROGRESS, StageStatus.STOPPING):
                continue
            try:
                live = await self.temporal.get_workflow_handle(ref.stage_workflow_id(stage.stage_name)).query(
                    Query.STATE, result_type=StageState, rpc_timeout=QUERY_TIMEOUT
                )
            except (TimeoutError, RPCError):
                continue
            if live.attempt == stage.attempt:
                state.stages[index] = live

    async def wait(
        self,
        ref: ExecutionRef,
        on_state: Callable[[ExecutionState], Awaitable[None] | None] | None = None,
        interval: float = 0.5,
    ) -> ExecutionState:
        """Poll until the execution's PipelineStatus is terminal (its workflow may stay open longer).
        A busy worker may take a while to run a new execution's first task: that is waited for too, up to
        FIRST_STATE_WAIT, after which "has not recorded any state yet (is a worker running?)" is raised."""
        started = time.monotonic()
        while True:
            try:
                state = await self.state(ref)
            except StateNotRecorded:
                if time.monotonic() - started > FIRST_STATE_WAIT:
                    raise
                await asyncio.sleep(interval)
                continue
            if on_state is not None:
                maybe = on_state(state)
                if maybe is not None:
                    await maybe
            if state.status.is_terminal:
                return state
            await asyncio.sleep(interval)

    async def list(
        self, pipeline: str | None = None, limit: int = 20, *, succeeded_in: str | None = None
    ) -> list[ExecutionSummary]:
        """Executions, newest first; `succeeded_in` keeps those that succeeded in that stage."""
        query = executions_query(ExecutionFilter(pipeline=pipeline, succeeded_in=succeeded_in))
        listed = [wf async for wf in self.temporal.list_workflows(query, limit=limit)]
        return await self._summaries(listed)

    async def list_page(
        self, selected: ExecutionFilter, page_size: int, next_page_token: bytes | None = None
    ) -> ExecutionPage:
        """One page of the executions `selected` keeps, in visibility's order (open workflows first, newest started
        first, then closed ones, last closed first: SQL visibility has no ORDER BY), and the token of the next page
        (None: this was the last). One visibility call per page, however many executions there are."""
        listed = self.temporal.list_workflows(
            executions_query(selected), page_size=page_size, next_page_token=next_page_token
        )
        await listed.fetch_next_page()
        rows = await self._summaries(list(listed.current_page or []))
        return ExecutionPage(rows=rows, next_page_token=listed.next_page_token if rows else None)

    async def _summaries(self, listed: builtins.list[WorkflowExecution]) -> builtins.list[ExecutionSummary]:
        describes = asyncio.Semaphore(LIST_DESCRIBES)
        return builtins.list(await asyncio.gather(*(self._summary(wf, describes) for wf in listed)))

    async def _summary(self, wf: WorkflowExecution, describes: asyncio.Semaphore) -> ExecutionSummary:
        """One row of `list`: the recorded status, unless Temporal closed the workflow first (then
        Temporal's), and whether its workflow task is stuck failing (one describe per running row)."""
        attributes = wf.typed_search_attributes
        pipeline_name, execution_id = split_execution_workflow_id(wf.id)
        name = attributes.get(sa.PIPELINE_NAME) or pipeline_name
        header = header_from_memo(await wf.memo())
        status = attributes.get(sa.PIPELINE_STATUS) or "Unknown"
        note = None
        closed = closed_by_temporal(status, wf.status)
        if closed is not None:
            status, note = closed.status.value, closed.summary
        elif wf.status == WorkflowExecutionStatus.RUNNING:
            async with describes:
                note = await self._stuck(wf.id, wf.run_id)
        started_at = (header.started_at if header else None) or wf.start_time
        finished_at = (header.finished_at if header else None) or wf.close_time
        return ExecutionSummary(
            execution=f"{name}/{execution_id}",
            pipeline_name=name,
            execution_id=execution_id,
            status=status,
            note=note,
            trigger=attributes.get(sa.PIPELINE_TRIGGER) or (header.trigger.trigger_type.value if header else None),
            pipeline_version=attributes.get(sa.PIPELINE_VERSION),
            started_at=started_at,
            finished_at=finished_at,
            duration_seconds=(finished_at - started_at).total_seconds() if started_at and finished_at else None,
            source_revisions=[f"{r.action_name}:{r.revision_id}" for r in header.source_revisions] if header else [],
            temporal_status=wf.status.name if wf.status else "UNKNOWN",
        )

    async def _stuck(self, workflow_id: str, run_id: str | None) -> str | None:
        try:
            description = await self.temporal.get_workflow_handle(workflow_id, run_id=run_id).describe()
        except RPCError:
            return None  # closed or gone since it was listed
        return await stuck_reason(self.temporal, description)

    # --- approvals -----------------------------------------------------------------------------

    async def decide(
        self,
        ref: ExecutionRef,
        stage: str,
        action: str,
        *,
        approve: bool,
        summary: str = "",
        token: str | None = None,
        by: str | None = None,
        update_id: str | None = None,
        source: str = "api",
        principals: builtins.list[str] | None = None,
    ) -> ApprovalResult:
        """Approve or reject a Manual approval; without a token, the current one is read from state.
        `principals`: other names the caller verified for the decider (the Slack app's `slack:TEAM/USER`)."""
        stage_workflow = ref.stage_workflow_id(stage)
        task_queue = await self._require_worker(stage_workflow)  # before reading the token: that waits on queries
        if token is None:
            token = await self._current_token(ref, stage, action)
        decision = ApprovalDecision(
            token=token, action_name=action, summary=summary, by=by, source=source, principals=principals or []
        )
        update = Update.APPROVE if approve else Update.REJECT
        try:
            return await self._send_update(
                stage_workflow, update, decision, ApprovalResult, task_queue=task_queue, update_id=update_id
            )
        except WorkflowUpdateFailedError as err:
            raise ConveyorError(refusal(err)) from None
        except RPCError as err:
            raise ConveyorError(await self._closed_reason(ref, stage, action, err)) from None

    async def action_state(self, ref: ExecutionRef, stage: str, action: str) -> tuple[ExecutionState, ActionState]:
        """The execution's state and one action's, or ConveyorError naming what does not exist."""
        state = await self.state(ref)
        stage_state = state.stage(stage)
        if stage_state is None:
            raise ConveyorError(f"pipeline '{ref.pipeline_name}' has no stage '{stage}'")
        action_state = next((a for a in stage_state.actions if a.action_name == action), None)
        if action_state is None:
            raise ConveyorError(f"stage '{stage}' has no action '{action}'")
        return state, action_state

    async def _current_token(self, ref: ExecutionRef, stage: str, action: str) -> str:
        state, action_state = await self.action_state(ref, stage, action)
        if action_state.token is None:
            raise ConveyorError(approval_closed_reason(ref, state, stage, action))
        return action_state.token

    async def _closed_reason(self, ref: ExecutionRef, stage: str, action: str, err: RPCError) -> str:
        """Translate the server's "already completed" / "not found" into what happened."""
        if err.status not in (RPCStatusCode.NOT_FOUND, RPCStatusCode.FAILED_PRECONDITION):
            return f"Temporal refused the decision: {err.message}"
        try:
            state = await self.state(ref, live=False)
        except ConveyorError as missing:
            return str(missing)
        return approval_closed_reason(ref, state, stage, action)

    # --- stop and retry ------------------------------------------------------------------------

    async def stop(
        self, ref: ExecutionRef, *, reason: str = "", abandon: bool = False, by: str | None = None
    ) -> ExecutionState:
        """Stop an execution: let running actions finish (default) or abandon them at once."""
        request = StopRequest(reason=reason, abandon=abandon, by=by)
        return await self._execution_update(ref, Update.STOP, request)

    async def retry(
        self, ref: ExecutionRef, stage: str, *, mode: str = RetryMode.FAILED_ACTIONS, by: str | None = None
    ) -> ExecutionState:
        """Retry the failed stage of an execution whose retry window is open; it resumes the same execution."""
        request = StageRetryRequest(stage_name=stage, retry_mode=mode, by=by)
        try:
            return await self._execution_update(ref, Update.RETRY_STAGE, request)
        except ExecutionEnded as ended:
            if ended.status != ExecutionStatus.FAILED:
                raise
            raise ConveyorError(f"{ended}, and its retry window is over; {RETRY_WINDOW_ADVICE}") from None

    async def override_condition(
        self, ref: ExecutionRef, stage: str, condition_type: str, *, reason: str = "", by: str | None = None
    ) -> ExecutionState:
        """Let an execution past a stage condition that waits (a deployment window) or failed (beforeEntry)."""
        override = ConditionOverride(stage_name=stage, condition_type=condition_type, reason=reason, by=by)
        return await self._execution_update(ref, Update.OVERRIDE_CONDITION, override)

    async def _execution_update(self, ref: ExecutionRef, name: str, payload: Any) -> ExecutionState:
        try:
            return await self._update(ref.workflow_id, name, payload, ExecutionState)
        except WorkflowUpdateFailedError as err:
            raise ConveyorError(refusal(err)) from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                state = await self.state(ref, live=False)
                raise ExecutionEnded(ref, state.status) from None
            raise ConveyorError(f"Temporal refused it: {err.message}") from None

    async def rollback(self, pipeline_name: str, stage: str, to: str, *, by: str | None = None) -> ExecutionRef:
        """Manual rollback (update `rollback_stage` on the coordinator): a new ROLLBACK execution re-runs
        `stage` with execution `to`'s inputs; CodePipeline's restrictions are refused with a message."""
        request = RollbackRequest(stage_name=stage, target_execution_id=to, by=by)
        try:
            execution_id = await self._update(pipeline_name, Update.ROLLBACK_STAGE, request, str)
        except WorkflowUpdateFailedError as err:
            raise ConveyorError(refusal(err)) from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise ConveyorError(f"pipeline '{pipeline_name}' is not registered: `conveyor apply FILE`") from None
            raise
        return ExecutionRef(pipeline_name, execution_id)

    # --- pipelines: the `Pipeline` coordinator ---------------------------------------------------

    async def apply(self, pipeline: dict[str, Any], *, by: str | None = None) -> ApplyResult:
        """Create or update a registered pipeline; an unchanged declaration keeps its version."""
        name = str(pipeline["name"])
        mode = str(pipeline.get("executionMode", ExecutionMode.SUPERSEDED))
        try:
            return await self._update_coordinator(
                name, mode, Update.APPLY, ApplyRequest(pipeline=pipeline, by=by), ApplyResult
            )
        except WorkflowUpdateFailedError as err:
            raise ConveyorError(refusal(err)) from None

    async def _update_coordinator(
        self, name: str, execution_mode: str, update: str, payload: Any, result_type: type[ResultT]
    ) -> ResultT:
        """An update to the pipeline's coordinator, starting it if no run is open (a closed one starts again
        from the state it saved)."""
        operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
            WorkflowType.COORDINATOR.value,
            coordinator_input(name, execution_mode, self.settings),
            id=name,
            task_queue=self.settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"coordinator of pipeline {name}",
        )
        task_queue = await self._require_worker(name, starting_on=self.settings.task_queue)

        def start(deadline: timedelta) -> Any:
            return self.temporal.start_update_with_start_workflow(
                update,
                payload,
                start_workflow_operation=operation,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                result_type=result_type,
                rpc_timeout=deadline,
            )

        try:
            result: ResultT = await self._outcome(name, update, start, task_queue)
            return result
        finally:
            with contextlib.suppress(BaseException):  # a failed start is also parked in the operation: read it
                await operation.workflow_handle()

    async def pipeline_state(self, name: str) -> CoordinatorState:
        """The coordinator's live state, or the one it saved when it closed (no worker needed then)."""
        try:
            state = await read_coordinator_state(
                self.temporal, name, self._document_store().get_coordinator_state, rpc_timeout=QUERY_TIMEOUT
            )
        except RPCError as err:
            raise ConveyorError(f"pipeline '{name}' did not answer ({err.message}); is a worker running?") from None
        except SavedStateUnreadable as err:
            raise ConveyorError(str(err)) from None
        if state is None:
            raise ConveyorError(f"pipeline '{name}' is not registered: `conveyor apply FILE` registers it")
        return state

    async def pipeline_facts(self, name: str) -> CoordinatorState:
        """The coordinator's state with every stage's facts. A PARALLEL pipeline's executions do not
        report to the coordinator: their newest entry and last success per stage come from visibility."""
        state = await self.pipeline_state(name)
        if state.execution_mode == ExecutionMode.PARALLEL and state.current is not None:
            names = state.current.stage_names
            newest = await visibility.newest_entries(self.temporal, name, names)  # one pass for every stage
            succeeded = await asyncio.gather(*(visibility.last_succeeded(self.temporal, name, n) for n in names))
            for stage_name, last in zip(names, succeeded, strict=True):
                lock = state.stage(stage_name)
                lock.newest_entered = newest.get(stage_name) or lock.newest_entered
                lock.last_succeeded = last or lock.last_succeeded
        return state

    async def registered(self, name: str, version: int | None = None) -> tuple[PipelineVersion, dict[str, Any]]:
        """A registered version (default: the current one) and its declaration, read by digest."""
        state = await self.pipeline_state(name)
        if not state.versions:
            raise ConveyorError(f"pipeline '{name}' has no applied version: `conveyor apply FILE` registers it")
        if version is None:
            chosen = state.versions[-1]
        else:
            found = next((v for v in state.versions if v.version == version), None)
            if found is None:
                raise ConveyorError(
                    f"pipeline '{name}' has no version {version} (versions 1-{state.versions[-1].version})"
                )
            chosen = found
        text = await asyncio.to_thread(self._document_store().get_document, chosen.digest)
        declaration = json.loads(text)
        declaration["version"] = chosen.version
        return chosen, declaration

    def _document_store(self) -> ArtifactStore:
        return store_from_settings(self.settings)  # the same store the workers write

    async def set_transition(
        self, name: str, stage: str, *, enabled: bool, reason: str = "", by: str | None = None
    ) -> TransitionState:
        change = TransitionChange(stage_name=stage, reason=reason, by=by)
        update = Update.ENABLE_TRANSITION if enabled else Update.DISABLE_TRANSITION
        try:
            try:
                return await self._update(name, update, change, TransitionState)
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
            # Its coordinator has closed (idle, nothing to keep) or never ran: one that saved its state
            # starts again from it and takes the change; a name never run is not a pipeline.
            saved = await asyncio.to_thread(self._document_store().get_coordinator_state, name)
            if saved is None:
                raise ConveyorError(f"pipeline '{name}' is not registered: `conveyor apply FILE` registers it")
            mode = parse_saved_state(name, saved).execution_mode
            return await self._update_coordinator(name, mode, update, change, TransitionState)
        except WorkflowUpdateFailedError as err:
            raise ConveyorError(refusal(err)) from None
        except SavedStateUnreadable as err:
            raise ConveyorError(str(err)) from None

    async def pipelines(self) -> builtins.list[tuple[str, CoordinatorMemo]]:
        """Registered pipelines with their coordinator's memo (current version, execution mode)."""
        out: builtins.list[tuple[str, CoordinatorMemo]] = []
        async for wf in self.temporal.list_workflows("WorkflowType = 'Pipeline' AND ExecutionStatus = 'Running'"):
            out.append((wf.id, coordinator_from_memo(await wf.memo())))
        return sorted(out, key=lambda row: row[0])

    # --- updates: a worker must take them within seconds -----------------------------------------

    @property
    def poll_window(self) -> timedelta:
        return timedelta(seconds=self.settings.worker_poll_window)

    async def _require_worker(self, workflow_id: str, *, starting_on: str | None = None) -> str | None:
        """Refuse before sending when no worker has polled the task queue of the running workflow (or, if it
        is not running, `starting_on`, where it would start) recently. Returns the queue checked, or None when
        the workflow is closed or missing: the update then fails at once with the server's own reason."""
        try:
            description = await self.temporal.get_workflow_handle(workflow_id).describe(rpc_timeout=QUERY_TIMEOUT)
            running = description.status == WorkflowExecutionStatus.RUNNING
            task_queue = description.task_queue if running else starting_on
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            task_queue = starting_on
        if task_queue is None:
            return None
        try:
            presence = await worker_presence(self.temporal, task_queue, self.poll_window)
            for _ in range(PRESENCE_RECHECKS):  # a worker that started a moment ago may not have polled yet
                if presence.recent:
                    break
                await asyncio.sleep(PRESENCE_RECHECK_EVERY)
                presence = await worker_presence(self.temporal, task_queue, self.poll_window)
        except RPCError:
            return task_queue  # the queue cannot be described (permissions): the acceptance deadline still holds
        if not presence.recent:
            raise WorkerNotPolling(presence.absence())
        return task_queue

    async def _update(
        self, workflow_id: str, update: str, payload: Any, result_type: type[ResultT], *, update_id: str | None = None
    ) -> ResultT:
        task_queue = await self._require_worker(workflow_id)
        return await self._send_update(
            workflow_id, update, payload, result_type, task_queue=task_queue, update_id=update_id
        )

    async def _send_update(
        self,
        workflow_id: str,
        update: str,
        payload: Any,
        result_type: type[ResultT],
        *,
        task_queue: str | None,
        update_id: str | None = None,
    ) -> ResultT:
        handle = self.temporal.get_workflow_handle(workflow_id)

        def start(deadline: timedelta) -> Any:
            return handle.start_update(
                update,
                payload,
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                id=update_id,
                result_type=result_type,
                rpc_timeout=deadline,
            )

        result: ResultT = await self._outcome(workflow_id, update, start, task_queue)
        return result

    async def _outcome(self, workflow_id: str, update: str, start: StartUpdate, task_queue: str | None) -> Any:
        outcome = await update_outcome(start)
        if isinstance(outcome, Unfinished):
            raise UpdateNotApplied(not_applied(update, workflow_id, task_queue or self.settings.task_queue, outcome))
        return outcome


def not_applied(update: str, workflow_id: str, task_queue: str, outcome: Unfinished) -> str:
    """What is true of an update with no answer yet: never "failed", since it may still apply."""
    if outcome == Unfinished.NOT_FINISHED:
        return (
            f"{update} to '{workflow_id}': accepted by a worker, not finished within "
            f"{FINISH_WITHIN.total_seconds():.0f} s; it is recorded and finishes when a worker runs "
            f"(task queue '{task_queue}')"
        )
    return (
        f"{update} to '{workflow_id}': sent, not yet applied: it applies when a worker runs (task queue "
        f"'{task_queue}'), unless the Temporal server restarts first, or drops it from memory (after an hour "
        f"untouched, by default). No worker accepted it within {ACCEPT_WITHIN.total_seconds():.0f} s."
    )


def approval_closed_reason(ref: ExecutionRef, state: ExecutionState, stage: str, action: str) -> str:
    """Why an approval takes no decision, read from the execution's state: the same words whether the
    server refused a given token or no current token was found."""
    stage_state = state.stage(stage)
    action_state = next((a for a in stage_state.actions if a.action_name == action), None) if stage_state else None
    if action_state and action_state.error and action_state.error.code == "ApprovalTimedOut":
        return f"approval '{action}' timed out: {action_state.error.message}"
    if action_state and action_state.approval is not None:
        approval = action_state.approval
        return f"approval '{action}' was already decided: {approval.status} by {approval.by or 'unknown'}"
    if state.status in (ExecutionStatus.STOPPED, ExecutionStatus.STOPPING, ExecutionStatus.CANCELLED):
        return f"execution '{ref}' was stopped; its approvals are closed"
    if state.status == ExecutionStatus.SUPERSEDED:
        return f"execution '{ref}' was {state.status_summary or 'superseded'}; its approvals are closed"
    if stage_state is None or stage_state.status is None:
        if state.status.is_terminal:
            return f"execution '{ref}' ended ({state.status.value}) before stage '{stage}' started"
        return f"stage '{stage}' has not started yet in execution '{ref}'"
    if stage_state.status in (StageStatus.IN_PROGRESS, StageStatus.STOPPING):
        return f"approval '{action}' in stage '{stage}' is not waiting for a decision"
    return f"stage '{stage}' is no longer waiting for approvals (it is {stage_state.status.value})"


def refusal(err: WorkflowUpdateFailedError) -> str:
    """Why an update was refused: the innermost ApplicationError's message (a validator's refusal, or
    an activity's, e.g. a rollback rule checked by `start_manual_rollback`)."""
    cause: BaseException | None = err.cause
    while getattr(cause, "cause", None) is not None and not isinstance(cause, ApplicationError):
        cause = getattr(cause, "cause", None)
    return getattr(cause, "message", None) or str(cause or err)
