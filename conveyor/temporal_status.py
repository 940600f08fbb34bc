"""What Temporal knows about an execution that the execution could not record itself.

An execution records its own status (`PipelineStatus`, memo). Two things it cannot record:
- Temporal closed its workflow (terminated, timed out, or failed before recording why): the recorded
  status is still InProgress, so the closed status is read from Temporal and shown instead;
- its workflow task keeps failing (a bug, or a non-determinism error after a bad deploy): Temporal keeps
  the workflow Running and retries the task, so nothing is recorded; `describe` shows the attempts and
  the history the first failure of the streak (later attempts are not written to history).
README's "Statuses" section documents the mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client, WorkflowExecutionDescription, WorkflowExecutionStatus
from temporalio.service import RPCError

from conveyor.model import ExecutionStatus
from conveyor.text import shorten, utc_time

# Events read backwards from the end of a history to find the failure of a stuck workflow task.
STUCK_SCAN_EVENTS = 100
MESSAGE_LIMIT = 500


@dataclass(frozen=True)
class ClosedByTemporal:
    status: ExecutionStatus
    summary: str  # why, without the details the close event may add

    @property
    def stopped(self) -> bool:
        return self.status == ExecutionStatus.STOPPED


# The status shown for an execution whose workflow Temporal closed before the execution recorded an end.
CLOSED_BY_TEMPORAL = {
    WorkflowExecutionStatus.TERMINATED: ClosedByTemporal(
        ExecutionStatus.STOPPED, "terminated through Temporal (nothing ran after it, compensation included)"
    ),
    WorkflowExecutionStatus.TIMED_OUT: ClosedByTemporal(
        ExecutionStatus.FAILED, "timed out through Temporal (its workflow execution or run timeout)"
    ),
    WorkflowExecutionStatus.CANCELED: ClosedByTemporal(ExecutionStatus.STOPPED, "cancelled through Temporal"),
    WorkflowExecutionStatus.FAILED: ClosedByTemporal(ExecutionStatus.FAILED, "its workflow failed"),
}


def closed_by_temporal(recorded: str | None, temporal: WorkflowExecutionStatus | None) -> ClosedByTemporal | None:
    """What to show instead of the recorded status (`PipelineStatus`), when Temporal closed the workflow
    while the execution had recorded no end; None when the recorded status is the truth."""
    if temporal is None or recorded in {s.value for s in ExecutionStatus if s.is_terminal}:
        return None
    return CLOSED_BY_TEMPORAL.get(temporal)


def _short(message: str) -> str:
    return shorten(message.strip(), MESSAGE_LIMIT)


async def _events_backwards(
    client: Client, description: WorkflowExecutionDescription, limit: int
) -> list[HistoryEvent]:
    """Up to `limit` events of the run, newest first."""
    events: list[HistoryEvent] = []
    request = GetWorkflowExecutionHistoryReverseRequest(namespace=client.namespace, maximum_page_size=min(limit, 50))
    request.execution.workflow_id, request.execution.run_id = description.id, description.run_id
    while len(events) < limit:
        page = await client.workflow_service.get_workflow_execution_history_reverse(request)
        events += page.history.events
        if not page.next_page_token:
            break
        request.next_page_token = page.next_page_token
    return events[:limit]


async def close_details(client: Client, description: WorkflowExecutionDescription) -> str | None:
    """Who terminated the workflow and why, or the failure it closed with, from its close event."""
    try:
        events = await _events_backwards(client, description, 1)
    except RPCError:
        return None  # the summary without details is still true
    if not events:
        return None
    event = events[0]
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        attributes = event.workflow_execution_terminated_event_attributes
        by = f" by {attributes.identity}" if attributes.identity else ""
        return _short(f"terminated{by}: {attributes.reason or 'no reason given'}")
    if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
        return _short(event.workflow_execution_failed_event_attributes.failure.message)
    return None


async def stuck_reason(client: Client, description: WorkflowExecutionDescription) -> str | None:
    """ "stuck: workflow task failing since T: <error> (attempt N)" while the workflow's task keeps
    failing; None otherwise (a task timing out once, after a lost worker, is not stuck)."""
    if description.status != WorkflowExecutionStatus.RUNNING:
        return None
    raw = description.raw_description
    if not raw.HasField("pending_workflow_task") or raw.pending_workflow_task.attempt < 2:
        return None
    try:
        events = await _events_backwards(client, description, STUCK_SCAN_EVENTS)
    except RPCError:
        return None
    for event in events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            return None  # the last task that ran completed: the retries are timeouts, not a failing task
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes.failure
            since = utc_time(event.event_time.ToDatetime(UTC))
            attempt = raw.pending_workflow_task.attempt
            return f"stuck: workflow task failing since {since}: {_short(failure.message)} (attempt {attempt})"
    return None
