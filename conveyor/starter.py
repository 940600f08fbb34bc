"""Starting a pipeline execution on a Temporal client: the one way an execution is started (except a rollback's,
conveyor.rollback), shared by the client (`conveyor start`, webhooks, Slack) and the trigger activity (schedules
and polls), so both name, tag and deduplicate executions the same way.

The execution id derives from a client request token when there is one (the same token always names the same
execution); the search attributes are set at start so `conveyor list PIPELINE` finds it before its first task.
"""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from conveyor import search_attributes as sa
from conveyor.interface import ExecutionId, WorkflowType
from conveyor.model import ExecutionInput, ExecutionStatus, SourceRevisionOverride, Trigger

# Derives execution ids from client request tokens: the same token always names the same execution.
TOKEN_NAMESPACE = uuid.UUID("6b1f2f52-3c57-4b8e-9d7c-2b0f3f6d6e11")


def execution_id_for_token(pipeline_name: str, token: str) -> str:
    return str(uuid.uuid5(TOKEN_NAMESPACE, f"{pipeline_name}/{token}"))


async def start_execution(
    client: Client,
    task_queue: str,
    pipeline: dict[str, Any],
    *,
    variables: dict[str, str] | None = None,
    source_revisions: list[SourceRevisionOverride] | None = None,
    token: str | None = None,
    started_by: str | None = None,
    trigger: Trigger | None = None,
    source_name: str = "<declaration>",
) -> tuple[ExecutionId, bool]:
    """Start an execution; with a token, a repeat returns the existing one. Returns (execution, started)."""
    name = str(pipeline["name"])
    execution = ExecutionId(name, execution_id_for_token(name, token) if token else str(uuid.uuid4()))
    execution_input = ExecutionInput(
        pipeline=pipeline,
        execution_id=execution.execution_id,
        variables=variables or {},
        source_revisions=source_revisions or [],
        client_request_token=token,
        started_by=started_by,
        trigger=trigger or Trigger(),
        source_name=source_name,
    )
    try:
        handle = await client.start_workflow(
            WorkflowType.EXECUTION.value,
            execution_input,
            id=execution.workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=initial_search_attributes(name, pipeline.get("version"), execution_input.trigger),
            static_summary=f"pipeline {name}",
        )
    except WorkflowAlreadyStartedError:
        return execution, False  # finished earlier with the same token: that is the answer
    # USE_EXISTING answers a running duplicate with the existing run; the response says which.
    response = getattr(handle, "_start_workflow_response", None)
    return execution, bool(getattr(response, "started", True))


def initial_search_attributes(name: str, version: Any, trigger: Trigger) -> TypedSearchAttributes:
    """Set at start, so `conveyor list PIPELINE` finds an execution before its first task runs (and
    the execution need not upsert them: every upsert is a visibility write)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(sa.PIPELINE_NAME, name),
            SearchAttributePair(sa.PIPELINE_STATUS, ExecutionStatus.IN_PROGRESS.value),
            SearchAttributePair(sa.PIPELINE_VERSION, int(version) if isinstance(version, int) else 1),
            SearchAttributePair(sa.PIPELINE_TRIGGER, trigger.trigger_type.value),
        ]
    )
