"""Following an action's log as it is written: what `conveyor logs --follow` prints and the console streams.

The log is read from the store (stores/logs.py: the local data directory or S3, so from any host); when the action
(or, for `<Action>.rollback`, its compensation) has ended, what is left is read once more: every chunk is in the
store before the action's result is, so nothing written is missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from conveyor.model import ActionState, ActionStatus, CompensationStatus, ExecutionState
from conveyor.settings import compensation_log_name
from conveyor.stores.logs import ActionLogReader

FOLLOW_INTERVAL = 0.5  # seconds between looks at the store and the action's status

FINISHED_ACTION = (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.ABANDONED)


async def follow_log(
    reader: ActionLogReader, finished: Callable[[], Awaitable[bool]], *, interval: float = FOLLOW_INTERVAL
) -> AsyncIterator[bytes]:
    """Each new chunk of the log, as the store has it, until `finished()` says the writer is done and the rest
    is read. Store errors (ArtifactError, StoreUnavailableError) reach the caller, who names the log."""
    while True:
        chunk = await asyncio.to_thread(reader.read_new)
        if chunk:
            yield chunk
        if await finished():
            rest = await asyncio.to_thread(reader.read_new)
            if rest:
                yield rest
            return
        await asyncio.sleep(interval)


def compensated_action(log_name: str) -> str | None:
    """The action whose compensation logs under `log_name` (`Install.rollback`), if it is one."""
    action = log_name.rpartition(".")[0]
    return action if action and compensation_log_name(action) == log_name else None


def log_owner(log_name: str) -> str:
    """The action whose state says when the log `log_name` is complete."""
    return compensated_action(log_name) or log_name


def log_finished(state: ExecutionState, action: ActionState, log_name: str) -> bool:
    """Whether the log `log_name` of `action` (its own, or its compensation's) is written to the end."""
    if state.status.is_terminal:
        return True
    if compensated_action(log_name):
        return action.compensation is not None and action.compensation.status != CompensationStatus.IN_PROGRESS
    return action.status in FINISHED_ACTION
