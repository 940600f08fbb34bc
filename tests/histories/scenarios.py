"""Representative runs, driven the same way by the history recorder (`record.py`) and the golden-state test
(`tests/test_golden_states.py`): one declaration and one script per scenario.

A script starts what the scenario needs, drives it (approvals, transitions, stops, retries, rollbacks) and
returns a `Run`: every execution it started, in order, and the one whose histories and final state stand for
the scenario.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.model import ExecutionState, ExecutionStatus
from tests.helpers import waiting_for_stage, waiting_token

WAIT = 60  # seconds a scenario's execution may take


@dataclass
class Run:
    main: ExecutionRef  # whose execution and stage histories are recorded and whose final state is golden
    started: list[ExecutionRef] = field(default_factory=list)  # every execution, in the order started
    coordinator: bool = False  # record the pipeline's coordinator too (still running: replayed so far)


Script = Callable[[ConveyorClient, dict[str, Any], Path, str | None], Awaitable[Run]]

DECLARATIONS = {
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
conveyor: {compensateEarlierStages: true, retryWindowMinutes: 0}
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
    "superseded": """
name: replay-superseded
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Noop}
  - name: Prod
    actions:
      - {name: Gate, provider: Manual}
""",
    "manual-retry": """
name: replay-retry
stages:
  - name: Build
    actions:
      - {name: Steady, provider: Commands, commands: ["echo steady"]}
      - {name: Flaky, provider: Commands, commands: ["test -f {side}/fixed"]}
  - name: Deploy
    actions:
      - {name: Ship, provider: Noop}
""",
    "stopped": """
name: replay-stopped
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Noop}
  - name: Prod
    actions:
      - {name: Gate, provider: Manual}
      - {name: Deploy, provider: Commands, runOrder: 2, commands: ["echo never"]}
""",
    "condition": """
name: replay-condition
variables: [{name: Env, defaultValue: staging}]
stages:
  - name: Build
    actions:
      - {name: Tag, provider: Commands, namespace: Build, commands: ["export TAG=v1.4"], outputVariables: [TAG]}
  - name: Deploy
    beforeEntry:
      conditions:
        - result: FAIL
          rules:
            - name: Tagged
              ruleTypeId: {provider: VariableCheck}
              configuration: {Variable: '#{Build.TAG}', Operator: MATCHES, Value: '^v1\\.\\d+'}
    actions:
      - {name: Ship, provider: Commands, commands: ["echo shipped"]}
  - name: Production
    beforeEntry:
      conditions:
        - result: SKIP
          rules:
            - name: OnlyInProduction
              ruleTypeId: {provider: VariableCheck}
              configuration: {Variable: '#{variables.Env}', Operator: EQ, Value: production}
    actions:
      - {name: Ship, provider: Noop}
""",
    "manual-rollback": """
name: replay-manual-rollback
variables: [{name: Version, defaultValue: "1"}]
stages:
  - name: Build
    actions:
      - {name: Package, provider: Commands, namespace: Build, commands: ["export BUILT=#{variables.Version}"],
         outputVariables: [BUILT]}
  - name: Deploy
    actions:
      - {name: Ship, provider: Commands, commands: ["echo deploying #{Build.BUILT}"]}
""",
}


async def finished(conveyor: ConveyorClient, ref: ExecutionRef) -> ExecutionState:
    return await asyncio.wait_for(conveyor.wait(ref, interval=0.2), WAIT)


async def _straight(conveyor: ConveyorClient, pipeline: dict[str, Any], side: Path, token: str | None) -> Run:
    """Start, approve a waiting `Prod`/`Gate` if there is one, wait for the end."""
    ref, _ = await conveyor.start(pipeline, token=token)
    if any(a["name"] == "Gate" for s in pipeline["stages"] for a in s["actions"]):
        gate = await waiting_token(conveyor, ref)
        await conveyor.decide(ref, "Prod", "Gate", approve=True, summary="ok", token=gate, by="recorder")
    await finished(conveyor, ref)
    return Run(ref, [ref], coordinator=pipeline.get("executionMode") == "QUEUED")


async def _parallel_held(conveyor: ConveyorClient, pipeline: dict[str, Any], side: Path, token: str | None) -> Run:
    """PARALLEL, held at a disabled transition into Prod, then let in."""
    await conveyor.apply(pipeline, by="recorder")
    await conveyor.set_transition(pipeline["name"], "Prod", enabled=False, reason="freeze", by="recorder")
    ref, _ = await conveyor.start(pipeline, token=token)
    await waiting_for_stage(conveyor, ref, "Prod")
    await conveyor.set_transition(pipeline["name"], "Prod", enabled=True, by="recorder")
    await finished(conveyor, ref)
    return Run(ref, [ref], coordinator=True)


async def _superseded(conveyor: ConveyorClient, pipeline: dict[str, Any], side: Path, token: str | None) -> Run:
    """SUPERSEDED (the default): the first holds Prod at its approval; the second waits for Prod and is
    superseded by the third, which enters Prod once the first is approved."""
    tokens = [f"{token}-{n}" if token else None for n in ("first", "second", "third")]
    first, _ = await conveyor.start(pipeline, token=tokens[0])
    gate = await waiting_token(conveyor, first)
    second, _ = await conveyor.start(pipeline, token=tokens[1])
    await waiting_for_stage(conveyor, second, "Prod")
    third, _ = await conveyor.start(pipeline, token=tokens[2])
    await finished(conveyor, second)
    await waiting_for_stage(conveyor, third, "Prod")
    await conveyor.decide(first, "Prod", "Gate", approve=True, summary="ok", token=gate, by="recorder")
    await finished(conveyor, first)
    gate = await waiting_token(conveyor, third)
    await conveyor.decide(third, "Prod", "Gate", approve=True, summary="ok", token=gate, by="recorder")
    await finished(conveyor, third)
    return Run(second, [first, second, third], coordinator=True)


async def _manual_retry(conveyor: ConveyorClient, pipeline: dict[str, Any], side: Path, token: str | None) -> Run:
    """A stage fails; its retry window is open (the default); fixed, then retried (failed actions only)."""
    ref, _ = await conveyor.start(pipeline, token=token)
    await finished(conveyor, ref)
    (side / "fixed").touch()
    await conveyor.retry(ref, "Build", mode="FAILED_ACTIONS", by="recorder")
    await finished(conveyor, ref)
    return Run(ref, [ref])


async def _stopped(conveyor: ConveyorClient, pipeline: dict[str, Any], side: Path, token: str | None) -> Run:
    """Stopped while its approval waits."""
    ref, _ = await conveyor.start(pipeline, token=token)
    await waiting_token(conveyor, ref)
    await conveyor.stop(ref, reason="release cancelled", by="recorder")
    await finished(conveyor, ref)
    return Run(ref, [ref])


async def _manual_rollback(conveyor: ConveyorClient, pipeline: dict[str, Any], side: Path, token: str | None) -> Run:
    """Two executions succeed; Deploy is rolled back to the first: a ROLLBACK execution."""
    await conveyor.apply(pipeline, by="recorder")
    tokens = [f"{token}-{n}" if token else None for n in ("first", "second")]
    first, _ = await conveyor.start(pipeline, token=tokens[0])
    await finished(conveyor, first)
    second, _ = await conveyor.start(pipeline, variables={"Version": "2"}, token=tokens[1])
    await finished(conveyor, second)
    rollback = await conveyor.rollback(pipeline["name"], "Deploy", first.execution_id, by="recorder")
    await finished(conveyor, rollback)
    return Run(rollback, [first, second, rollback], coordinator=True)


SCRIPTS: dict[str, Script] = {
    "multi-stage-success": _straight,
    "approval-approved": _straight,
    "approval-policy": _straight,
    "queued-with-coordinator": _straight,
    "rolled-back": _straight,
    "action-failed": _straight,
    "parallel-held": _parallel_held,
    "superseded": _superseded,
    "manual-retry": _manual_retry,
    "stopped": _stopped,
    "condition": _straight,
    "manual-rollback": _manual_rollback,
}


def declaration(name: str, side: Path) -> dict[str, Any]:
    return yaml.safe_load(DECLARATIONS[name].replace("{side}", str(side)))


async def run_scenario(conveyor: ConveyorClient, name: str, side: Path, *, token: str | None = None) -> Run:
    run = await SCRIPTS[name](conveyor, declaration(name, side), side, token)
    await asyncio.sleep(1)  # let the workflows close
    return run


# --- golden final states ----------------------------------------------------------------------------

TIME_KEYS = re.compile(r".*(At|_at)$")
MASKED = {"token": "<token>", "digest": "<digest>", "location": "<location>", "size": "<size>"}
HEX = re.compile(r"\b[0-9a-f]{64}\b")


def normalized(state: ExecutionState, run: Run, side: Path) -> Any:
    """The final state as JSON, without what changes from run to run: execution ids (numbered in the order
    started), times, tokens, artifact digests/locations/sizes, the scenario's temporary directory."""
    text = state.model_dump_json(by_alias=True)
    for number, ref in enumerate(run.started, 1):
        text = text.replace(ref.execution_id, f"<execution-{number}>")
    text = text.replace(str(side), "<side>")
    text = HEX.sub("<hex>", text)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: MASKED[key]
                if key in MASKED and item is not None
                else "<time>"
                if TIME_KEYS.match(key) and isinstance(item, str)
                else walk(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    return walk(json.loads(text))


async def final_state(conveyor: ConveyorClient, run: Run) -> ExecutionState:
    state = await conveyor.state(run.main)
    assert state.status.is_terminal, f"{run.main}: {state.status}"
    assert state.status != ExecutionStatus.IN_PROGRESS
    return state
