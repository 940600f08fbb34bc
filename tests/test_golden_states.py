"""Golden final states: replay compares commands, not state, so representative runs' final `ExecutionState`
(normalized: ids, times, tokens, digests and temporary paths masked) are compared with the ones recorded in
tests/histories/golden/ by `python -m tests.histories.record --golden`. A difference is a change of behaviour:
deliberate ones are re-recorded in the same commit, which says so."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from conveyor.client import ConveyorClient
from conveyor.connection import connect
from conveyor.devserver import EmbeddedServer
from conveyor.settings import Settings
from conveyor.worker import build_worker
from tests.histories.scenarios import DECLARATIONS, final_state, normalized, run_scenario

GOLDEN = Path(__file__).parent / "histories" / "golden"


@pytest_asyncio.fixture(scope="module")
async def shared(server: EmbeddedServer, data_dir: Path) -> AsyncIterator[ConveyorClient]:
    """One worker for every scenario of the module, on its own task queue."""
    settings = Settings(data_dir=data_dir, temporal_address=server.address, task_queue=f"golden-{uuid.uuid4().hex[:8]}")
    temporal = await connect(server.address, settings)
    async with build_worker(temporal, settings):
        yield ConveyorClient(temporal, settings)


def test_every_scenario_has_a_golden_state() -> None:
    assert {path.stem for path in GOLDEN.glob("*.json")} == set(DECLARATIONS)


@pytest.mark.parametrize("name", sorted(DECLARATIONS))
async def test_final_state_matches_the_golden_one(shared: ConveyorClient, name: str, tmp_path: Path) -> None:
    run = await run_scenario(shared, name, tmp_path)
    actual = normalized(await final_state(shared, run), run, tmp_path)
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    assert actual == expected
