"""Shared fixtures: one real Temporal dev server per test session, a fresh task queue per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from conveyor.client import ConveyorClient
from conveyor.connection import ensure_search_attributes
from conveyor.devserver import EmbeddedServer, EmbeddedServerError, find_binary
from conveyor.payloads import data_converter
from conveyor.settings import Settings
from conveyor.worker import build_worker

pytest_plugins = ["tests.aws", "tests.browser"]  # the moto server fixtures; the headless browser fixtures


def pytest_configure(config: pytest.Config) -> None:
    """No terminal size for the CLI processes the tests start: they print as into a pipe (no folding at 80
    columns) unless a test sets COLUMNS. A pytest-xdist worker process finds COLUMNS=80 and LINES=24 in its
    environment although the pytest that started it had none: long lines folded in some tests, not in others."""
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first (a stable sort: otherwise in file order), so pytest-xdist hands them out at the start
    and the short ones fill the gaps, rather than one slow test running alone at the end of the run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conveyor-data")


@pytest_asyncio.fixture(scope="session")
async def server(data_dir: Path) -> AsyncIterator[EmbeddedServer]:
    """The embedded server exactly as `conveyor server` starts it (search attributes, retention); one per
    pytest-xdist worker, each in its worker's own temporary directory."""
    for attempt in (1, 2, 3):
        # Its ports are picked free just before it binds them: another worker's process can take one in between,
        # and the server then exits; new ports on the next attempt.
        embedded = EmbeddedServer(Settings(data_dir=data_dir), headless=True)
        try:
            await embedded.start()
            break
        except EmbeddedServerError:
            if attempt == 3:
                raise
    yield embedded
    await asyncio.to_thread(embedded.stop)


@pytest.fixture
def settings(data_dir: Path, server: EmbeddedServer) -> Settings:
    # A fresh task queue per test: no test's worker ever picks up another test's tasks.
    return Settings(data_dir=data_dir, temporal_address=server.address, task_queue=f"tq-{uuid.uuid4().hex[:12]}")


@pytest_asyncio.fixture
async def temporal_client(server: EmbeddedServer, settings: Settings) -> Client:
    from conveyor.connection import connect

    return await connect(server.address, settings)


@pytest_asyncio.fixture
async def conveyor(temporal_client: Client, settings: Settings) -> ConveyorClient:
    return ConveyorClient(temporal_client, settings)


@pytest_asyncio.fixture
async def worker(temporal_client: Client, settings: Settings) -> AsyncIterator[Worker]:
    """An in-process worker on the test's task queue (crash tests start real worker processes)."""
    async with build_worker(temporal_client, settings) as running:
        yield running


@pytest_asyncio.fixture
async def time_skipping(tmp_path: Path) -> AsyncIterator[tuple[WorkflowEnvironment, ConveyorClient]]:
    """The time-skipping test server (long waits in seconds), Conveyor's search attributes registered,
    and a client on a fresh task queue; the test runs its own worker with `build_worker`."""
    for attempt in (1, 2, 3):  # the SDK gives the server 5 s to come up, which a loaded 2-core box can miss
        try:
            env = await WorkflowEnvironment.start_time_skipping(
                test_server_existing_path=find_binary("temporal-test-server"), data_converter=data_converter
            )
            break
        except RuntimeError:
            if attempt == 3:
                raise
            await asyncio.sleep(1)
    try:
        await ensure_search_attributes(env.client)
        settings = Settings(data_dir=tmp_path, task_queue=f"tq-{uuid.uuid4().hex[:8]}")
        yield env, ConveyorClient(env.client, settings)
    finally:
        await env.shutdown()
