"""An action attempt's scratch workspace: fresh when the attempt starts, removed when it ends, with heartbeats
while the attempt works in it (a stop or an abandon arrives through them as a cancellation)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from temporalio import activity

from activities.providers.commands import workspace_key
from conveyor.model import ActionContext
from conveyor.settings import Settings

HEARTBEAT_SECONDS = 2.0


@contextlib.asynccontextmanager
async def action_workspace(settings: Settings, context: ActionContext) -> AsyncIterator[Path]:
    """A fresh directory for this attempt, removed afterwards; heartbeats while the block runs."""
    workspace = settings.workspaces_dir / workspace_key(context) / f"attempt-{activity.info().attempt}"
    beat = asyncio.create_task(_heartbeat_forever())
    try:
        await asyncio.to_thread(_fresh_dir, workspace)
        yield workspace
    finally:
        beat.cancel()
        await asyncio.to_thread(_remove, workspace)


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
