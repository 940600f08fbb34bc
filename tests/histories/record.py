"""Record representative histories for the replay tests: `python -m tests.histories.record [SCENARIO...]`;
with `--golden`, the scenarios' normalized final states instead (tests/histories/golden/, compared by
tests/test_golden_states.py). The scenarios themselves are in `scenarios.py`.

Until 0.1 is cut, a workflow change that breaks replay re-records the affected histories in the same
commit (`--coordinator-only` keeps a scenario's execution and stage histories as they are); from 0.1 on
such a change goes behind `workflow.patched` instead (README.md here).
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

import yaml
from temporalio.client import Client, WorkflowExecutionStatus

from conveyor.client import ConveyorClient
from conveyor.devserver import EmbeddedServer
from conveyor.settings import Settings
from conveyor.worker import build_worker
from tests.histories.scenarios import DECLARATIONS, final_state, normalized, run_scenario

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"

SCENARIOS = dict(DECLARATIONS) | {
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


async def record(name: str, conveyor: ConveyorClient, side: Path, *, coordinator_only: bool = False) -> None:
    run = await run_scenario(conveyor, name, side, token=name)
    state = await final_state(conveyor, run)
    if not coordinator_only:
        await save(conveyor, run.main.workflow_id, f"{name}.execution.json")
        for stage in state.stages:
            if any(action.status is not None for action in stage.actions):  # a stage workflow ran
                stage_id = run.main.stage_workflow_id(stage.stage_name)
                await save(conveyor, stage_id, f"{name}.stage-{stage.stage_name}.json")
    if run.coordinator:
        await save(conveyor, run.main.pipeline_name, f"{name}.coordinator.json")  # still running: replayed so far
    print(f"{name}: {state.status.value}")


async def record_golden(name: str, conveyor: ConveyorClient, side: Path) -> None:
    """The scenario's final `ExecutionState`, normalized, in golden/NAME.json (tests/test_golden_states.py)."""
    run = await run_scenario(conveyor, name, side)
    state = await final_state(conveyor, run)
    GOLDEN.mkdir(exist_ok=True)
    (GOLDEN / f"{name}.json").write_text(json.dumps(normalized(state, run, side), indent=2, sort_keys=True) + "\n")
    print(f"golden {name}: {state.status.value}")


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


async def main(names: list[str], *, coordinator_only: bool = False, golden: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), task_queue="record")
        server = EmbeddedServer(settings, headless=True)
        temporal = await server.start()
        try:
            conveyor = ConveyorClient(temporal, settings)
            async with build_worker(temporal, settings):
                for name in names or list(DECLARATIONS if golden else SCENARIOS):
                    side = Path(tmp) / "sides" / name
                    side.mkdir(parents=True)
                    if golden:
                        await record_golden(name, conveyor, side)
                    elif name in CLOSING:
                        await record_closing(name, SCENARIOS[name], temporal, settings)
                    else:
                        await record(name, conveyor, side, coordinator_only=coordinator_only)
        finally:
            server.stop()
            await asyncio.sleep(0.1)  # sdk-python#300


if __name__ == "__main__":
    flags = {"--coordinator-only", "--golden"}
    args = sys.argv[1:]
    names = [a for a in args if a not in flags]
    asyncio.run(main(names, coordinator_only="--coordinator-only" in args, golden="--golden" in args))
