"""The console follows an action's log live: lines arrive while the action runs, every line once and in order, and the
iterator ends when the action has ended and its log is read; from the local store and from S3 on another host."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ConveyorError, ExecutionRef
from conveyor.console.logs import follow_action_log
from conveyor.model import ActionStatus, ExecutionStatus
from conveyor.settings import Settings
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.helpers import pipeline
from tests.test_s3_store import s3_settings  # noqa: F401 - a fixture used here

EMITTING = """
name: logs-{suffix}
stages:
  - name: Build
    actions:
      - name: Emit
        provider: Commands
        commands:
          - for i in $(seq 1 20); do echo "line-$i"; done
          # Until the test has read the first lines while the action runs (a fixed sleep races a loaded machine).
          - for i in $(seq 600); do test -e {gate} && break; sleep 0.1; done
          - for i in $(seq 21 40); do echo "line-$i é"; sleep 0.02; done
          - printf 'the end, no line end'
"""


async def follow_while_running(client: ConveyorClient, ref: ExecutionRef, gate: Path) -> list[list[str]]:
    """Every batch the follower yields; the gate opens once the first lines were read with the action running."""
    batches: list[list[str]] = []
    async for batch in follow_action_log(client, ref, "Build", "Emit", interval=0.1):
        batches.append(batch)
        if not gate.exists() and any(line == "line-20" for line in batch):
            _, running = await client.action_state(ref, "Build", "Emit")
            assert running.status == ActionStatus.IN_PROGRESS  # read live, not after the end
            gate.touch()
    return batches


def assert_every_line_once_in_order(batches: list[list[str]]) -> None:
    lines = [line for batch in batches for line in batch]
    emitted = [line for line in lines if line.startswith("line-")]
    assert emitted == [f"line-{i}" for i in range(1, 21)] + [f"line-{i} é" for i in range(21, 41)]
    assert lines[-1] == "the end, no line end"
    assert len(batches) > 1


async def test_a_running_actions_log_is_followed_to_its_end(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    ref, _ = await conveyor.start(pipeline(EMITTING.format(suffix="local", gate=gate)))
    batches = await asyncio.wait_for(follow_while_running(conveyor, ref, gate), 60)
    assert gate.exists()
    assert_every_line_once_in_order(batches)
    _, emit = await conveyor.action_state(ref, "Build", "Emit")
    assert emit.status == ActionStatus.SUCCEEDED  # it ended because the action did


async def test_followed_from_another_host_through_s3(
    temporal_client: Client,
    s3_settings: Settings,  # noqa: F811 - the fixture imported above
    aws: Aws,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    async with build_worker(temporal_client, s3_settings):
        ref, _ = await ConveyorClient(temporal_client, s3_settings).start(
            pipeline(EMITTING.format(suffix=uuid.uuid4().hex[:8], gate=gate))
        )
        # The console's host: the same Temporal and bucket, its own empty data directory.
        console = ConveyorClient(temporal_client, s3_settings.model_copy(update={"data_dir": tmp_path / "console"}))
        batches = await asyncio.wait_for(follow_while_running(console, ref, gate), 60)
        assert (await asyncio.wait_for(console.wait(ref), 30)).status == ExecutionStatus.SUCCEEDED
    assert_every_line_once_in_order(batches)
    assert not (tmp_path / "console" / "logs").exists()


async def test_an_unknown_action_is_named_at_once(conveyor: ConveyorClient, worker: Worker, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    ref, _ = await conveyor.start(pipeline(EMITTING.format(suffix="unknown", gate=gate)))
    with pytest.raises(ConveyorError, match="stage 'Build' has no action 'Nope'"):
        async for _ in follow_action_log(conveyor, ref, "Build", "Nope"):
            pass
    await asyncio.wait_for(conveyor.wait(ref), 30)
