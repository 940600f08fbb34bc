"""Rollback as durable compensation, and ROLLBACK executions (automatic and manual)."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ConveyorError
from conveyor.model import ExecutionState, ExecutionStatus, StageState, StageStatus, TriggerType
from conveyor.rollback import RollbackRefused, check_rollback
from conveyor.settings import Settings
from conveyor.spec.validation import parse_pipeline
from tests.helpers import heartbeat_recorded, pipeline
from tests.test_durability import start_worker_process


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def finished(conveyor: ConveyorClient, ref) -> ExecutionState:  # noqa: ANN001
    return await asyncio.wait_for(conveyor.wait(ref, interval=0.2), 90)


async def test_failed_stage_compensates_its_started_actions_in_reverse_order_of_start(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    log = tmp_path / "undo.log"
    declaration = pipeline(
        f"""
name: compensate
variables: [{{name: Target, defaultValue: blue}}]
stages:
  - name: Deploy
    onFailure: {{result: ROLLBACK}}
    actions:
      - name: A
        provider: Commands
        commands: ["echo did-A"]
        environmentVariables: [{{name: WHERE, value: "#{{variables.Target}}"}}]
        conveyor: {{rollback: ['echo "undo-A $WHERE #{{variables.Target}}" >> {log}']}}
      - name: B
        provider: Commands
        runOrder: 2
        commands: ["echo did-B"]
        conveyor: {{rollback: ["echo undo-B >> {log}"]}}
      - name: C
        provider: Commands
        runOrder: 2
        commands: ["echo half-applied", "exit 1"]
        conveyor: {{rollback: ["echo undo-C >> {log}"]}}
"""
    )
    ref, _ = await conveyor.start(declaration)
    state = await finished(conveyor, ref)
    assert state.status == ExecutionStatus.FAILED
    assert lines(log) == ["undo-C", "undo-B", "undo-A blue blue"]  # the half-applied C is undone too
    deploy = state.stages[0]
    assert all(a.compensation is not None and a.compensation.status == "Succeeded" for a in deploy.actions)
    assert "no earlier success in 'Deploy' to roll back to: its compensations ran instead" in (
        state.status_summary or ""
    )


async def test_saga_across_stages_compensates_earlier_stages_in_reverse(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    log = tmp_path / "undo.log"
    declaration = pipeline(
        f"""
name: saga
conveyor: {{compensateEarlierStages: true}}
stages:
  - name: One
    actions:
      - {{name: A, provider: Commands, commands: ["true"], conveyor: {{rollback: ["echo undo-A >> {log}"]}}}}
  - name: Two
    actions:
      - {{name: B, provider: Commands, commands: ["true"], conveyor: {{rollback: ["echo undo-B >> {log}"]}}}}
      - {{name: NoUndo, provider: Commands, commands: ["true"]}}
  - name: Three
    actions:
      - {{name: C, provider: Commands, commands: ["exit 2"], conveyor: {{rollback: ["echo undo-C >> {log}"]}}}}
"""
    )
    ref, _ = await conveyor.start(declaration)
    state = await finished(conveyor, ref)
    assert state.status == ExecutionStatus.FAILED
    assert lines(log) == ["undo-C", "undo-B", "undo-A"]


RELEASE = """
name: release
variables:
  - {{name: Version, defaultValue: "1"}}
  - {{name: Break, defaultValue: "no"}}
stages:
  - name: Build
    actions:
      - name: Package
        provider: Commands
        namespace: Build
        commands:
          - 'mkdir -p out && echo "build #{{variables.Version}}" > out/app.txt'
          - "export V=#{{variables.Version}}"
        outputVariables: [V]
        outputArtifacts: [{{name: App, files: ["out/*"]}}]
  - name: Deploy
    onFailure: {{result: ROLLBACK}}
    actions:
      - name: Ship
        provider: Commands
        inputArtifacts: [{{name: App}}]
        commands:
          - 'echo "deployed #{{Build.V}} $(cat out/app.txt)" >> {side}/deployed.log'
          - 'test "#{{variables.Break}}" != yes'
        conveyor: {{rollback: ["echo undone >> {side}/undone.log"]}}
"""


async def test_failed_stage_is_rolled_back_by_a_new_rollback_execution(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    declaration = pipeline(RELEASE.format(side=tmp_path))
    good, _ = await conveyor.start(declaration)
    assert (await finished(conveyor, good)).status == ExecutionStatus.SUCCEEDED
    bad, _ = await conveyor.start(declaration, variables={"Version": "2", "Break": "yes"})
    failed = await finished(conveyor, bad)
    assert failed.status == ExecutionStatus.FAILED
    assert failed.rollback_execution is not None
    rollback_ref = type(bad)(bad.pipeline_name, failed.rollback_execution)
    rolled = await finished(conveyor, rollback_ref)
    assert rolled.status == ExecutionStatus.SUCCEEDED, rolled.status_summary
    assert rolled.execution_type == "ROLLBACK" and rolled.rollback_of == good.execution_id
    assert rolled.trigger.trigger_type == TriggerType.AUTOMATED_ROLLBACK
    assert [s.stage_name for s in rolled.stages if s.status is not None] == ["Deploy"]  # only that stage ran
    assert lines(tmp_path / "deployed.log") == ["deployed 1 build 1", "deployed 2 build 2", "deployed 1 build 1"]
    # One rollback, never two: the ROLLBACK execution redeployed, so Ship's compensation did not run as well.
    assert lines(tmp_path / "undone.log") == []
    assert all(a.compensation is None for a in failed.stages[1].actions)


async def test_rollback_strategy_compensate_runs_the_saga_and_starts_no_rollback_execution(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    declaration = pipeline(
        RELEASE.format(side=tmp_path).replace(
            "name: release", "name: saga-release\nconveyor: {rollbackStrategy: COMPENSATE}"
        )
    )
    good, _ = await conveyor.start(declaration)
    assert (await finished(conveyor, good)).status == ExecutionStatus.SUCCEEDED
    bad, _ = await conveyor.start(declaration, variables={"Version": "2", "Break": "yes"})
    failed = await finished(conveyor, bad)
    assert failed.status == ExecutionStatus.FAILED and failed.rollback_execution is None
    assert lines(tmp_path / "undone.log") == ["undone"]
    assert lines(tmp_path / "deployed.log") == ["deployed 1 build 1", "deployed 2 build 2"]  # not redeployed


async def test_a_parallel_pipeline_rolls_back_by_compensation(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    declaration = pipeline(
        RELEASE.format(side=tmp_path).replace("name: release", "name: parallel-release\nexecutionMode: PARALLEL")
    )
    good, _ = await conveyor.start(declaration)
    assert (await finished(conveyor, good)).status == ExecutionStatus.SUCCEEDED
    bad, _ = await conveyor.start(declaration, variables={"Version": "2", "Break": "yes"})
    failed = await finished(conveyor, bad)
    assert failed.status == ExecutionStatus.FAILED and failed.rollback_execution is None
    assert lines(tmp_path / "undone.log") == ["undone"]
    assert "its compensations ran instead" not in (failed.status_summary or "")


async def test_manual_rollback_and_its_restrictions(conveyor: ConveyorClient, worker: Worker, tmp_path: Path) -> None:
    declaration = pipeline(RELEASE.format(side=tmp_path))
    name = declaration["name"]
    await conveyor.apply(declaration)
    _, registered = await conveyor.registered(name)
    first, _ = await conveyor.start(registered)
    assert (await finished(conveyor, first)).status == ExecutionStatus.SUCCEEDED
    second, _ = await conveyor.start(registered, variables={"Version": "2"})
    assert (await finished(conveyor, second)).status == ExecutionStatus.SUCCEEDED
    rollback = await conveyor.rollback(name, "Deploy", first.execution_id, by="ops")
    rolled = await finished(conveyor, rollback)
    assert rolled.status == ExecutionStatus.SUCCEEDED
    assert rolled.trigger.trigger_type == TriggerType.MANUAL_ROLLBACK and rolled.rollback_of == first.execution_id
    assert lines(tmp_path / "deployed.log")[-1] == "deployed 1 build 1"
    with pytest.raises(ConveyorError, match="is itself a rollback"):
        await conveyor.rollback(name, "Deploy", rollback.execution_id)
    with pytest.raises(ConveyorError, match="was not found"):
        await conveyor.rollback(name, "Deploy", "no-such-execution")
    changed = dict(registered, variables=[*registered["variables"], {"name": "Extra", "defaultValue": "x"}])
    await conveyor.apply(changed)
    with pytest.raises(ConveyorError, match="ran pipeline version 1; the pipeline is at version 2"):
        await conveyor.rollback(name, "Deploy", first.execution_id)


def test_rollback_restrictions_each_have_their_own_message() -> None:
    with_source = parse_pipeline(
        {
            "name": "p",
            "stages": [
                {
                    "name": "Source",
                    "actions": [{"name": "Git", "provider": "Git", "configuration": {"RepositoryUrl": "."}}],
                },
                {"name": "Deploy", "actions": [{"name": "Ship", "provider": "Noop"}]},
            ],
        },
        "p.yaml",
    )
    now = datetime.now(UTC)
    succeeded = ExecutionState(
        pipeline_name="p",
        execution_id="e1",
        stages=[
            StageState(stage_name="Source", status=StageStatus.SUCCEEDED, started_at=now),
            StageState(stage_name="Deploy", status=StageStatus.SUCCEEDED, started_at=now),
        ],
    )
    failed_in_deploy = succeeded.model_copy(
        update={"stages": [succeeded.stages[0], StageState(stage_name="Deploy", status=StageStatus.FAILED)]}
    )
    cases = [
        (with_source, "Source", succeeded, 1, "'Source' is the source stage, which cannot be rolled back"),
        (with_source, "Nope", succeeded, 1, "pipeline 'p' has no stage 'Nope'"),
        (with_source, "Deploy", failed_in_deploy, 1, "execution e1 did not succeed in stage 'Deploy'"),
        (with_source, "Deploy", succeeded.model_copy(update={"execution_type": "ROLLBACK"}), 1, "is itself a rollback"),
        (with_source, "Deploy", succeeded, 3, "ran pipeline version 1; the pipeline is at version 3"),
        (
            with_source.model_copy(update={"execution_mode": "PARALLEL"}),
            "Deploy",
            succeeded,
            1,
            "stage rollback is not available in PARALLEL pipelines",
        ),
    ]
    for pipe, stage, target, version, message in cases:
        with pytest.raises(RollbackRefused, match=message):
            check_rollback(pipe, stage, target, version)
    check_rollback(with_source, "Deploy", succeeded, 1)  # allowed


async def test_compensation_survives_a_killed_worker_and_each_step_completes_once(
    conveyor: ConveyorClient, settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "undo.log"
    declaration = pipeline(
        f"""
name: durable-undo
conveyor: {{heartbeatTimeoutSeconds: 2, compensateEarlierStages: true}}
stages:
  - name: One
    actions:
      - name: A
        provider: Commands
        commands: ["true"]
        conveyor: {{rollback: ["echo start-A >> {log}", "sleep 3", "echo undone-A >> {log}"]}}
  - name: Two
    actions:
      - name: B
        provider: Commands
        commands: ["exit 1"]
        conveyor: {{rollback: ["echo start-B >> {log}", "sleep 3", "echo undone-B >> {log}"]}}
"""
    )
    first = start_worker_process(settings, tmp_path / "worker1.log")
    try:
        ref, _ = await conveyor.start(declaration)

        async def compensating() -> None:
            while "start-B" not in lines(log):
                await asyncio.sleep(0.1)

        await asyncio.wait_for(compensating(), 60)
        await heartbeat_recorded(conveyor.temporal, ref.workflow_id)  # its process group, where the retry finds it
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    second = start_worker_process(settings, tmp_path / "worker2.log")
    try:
        state = await asyncio.wait_for(conveyor.wait(ref), 120)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.FAILED
    done = [line for line in lines(log) if line.startswith("undone")]
    assert done == ["undone-B", "undone-A"]  # each completed exactly once, in reverse order
    assert lines(log).count("start-B") == 2  # interrupted by the crash, then run again


async def test_compensation_keeps_running_when_the_execution_is_cancelled(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    log = tmp_path / "undo.log"
    declaration = pipeline(
        f"""
name: shielded
stages:
  - name: Deploy
    onFailure: {{result: ROLLBACK}}
    actions:
      - name: Ship
        provider: Commands
        commands: ["exit 1"]
        conveyor: {{rollback: ["echo start >> {log}", "sleep 2", "echo undone >> {log}"]}}
"""
    )
    ref, _ = await conveyor.start(declaration)

    async def compensating() -> None:
        while "start" not in lines(log):
            await asyncio.sleep(0.1)

    await asyncio.wait_for(compensating(), 30)
    await conveyor.temporal.get_workflow_handle(ref.workflow_id).cancel()
    state = await finished(conveyor, ref)
    assert lines(log) == ["start", "undone"]  # the cancel did not interrupt the compensation
    assert state.stages[0].actions[0].compensation is not None
    assert state.stages[0].actions[0].compensation.status == "Succeeded"
