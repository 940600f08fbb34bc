"""A pipeline's coordinator lives only while it has something to keep: one with no registered version,
no execution holding, waiting or held at a stage and no disabled transition closes after an idle period,
saving its state first; the next message starts it again from that state."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy

from conveyor.client import ConveyorClient, ConveyorError, ExecutionRef
from conveyor.model import (
    CoordinatorInput,
    CoordinatorState,
    ExecutionSlot,
    ExecutionStatus,
    StageEntryRequest,
    StageRelease,
)
from conveyor.settings import Settings, SettingsError
from conveyor.worker import build_worker
from tests.helpers import pipeline, waiting_token
from tests.test_pipelines import eventually, finished, holding

IDLE_MINUTES = 0.02  # 1.2 s
IDLE_SECONDS = IDLE_MINUTES * 60

ONE_STAGE = """
name: one-off
stages:
  - name: Deploy
    actions:
      - {name: Ship, provider: Noop}
"""

GATED = """
name: gated-once
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Noop}
  - name: Gate
    actions:
      - {name: Approve, provider: Manual}
"""

ROLLS_BACK = """
name: rolls-back
variables: [{name: Outcome, defaultValue: ok}]
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Noop}
  - name: Deploy
    onFailure: {result: ROLLBACK}
    actions:
      - {name: Ship, provider: Commands, commands: ['test "#{variables.Outcome}" = ok']}
"""


def idle_settings(settings: Settings, minutes: float = IDLE_MINUTES) -> Settings:
    return settings.model_copy(update={"coordinator_idle_minutes": minutes})


@asynccontextmanager
async def idle_conveyor(temporal_client: Client, settings: Settings) -> AsyncIterator[ConveyorClient]:
    """A worker and a client whose coordinators close after IDLE_SECONDS without anything to keep."""
    quick = idle_settings(settings)
    async with build_worker(temporal_client, quick):
        yield ConveyorClient(temporal_client, quick)


async def coordinator_status(temporal: Client, name: str) -> WorkflowExecutionStatus | None:
    return (await temporal.get_workflow_handle(name).describe()).status


async def closed(temporal: Client, name: str, timeout: float = 20) -> None:
    async def check() -> bool:
        return await coordinator_status(temporal, name) == WorkflowExecutionStatus.COMPLETED

    await eventually(check, timeout=timeout, what=f"coordinator {name} to close")


async def still_running_after_idle_periods(temporal: Client, name: str) -> None:
    await asyncio.sleep(3 * IDLE_SECONDS)
    assert await coordinator_status(temporal, name) == WorkflowExecutionStatus.RUNNING


async def test_a_one_off_run_leaves_no_running_coordinator(temporal_client: Client, settings: Settings) -> None:
    declaration = pipeline(ONE_STAGE)
    name = declaration["name"]
    async with idle_conveyor(temporal_client, settings) as conveyor:
        ref, _ = await conveyor.start(declaration)
        assert (await finished(conveyor, ref)).status == ExecutionStatus.SUCCEEDED
        await closed(temporal_client, name)
    # Closed, and no worker running: `conveyor state` reads what the coordinator saved when it closed.
    saved = await conveyor.pipeline_facts(name)
    deploy = saved.stage("Deploy")
    assert deploy.last_succeeded is not None and deploy.last_succeeded.execution_id == ref.execution_id
    assert deploy.holder is None and not deploy.waiting
    async with idle_conveyor(temporal_client, settings) as conveyor:
        applied = await conveyor.apply(declaration, by="ops")  # starts it again, from what it saved
        assert applied.changed and applied.version.version == 1
        live = await conveyor.pipeline_state(name)
        assert live.runs == 2 and live.current is not None
        last = live.stage("Deploy").last_succeeded
        assert last is not None and last.execution_id == ref.execution_id
        await still_running_after_idle_periods(temporal_client, name)  # registered: it stays


async def test_a_holder_and_a_disabled_transition_keep_the_coordinator(
    temporal_client: Client, settings: Settings
) -> None:
    declaration = pipeline(GATED)
    name = declaration["name"]
    async with idle_conveyor(temporal_client, settings) as conveyor:
        ref, _ = await conveyor.start(declaration)
        await holding(conveyor, name, "Gate", ref)  # held while its approval waits
        await still_running_after_idle_periods(temporal_client, name)
        await conveyor.set_transition(name, "Build", enabled=False, reason="freeze", by="ops")
        token = await waiting_token(conveyor, ref, "Gate", "Approve")
        await conveyor.decide(ref, "Gate", "Approve", approve=True, token=token, by="tester")
        assert (await finished(conveyor, ref)).status == ExecutionStatus.SUCCEEDED
        await still_running_after_idle_periods(temporal_client, name)  # the freeze keeps it
        await conveyor.set_transition(name, "Build", enabled=True, by="ops")
        await closed(temporal_client, name)
        assert (await conveyor.pipeline_state(name)).stage("Build").transition.changed_by == "ops"


async def test_a_transition_changed_after_the_close_starts_the_coordinator_again(
    temporal_client: Client, settings: Settings
) -> None:
    declaration = pipeline(ONE_STAGE)
    name = declaration["name"]
    async with idle_conveyor(temporal_client, settings) as conveyor:
        ref, _ = await conveyor.start(declaration)
        assert (await finished(conveyor, ref)).status == ExecutionStatus.SUCCEEDED
        await closed(temporal_client, name)
        changed = await conveyor.set_transition(name, "Deploy", enabled=False, reason="freeze", by="ops")
        assert not changed.enabled
        state = await conveyor.pipeline_state(name)
        assert state.runs == 2 and not state.stage("Deploy").transition.enabled
        last = state.stage("Deploy").last_succeeded  # started from what it saved
        assert last is not None and last.execution_id == ref.execution_id
        await still_running_after_idle_periods(temporal_client, name)  # the freeze keeps it
        with pytest.raises(ConveyorError, match="is not registered"):  # a name that never ran is not a pipeline
            await conveyor.set_transition(f"{name}-never", "Deploy", enabled=False, by="ops")


async def test_the_lock_of_a_terminated_holder_does_not_keep_the_coordinator(
    temporal_client: Client, settings: Settings
) -> None:
    declaration = pipeline(GATED)
    name = declaration["name"]
    async with idle_conveyor(temporal_client, settings) as conveyor:
        ref, _ = await conveyor.start(declaration)
        await holding(conveyor, name, "Gate", ref)
        await temporal_client.get_workflow_handle(ref.workflow_id).terminate("operator terminated it")
        await closed(temporal_client, name)
        assert (await conveyor.pipeline_state(name)).stage("Gate").holder is None


async def test_a_restarted_coordinator_still_knows_the_rollback_target(
    temporal_client: Client, settings: Settings
) -> None:
    """The automatic rollback after a failure targets the last execution that succeeded in the stage:
    a coordinator that closed in between and started again empty would have forgotten it."""
    declaration = pipeline(ROLLS_BACK)
    name = declaration["name"]
    async with idle_conveyor(temporal_client, settings) as conveyor:
        good, _ = await conveyor.start(declaration)
        assert (await finished(conveyor, good)).status == ExecutionStatus.SUCCEEDED
        await closed(temporal_client, name)
        bad, _ = await conveyor.start(declaration, variables={"Outcome": "broken"})
        failed = await finished(conveyor, bad)
        assert failed.status == ExecutionStatus.FAILED
        assert failed.rollback_execution is not None, failed.status_summary
        rolled = await finished(conveyor, ExecutionRef(name, failed.rollback_execution))
        assert rolled.status == ExecutionStatus.SUCCEEDED and rolled.rollback_of == good.execution_id


def _slot(name: str, index: int) -> ExecutionSlot:
    return ExecutionSlot(
        execution_id=f"e{index}", workflow_id=f"{name}/e{index}", started_at=datetime.now(UTC), pipeline_version=1
    )


async def test_messages_racing_the_close_are_not_lost(temporal_client: Client, settings: Settings) -> None:
    """Messages sent at moments swept across the idle period (before, during and after the coordinator
    saves its state and closes), both as signal-with-start and as update-with-start, as executions send
    them: each leaves its fact, in the run it reached or in the next one."""
    minutes = 0.01  # 0.6 s
    name = pipeline(ONE_STAGE)["name"]
    quick = idle_settings(settings, minutes)
    coordinator = CoordinatorInput(pipeline_name=name, idle_minutes=minutes)
    # It closes between one and two idle periods after the last message (its idle clock rings once a period).
    gaps = [2 * minutes * 60 + offset / 1000 for offset in range(-300, 300, 40)]
    random.Random(12).shuffle(gaps)
    async with build_worker(temporal_client, quick):
        for index, gap in enumerate(gaps):
            stage = f"S{index}"
            if index % 2:
                await temporal_client.start_workflow(
                    "Pipeline",
                    coordinator,
                    id=name,
                    task_queue=quick.task_queue,
                    start_signal="release_stage",
                    start_signal_args=[StageRelease(stage_name=stage, execution_id=f"e{index}", outcome="Succeeded")],
                )
            else:
                start = WithStartWorkflowOperation(
                    "Pipeline",
                    coordinator,
                    id=name,
                    task_queue=quick.task_queue,
                    id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                )
                entry = StageEntryRequest(stage_name=stage, execution=_slot(name, index), execution_mode="PARALLEL")
                await temporal_client.execute_update_with_start_workflow(
                    "enter_stage", entry, start_workflow_operation=start
                )
            await asyncio.sleep(gap)
        await closed(temporal_client, name)
        conveyor = ConveyorClient(temporal_client, quick)
        state: CoordinatorState = await conveyor.pipeline_state(name)
    for index in range(len(gaps)):
        lock = state.stage(f"S{index}")
        fact = lock.last_succeeded if index % 2 else lock.newest_entered
        assert fact is not None and fact.execution_id == f"e{index}", f"message {index} was lost"
    assert state.runs >= 3  # it closed and started again meanwhile (more than once)


def test_an_unusable_idle_period_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("soon", "0", "-5", "inf"):
        monkeypatch.setenv("CONVEYOR_COORDINATOR_IDLE_MINUTES", value)
        with pytest.raises(
            SettingsError,
            match=f"CONVEYOR_COORDINATOR_IDLE_MINUTES='{value}': write a number of minutes greater than 0",
        ):
            Settings.from_env()
    monkeypatch.setenv("CONVEYOR_COORDINATOR_IDLE_MINUTES", "2.5")
    assert Settings.from_env().coordinator_idle_minutes == 2.5


def test_the_cli_reports_an_unusable_idle_period_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "TEMPORAL_"))}
    env |= {"CONVEYOR_DATA_DIR": str(tmp_path), "CONVEYOR_COORDINATOR_IDLE_MINUTES": "ten"}
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "state", "some-pipeline"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done
    assert "CONVEYOR_COORDINATOR_IDLE_MINUTES='ten': write a number of minutes greater than 0" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_retry_rule_reads_a_closed_coordinator_s_saved_facts(
    temporal_client: Client, settings: Settings, tmp_path: Path
) -> None:
    """`conveyor retry` is refused once a newer execution has entered the stage: after the coordinator
    closed, its saved facts still say which one that is (forgotten, the older one would be retried)."""
    fixed = tmp_path / "fixed"
    declaration = pipeline(
        f"""
name: retried
conveyor: {{retryWindowMinutes: 5}}
stages:
  - name: Deploy
    actions:
      - {{name: Ship, provider: Commands, commands: ["test -f {fixed}"]}}
"""
    )
    name = declaration["name"]
    async with idle_conveyor(temporal_client, settings) as conveyor:
        older, _ = await conveyor.start(declaration)
        assert (await finished(conveyor, older)).status == ExecutionStatus.FAILED
        newer, _ = await conveyor.start(declaration)
        assert (await finished(conveyor, newer)).status == ExecutionStatus.FAILED
        await closed(temporal_client, name)  # both failed executions stay open for a retry
        with pytest.raises(ConveyorError, match=f"a newer execution \\({newer.execution_id}\\) has entered"):
            await conveyor.retry(older, "Deploy", by="ops")
        fixed.touch()
        await conveyor.retry(newer, "Deploy", by="ops")

        async def succeeded() -> bool:
            return (await conveyor.state(newer)).status == ExecutionStatus.SUCCEEDED

        await eventually(succeeded, what="the retried execution to succeed")
