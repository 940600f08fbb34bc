"""Which Temporal a command talks to, and the embedded server + worker that `run` brings up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

from conveyor.client import ConveyorClient
from conveyor.connection import TemporalUnavailableError, connect
from conveyor.devserver import EmbeddedServer, running_server_address
from conveyor.settings import Settings
from conveyor.telemetry import telemetry_wanted

DEFAULT_ADDRESS = "127.0.0.1:7233"
# On Ctrl-C, running activities get this long to notice cancellation and kill their processes.
WORKER_SHUTDOWN_GRACE = timedelta(seconds=5)


@dataclass
class Session:
    client: ConveyorClient
    address: str
    embedded: EmbeddedServer | None = None


def resolve_address(settings: Settings) -> str:
    """TEMPORAL_ADDRESS, else the embedded server serving this data directory, else the default port."""
    return settings.temporal_address or running_server_address(settings.data_dir) or DEFAULT_ADDRESS


async def connect_existing(settings: Settings, *, telemetry: bool = False) -> Session:
    address = resolve_address(settings)
    try:
        client = await asyncio.wait_for(connect(address, settings, telemetry=telemetry), 10)
    except (TimeoutError, TemporalUnavailableError):
        hint = "" if settings.temporal_address else " Start one with `conveyor server`, or set TEMPORAL_ADDRESS."
        raise TemporalUnavailableError(f"no Temporal server answers at {address}.{hint}") from None
    return Session(ConveyorClient(client, settings), address)


@contextlib.asynccontextmanager
async def running_session(settings: Settings, *, with_worker: bool | None = None) -> AsyncIterator[Session]:
    """For `conveyor run`: use the configured or already-running server, else start an embedded one;
    run a worker in-process when the server is ours (or when asked). Everything started here is
    stopped on the way out, Ctrl-C included."""
    embedded: EmbeddedServer | None = None
    if settings.temporal_address or running_server_address(settings.data_dir):
        session = await connect_existing(settings)
    else:
        embedded = EmbeddedServer(settings, headless=True)
        temporal = await embedded.start()
        session = Session(ConveyorClient(temporal, settings), embedded.address, embedded)
    try:
        if with_worker if with_worker is not None else embedded is not None:
            # Imported here: every workflow and activity (and their libraries) load only for a command that runs a
            # worker, so the others start in a fraction of the time.
            from conveyor.worker import build_worker

            temporal = session.client.temporal
            if telemetry_wanted(settings):  # the worker's own client serves metrics and traces
                temporal = await connect(session.address, settings, telemetry=True)
            worker = build_worker(temporal, settings, graceful_shutdown_timeout=WORKER_SHUTDOWN_GRACE)
            async with worker:
                yield session
        else:
            yield session
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
