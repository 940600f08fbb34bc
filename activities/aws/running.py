"""What every AWS provider's activity does around its calls: heartbeats, a scratch workspace, its action log."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from temporalio import activity

from activities.providers.commands import workspace_key
from conveyor.model import ActionContext
from conveyor.settings import Settings, action_log_path

HEARTBEAT_SECONDS = 2.0


@contextlib.asynccontextmanager
async def action_workspace(settings: Settings, context: ActionContext) -> AsyncIterator[Path]:
    """A fresh directory for this attempt, removed afterwards; heartbeats while the block runs (a stop or an
    abandon arrives through them as a cancellation)."""
    workspace = settings.workspaces_dir / workspace_key(context) / f"attempt-{activity.info().attempt}"
    beat = asyncio.create_task(_heartbeat_forever())
    try:
        await asyncio.to_thread(_fresh_dir, workspace)
        yield workspace
    finally:
        beat.cancel()
        await asyncio.to_thread(_remove, workspace)


def write_action_log(settings: Settings, context: ActionContext, lines: list[str]) -> None:
    """Append to the action's log (`conveyor logs`): what was read or written where; never credentials."""
    path = action_log_path(
        settings.logs_dir, context.pipeline_name, context.execution_id, context.stage_name, context.action_name
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with path.open("a", encoding="utf-8") as log:
        log.writelines(f"{stamp} {line}\n" for line in lines)


async def _heartbeat_forever() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_SECONDS)


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _remove(workspace: Path) -> None:
    shutil.rmtree(workspace, ignore_errors=True)
    with contextlib.suppress(OSError):
        workspace.parent.rmdir()
