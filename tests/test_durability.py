"""Durability against real failures: a SIGKILLed worker process and a restarted server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from temporalio.worker import Worker

from conveyor.client import ConveyorClient
from conveyor.devserver import EmbeddedServer
from conveyor.model import ExecutionStatus
from conveyor.settings import Settings
from conveyor.worker import build_worker
from tests.helpers import heartbeat_recorded, pipeline, waiting_token


def start_worker_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """A real `conveyor worker` process, exactly as an operator runs it."""
    env = os.environ | {
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "CONVEYOR_TASK_QUEUE": settings.task_queue,
        "CONVEYOR_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def wait_for(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def test_killed_worker_mid_action_resumes_without_rerunning_finished_work(
    conveyor: ConveyorClient, settings: Settings, tmp_path: Path
) -> None:
    side = tmp_path / "side-effects"
    side.mkdir()
    declaration = pipeline(
        f"""
name: crash
conveyor:
  heartbeatTimeoutSeconds: 2
stages:
  - name: First
    actions:
      - name: Once
        provider: Commands
        commands: ["echo ran >> {side}/once.log"]
  - name: Second
    actions:
      - name: Long
        provider: Commands
        commands:
          - "echo start $$ >> {side}/long.log"
          - "sleep 6"
          - "echo done $$ >> {side}/long.log"
  - name: Third
    actions:
      - name: After
        provider: Commands
        commands: ["echo ran >> {side}/after.log"]
"""
    )
    first = start_worker_process(settings, tmp_path / "worker1.log")
    try:
        ref, _ = await conveyor.start(declaration)
        await wait_for(lambda: len(lines(side / "long.log")) == 1, 30, "the long action to start")
        await heartbeat_recorded(conveyor.temporal, ref.stage_workflow_id("Second"))  # its process group
        orphan_pid = int(lines(side / "long.log")[0].split()[1])
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert psutil.pid_exists(orphan_pid), "the killed worker's command should still be running (an orphan)"
    finally:
        if first.poll() is None:
            first.kill()
    second = start_worker_process(settings, tmp_path / "worker2.log")
    try:
        state = await asyncio.wait_for(conveyor.wait(ref), 90)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert lines(side / "once.log") == ["ran"]  # finished before the crash: never ran again
    assert lines(side / "after.log") == ["ran"]
    long_log = lines(side / "long.log")
    starts = [line for line in long_log if line.startswith("start")]
    dones = [line for line in long_log if line.startswith("done")]
    assert len(starts) == 2, long_log  # the interrupted attempt, then the retry
    retry_pid = int(starts[1].split()[1])
    assert dones == [f"done {retry_pid}"], long_log  # the orphan never finished: the retry killed it
    assert not psutil.pid_exists(orphan_pid) or psutil.Process(orphan_pid).status() == psutil.STATUS_ZOMBIE
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if str(side) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []


async def test_waiting_approval_survives_a_server_restart(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, task_queue="restart")
    declaration = pipeline(
        """
name: restart
stages:
  - name: Gate
    actions:
      - {name: Approve, provider: Manual}
  - name: Ship
    actions:
      - {name: Deploy, provider: Commands, commands: ["echo shipped"]}
"""
    )
    server = EmbeddedServer(settings, headless=True)
    temporal = await server.start()
    try:
        conveyor = ConveyorClient(temporal, settings)
        async with build_worker(temporal, settings):
            ref, _ = await conveyor.start(declaration)
            token = await waiting_token(conveyor, ref, "Gate", "Approve")
    finally:
        await asyncio.to_thread(server.stop)

    restarted = EmbeddedServer(settings, port=server.port, headless=True)  # same SQLite file, same port
    temporal = await restarted.start()
    try:
        conveyor = ConveyorClient(temporal, settings)
        worker: Worker = build_worker(temporal, settings)
        async with worker:
            state = await conveyor.state(ref)
            assert state.status == ExecutionStatus.IN_PROGRESS
            await conveyor.decide(ref, "Gate", "Approve", approve=True, token=token, by="after-restart")
            final = await asyncio.wait_for(conveyor.wait(ref), 60)
    finally:
        await asyncio.to_thread(restarted.stop)
    assert final.status == ExecutionStatus.SUCCEEDED
    gate = final.stage("Gate")
    assert gate is not None and gate.actions[0].approval is not None
    assert gate.actions[0].approval.by == "after-restart"
