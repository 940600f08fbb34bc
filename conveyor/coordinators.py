"""Reading a pipeline's coordinator (`Pipeline` workflow, id `<pipeline>`), whether it runs or has closed.

A coordinator with nothing to keep closes after an idle period, saving its state first (in the store,
by pipeline name); the next message starts it again from that state. So its state is the live one
while it runs, else the one it saved. `describe` names the newest run: a closed newest run means no
run is open, and what it saved is what the next run will start from.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from pydantic import ValidationError
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from conveyor.interface import ExecutionMode, Query
from conveyor.model import CoordinatorInput, CoordinatorState
from conveyor.settings import Settings

# The store's `get_coordinator_state`: the saved state's JSON text, None if it never closed.
SavedStateReader = Callable[[str], str | None]


def coordinator_input(pipeline: str, execution_mode: ExecutionMode | str, settings: Settings) -> CoordinatorInput:
    """How a coordinator starts, whoever starts it (the client's `apply`, an execution's `coordinate`)."""
    return CoordinatorInput(
        pipeline_name=pipeline,
        execution_mode=ExecutionMode(execution_mode),
        continue_as_new_every=settings.coordinator_continue_as_new_every,
        idle_minutes=settings.coordinator_idle_minutes,
    )


class SavedStateUnreadable(ValueError):
    """The state a coordinator saved cannot be read back; the message names the pipeline."""


def parse_saved_state(pipeline: str, text: str) -> CoordinatorState:
    try:
        return CoordinatorState.model_validate_json(text)
    except ValidationError as err:
        raise SavedStateUnreadable(
            f"the saved state of pipeline '{pipeline}''s coordinator is unreadable: {err}"
        ) from None


async def read_coordinator_state(
    client: Client, pipeline: str, saved: SavedStateReader, *, rpc_timeout: timedelta | None = None
) -> CoordinatorState | None:
    """The live state while the coordinator runs, else the one it saved; None if it never ran.
    The query needs a worker (raises RPCError when none answers in time); the saved state does not."""
    handle = client.get_workflow_handle(pipeline)
    try:
        running = (await handle.describe(rpc_timeout=rpc_timeout)).status == WorkflowExecutionStatus.RUNNING
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
        running = False  # never ran, or its runs are past the namespace's retention
    if running:
        live: CoordinatorState = await handle.query(Query.STATE, result_type=CoordinatorState, rpc_timeout=rpc_timeout)
        return live
    text = await asyncio.to_thread(saved, pipeline)
    return parse_saved_state(pipeline, text) if text is not None else None
