"""Record representative histories for the replay tests: `python -m tests.histories.record [SCENARIO...]`.

Run once per new scenario. Until 0.1 is cut, a workflow change that breaks replay re-records only the
affected histories in the same commit (`--coordinator-only` keeps a scenario's execution and stage
histories as they are); after 0.1 such a change goes behind `workflow.patched` instead.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import yaml
from temporalio.client import Client, WorkflowExecutionStatus

from conveyor.client import ConveyorClient
from conveyor.devserver import EmbeddedServer
from conveyor.settings import Settings
from conveyor.worker import build_worker
from tests.helpers import waiting_token

HERE = Path(__file__).parent

SCENARIOS = {
    "multi-stage-success": """
name: replay-multi
variables: [{name: Greeting, defaultValue: hi}]
stages:
  - name: Build
    actions:
      - name: Compile
        provider: Commands
        namespace: Build
        commands: ['mkdir -p dist && echo "#{variables.Greeting}" > dist/a.txt', "export VERSION=3"]
        outputVariables: [VERSION]
        outputArtifacts: [{name: App, files: ["dist/**/*"]}]
      - {name: Lint, provider: Commands, commands: ["true"]}
  - name: Test
    actions:
      - name: Unit
        provider: Commands
        inputArtifacts: [{name: App}]
        environmentVariables: [{name: V, value: "#{Build.VERSION}"}]
        commands: ["test -f dist/a.txt", 'test "$V" = 3']
      - {name: Later, provider: Noop, runOrder: 2, configuration: {}}
""",
    "approval-approved": """
name: replay-approval
stages:
  - name: Build
    actions:
      - {name: Package, provider: Commands, commands: ["true"]}
  - name: Prod
    actions:
      - {name: Gate, provider: Manual, configuration: {CustomData: "ship?"}}
      - {name: Deploy, provider: Commands, runOrder: 2, commands: ["echo deployed"]}
""",
    "approval-policy": """
name: replay-approval-policy
stages:
  - name: Build
    actions:
      - {name: Package, provider: Commands, commands: ["true"]}
  - name: Prod
    actions:
      - name: Gate
        provider: Manual
        conveyor: {approval: {approvers: [recorder, bob], allowStarter: true}}
""",
    "queued-with-coordinator": """
name: replay-queued
executionMode: QUEUED
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Noop, namespace: B, configuration: {Flavour: plain}}
  - name: Prod
    actions:
      - {name: Gate, provider: Manual}
""",
    "rolled-back": """
name: replay-rollback
conveyor: {compensateEarlierStages: true}
stages:
  - name: Build
    actions:
      - {name: Package, provider: Commands, commands: ["true"], conveyor: {rollback: ["echo undo package"]}}
  - name: Deploy
    onFailure: {result: ROLLBACK}
    actions:
      - {name: Ship, provider: Commands, commands: ["exit 3"], conveyor: {rollback: ["echo undo ship"]}}
""",
    "action-failed": """
name: replay-failed
stages:
  - name: Build
    actions:
      - {name: Breaks, provider: Commands, commands: ["exit 4"]}
      - {name: Fine, provider: Commands, commands: ["true"]}
  - name: Deploy
    actions:
      - {name: Ship, provider: Commands, commands: ["true"]}
""",
    "parallel-held": """
name: replay-parallel
executionMode: PARALLEL
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Noop}
  - name: Prod
    actions:
      - {name: Ship, provider: Noop}
""",
    "coordinator-closed": """
name: replay-closed
stages:
  - name: Deploy
    actions:
      - {name: Ship, provider: Noop}
""",
}
CLOSING = {"coordinator-closed"}  # recorded by `record_closing`
IDLE_MINUTES = 0.02  # their coordinator closes 1.2 s after it has nothing left to keep


async def record(name: str, declaration: str, conveyor: ConveyorClient, *, coordinator_only: bool = False) -> None:
    pipeline = yaml.safe_load(declaration)
    held = pipeline.get("executionMode") == "PARALLEL"  # held at a disabled transition, then let in
    if held:
        await conveyor.apply(pipeline, by="recorder")
        await conveyor.set_transition(pipeline["name"], "Prod", enabled=False, reason="freeze", by="recorder")
    ref, _ = await conveyor.start(pipeline, token=name)
    if held:
        while (await conveyor.state(ref)).waiting_for_stage != "Prod":
            await asyncio.sleep(0.2)
        await conveyor.set_transition(pipeline["name"], "Prod", enabled=True, by="recorder")
    if "Gate" in declaration:
        token = await waiting_token(conveyor, ref)
        await conveyor.decide(ref, "Prod", "Gate", approve=True, summary="ok", token=token, by="recorder")
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    await asyncio.sleep(1)  # let the workflows close
    if not coordinator_only:
        await save(conveyor, ref.workflow_id, f"{name}.execution.json")
        for stage in state.stages:
            if stage.status is not None:
                await save(conveyor, ref.stage_workflow_id(stage.stage_name), f"{name}.stage-{stage.stage_name}.json")
    if "executionMode: QUEUED" in declaration or held:
        await save(conveyor, ref.pipeline_name, f"{name}.coordinator.json")  # still running: replayed so far
    print(f"{name}: {state.status.value}")


async def record_closing(name: str, declaration: str, temporal: Client, settings: Settings) -> None:
    """Only the coordinator's histories: a run that closes when idle, and the next run, which starts
    from what the first saved and closes in turn."""
    quick = settings.model_copy(
        update={"task_queue": f"{settings.task_queue}-idle", "coordinator_idle_minutes": IDLE_MINUTES}
    )
    conveyor = ConveyorClient(temporal, quick)
    pipeline = yaml.safe_load(declaration)
    coordinator = temporal.get_workflow_handle(pipeline["name"])
    async with build_worker(temporal, quick):
        for run in ("first", "restarted"):
            ref, _ = await conveyor.start(pipeline, token=f"{name}-{run}")
            state = await asyncio.wait_for(conveyor.wait(ref), 60)
            while (await coordinator.describe()).status == WorkflowExecutionStatus.RUNNING:
                await asyncio.sleep(0.2)
            await save(conveyor, coordinator.id, f"{name}.coordinator-{run}.json")
            print(f"{name} ({run}): {state.status.value}, coordinator closed")


async def save(conveyor: ConveyorClient, workflow_id: str, filename: str) -> None:
    history = await conveyor.temporal.get_workflow_handle(workflow_id).fetch_history()
    (HERE / filename).write_text(history.to_json())


async def main(names: list[str], *, coordinator_only: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), task_queue="record")
        server = EmbeddedServer(settings, headless=True)
        temporal = await server.start()
        try:
            conveyor = ConveyorClient(temporal, settings)
            async with build_worker(temporal, settings):
                for name in names or list(SCENARIOS):
                    if name in CLOSING:
                        await record_closing(name, SCENARIOS[name], temporal, settings)
                    else:
                        await record(name, SCENARIOS[name], conveyor, coordinator_only=coordinator_only)
        finally:
            server.stop()
            await asyncio.sleep(0.1)  # sdk-python#300


if __name__ == "__main__":
    flag = "--coordinator-only"
    asyncio.run(main([a for a in sys.argv[1:] if a != flag], coordinator_only=flag in sys.argv[1:]))
