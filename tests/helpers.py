"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import yaml

from conveyor.client import ConveyorClient, ExecutionRef


def pipeline(text: str) -> dict[str, Any]:
    """A declaration from inline YAML, with a unique name so tests never share executions."""
    data = yaml.safe_load(text)
    data["name"] = f"{data['name']}-{uuid.uuid4().hex[:8]}"
    return data


async def waiting_token(conveyor: ConveyorClient, ref: ExecutionRef, stage: str = "Prod", action: str = "Gate") -> str:
    """The approval's token, once the approval is waiting."""

    async def poll() -> str:
        while True:
            state = await conveyor.state(ref)
            found = state.stage(stage)
            token = next((a.token for a in found.actions if a.action_name == action), None) if found else None
            if token:
                return token
            await asyncio.sleep(0.2)

    return await asyncio.wait_for(poll(), 30)


async def waiting_for_stage(conveyor: ConveyorClient, ref: ExecutionRef, stage: str) -> None:
    """Until the execution waits in front of `stage` (its lock, or a closed transition)."""

    async def poll() -> None:
        while (await conveyor.state(ref)).waiting_for_stage != stage:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), 30)
