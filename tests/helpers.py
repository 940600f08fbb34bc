"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
import yaml
from temporalio.client import Client

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


@asynccontextmanager
async def serving(app: Any, **options: Any) -> AsyncIterator[str]:
    """An ASGI app served by uvicorn on loopback (`options` for uvicorn.Config), its base URL. The socket is bound
    here to port 0 and handed to uvicorn, so no other process (a second pytest-xdist worker) can take the port
    between choosing and binding. A response still streaming when the test leaves (a browser's open event stream
    after a failed assertion) is cancelled after a short grace: otherwise the shutdown waits for it forever."""
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP (0 does not), and without
    # it every keep-alive request waits ~40 ms for the delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    defaults = {"log_config": None, "access_log": False, "timeout_graceful_shutdown": 2}
    server = uvicorn.Server(uvicorn.Config(app, **(defaults | options)))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # its error, if it failed to start
                raise RuntimeError("uvicorn stopped before it started serving")
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def heartbeat_recorded(client: Client, workflow_id: str, timeout: float = 30) -> None:
    """Until a running activity of the workflow has heartbeat details on the server (a crash test kills the
    worker only then: the details, such as a command's process group, are what the retry finds)."""
    handle = client.get_workflow_handle(workflow_id)

    async def poll() -> None:
        while True:
            pending = (await handle.describe()).raw_description.pending_activities
            if any(activity.heartbeat_details.payloads for activity in pending):
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(poll(), timeout)
