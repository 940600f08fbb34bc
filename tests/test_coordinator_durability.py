"""The coordinator under load and across a crash: continue-as-new every other message, a SIGKILLed
worker with executions queued in front of a stage, and idempotent starts across all of it."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path

import pytest

from conveyor.client import ConveyorClient
from conveyor.model import CoordinatorState, ExecutionStatus
from conveyor.settings import Settings
from tests.helpers import pipeline
from tests.test_durability import start_worker_process

# Enough executions that many wait behind the lock when the worker dies; with a continue-as-new every
# CONTINUE_EVERY messages, the coordinator runs many times on the way (each execution sends it several).
EXECUTIONS = 24
CONTINUE_EVERY = 2
DONE_AT_THE_CRASH = 6


@pytest.mark.slow
async def test_queued_executions_survive_continue_as_new_and_a_killed_worker(
    conveyor: ConveyorClient, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "ran.log"
    declaration = pipeline(
        f"""
name: busy
executionMode: QUEUED
conveyor:
  heartbeatTimeoutSeconds: 2
stages:
  - name: Deploy
    actions:
      - name: Ship
        provider: Commands
        commands: ["sleep 0.1", "echo $CONVEYOR_EXECUTION_ID >> {ran}"]
"""
    )
    name = declaration["name"]
    monkeypatch.setenv("CONVEYOR_COORDINATOR_CONTINUE_AS_NEW_EVERY", str(CONTINUE_EVERY))  # the workers' setting
    worker = start_worker_process(settings, tmp_path / "worker1.log")
    refs = []
    try:
        for index in range(EXECUTIONS):
            ref, started = await conveyor.start(declaration, token=f"release-{index}")
            assert started
            refs.append(ref)

        async def some_done() -> None:
            while len(ran.read_text().splitlines() if ran.exists() else []) < DONE_AT_THE_CRASH:
                await asyncio.sleep(0.1)

        await asyncio.wait_for(some_done(), 60)
        state = await conveyor.pipeline_state(name)
        queued = next(s for s in state.stages if s.stage_name == "Deploy").waiting
        assert len(queued) > 10  # executions are waiting in front of the locked stage...
        worker.send_signal(signal.SIGKILL)  # ...when the worker dies
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    again = start_worker_process(settings, tmp_path / "worker2.log")
    try:
        finals = await asyncio.wait_for(asyncio.gather(*(conveyor.wait(r, interval=1.0) for r in refs)), 240)
        # The same tokens give the same executions, after they finished and after many coordinator runs.
        for index in (0, EXECUTIONS - 1):
            ref, started = await conveyor.start(declaration, token=f"release-{index}")
            assert ref == refs[index] and not started
        coordinator: CoordinatorState = await conveyor.pipeline_state(name)
    finally:
        again.terminate()
        again.wait(15)
    assert [f.status for f in finals] == [ExecutionStatus.SUCCEEDED] * EXECUTIONS  # none lost
    counts = Counter(ran.read_text().split())
    assert set(counts) == {r.execution_id for r in refs}
    assert sum(1 for c in counts.values() if c > 1) <= 1  # only the action running at the crash ran twice
    # It continued-as-new every other message handled (a burst of requests is handled in one run first).
    assert coordinator.runs >= 10
    deploy = next(s for s in coordinator.stages if s.stage_name == "Deploy")
    assert deploy.holder is None and deploy.waiting == []
