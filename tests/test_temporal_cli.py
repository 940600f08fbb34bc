"""The README's `temporal workflow ...` lines, run verbatim against the real server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.connection import connect
from conveyor.devserver import EmbeddedServer, find_binary
from conveyor.model import ExecutionStatus
from conveyor.settings import DEFAULT_TASK_QUEUE, Settings
from conveyor.worker import build_worker

ROOT = Path(__file__).resolve().parent.parent


def readme_temporal_lines(marker: str = "temporal-cli") -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker} -->", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


async def run_line(line: str, address: str) -> str:
    """Run one README line as a person would (in a thread: the worker shares this event loop)."""
    argv = shlex.split(line)
    argv[0] = find_binary("temporal")
    done = await asyncio.to_thread(
        subprocess.run,
        argv,
        cwd=ROOT,
        env=os.environ | {"TEMPORAL_ADDRESS": address},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
    return done.stdout


async def test_readme_temporal_lines_start_query_and_approve(server: EmbeddedServer, data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, task_queue=DEFAULT_TASK_QUEUE)  # the README uses the default queue
    temporal = await connect(server.address, settings)
    start, query_execution, query_stage, approve = readme_temporal_lines()
    assert "--type PipelineExecution" in start and "--name approve" in approve
    async with build_worker(temporal, settings):
        await run_line(start, server.address)
        conveyor = ConveyorClient(temporal, settings)
        ref = ExecutionRef("approval-release", "release-1")

        async def token() -> str:
            while True:
                out = await run_line(query_stage, server.address) if await _stage_started(conveyor, ref) else ""
                found = re.search(r'"token":\s*"([0-9a-f-]{36})"', out)
                if found:
                    return found.group(1)
                await asyncio.sleep(0.3)

        approval_token = await asyncio.wait_for(token(), 30)
        execution_state = await run_line(query_execution, server.address)
        assert "approval-release" in execution_state and "InProgress" in execution_state
        await run_line(approve.replace("<token>", approval_token), server.address)
        final = await asyncio.wait_for(conveyor.wait(ref), 60)
        query_coordinator, disable, enable = readme_temporal_lines("temporal-cli-pipeline")
        coordinator = await run_line(query_coordinator, server.address)
        assert '"pipelineName": "approval-release"' in coordinator.replace('":"', '": "')
        assert all(f'"{stage}"' in coordinator for stage in ("Build", "Approval", "Production"))
        await run_line(disable, server.address)
        closed = await conveyor.pipeline_state("approval-release")
        production = next(s for s in closed.stages if s.stage_name == "Production")
        assert not production.transition.enabled and production.transition.reason == "change freeze"
        assert production.transition.changed_by == "ops"
        await run_line(enable, server.address)
        opened = await conveyor.pipeline_state("approval-release")
        assert next(s for s in opened.stages if s.stage_name == "Production").transition.enabled
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    assert final.started_by == "temporal-cli"
    gate = final.stage("Approval")
    assert gate is not None and gate.actions[0].approval is not None
    assert gate.actions[0].approval.by == "alice" and gate.actions[0].approval.summary == "ship it"


async def _stage_started(conveyor: ConveyorClient, ref: ExecutionRef) -> bool:
    state = await conveyor.state(ref)
    stage = state.stage("Approval")
    return stage is not None and stage.status is not None


def test_execution_json_matches_the_yaml_declaration() -> None:
    import yaml

    example = ROOT / "examples" / "approval-release"
    as_json = json.loads((example / "execution.json").read_text())["pipeline"]
    assert as_json == yaml.safe_load((example / "pipeline.yaml").read_text())
