"""The workflows record what `status` shows in words (a window's opening and time zone, an override's
who, when and why, a ROLLBACK execution's stage), and the table says it: real workflows, real server."""

from __future__ import annotations

import asyncio
import io
from datetime import timedelta
from zoneinfo import ZoneInfo

from rich.console import Console, RenderableType
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from conveyor.cli.render import execution_table
from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.model import ExecutionState, ExecutionStatus, RuleState
from conveyor.worker import build_worker
from tests.helpers import pipeline


def shown(renderable: RenderableType) -> str:
    out = io.StringIO()
    Console(file=out, width=2000, color_system=None).print(renderable)
    return out.getvalue()


async def finished(conveyor: ConveyorClient, ref: ExecutionRef) -> ExecutionState:
    return await asyncio.wait_for(conveyor.wait(ref), 60)


async def test_a_waiting_window_and_its_override_are_recorded_and_shown(
    time_skipping: tuple[WorkflowEnvironment, ConveyorClient],
) -> None:
    env, conveyor = time_skipping
    berlin = ZoneInfo("Europe/Berlin")
    opening = (await env.get_current_time()).astimezone(berlin) + timedelta(days=2)
    opening = opening.replace(minute=0, second=0, microsecond=0)
    cron = f"* * {opening.hour} {opening.day} {opening.month} ? {opening.year}"
    declaration = pipeline(f"""
name: windowed
stages:
  - name: Build
    actions: [{{name: Make, provider: Noop}}]
  - name: Prod
    beforeEntry:
      conditions:
        - rules:
            - name: Window
              ruleTypeId: {{provider: DeploymentWindow}}
              configuration: {{Cron: "{cron}", TimeZone: Europe/Berlin}}
    actions: [{{name: Ship, provider: Noop}}]
""")
    async with build_worker(env.client, conveyor.settings):
        ref, _ = await conveyor.start(declaration)

        async def waiting_rule() -> tuple[ExecutionState, RuleState]:
            while True:
                state = await conveyor.state(ref)
                conditions = state.stages[1].conditions
                if conditions and conditions[0].rules[0].opens_at is not None:
                    return state, conditions[0].rules[0]
                await asyncio.sleep(0.1)

        state, rule = await asyncio.wait_for(waiting_rule(), 30)
        assert rule.opens_at == opening and rule.time_zone == "Europe/Berlin"
        assert f"waiting for the window to open at {opening:%Y-%m-%d %H:%M:%S}, Europe/Berlin" in shown(
            execution_table(state)
        )
        await conveyor.override_condition(ref, "Prod", "BEFORE_ENTRY", reason="hotfix 12", by="ops")
        final = await finished(conveyor, ref)
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    condition = final.stages[1].conditions[-1]
    assert condition.overridden_by == "ops" and condition.override_reason == "hotfix 12"
    assert condition.overridden_at is not None
    at = condition.overridden_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"beforeEntry condition overridden by ops at {at}: hotfix 12" in shown(execution_table(final))


async def test_a_rollback_execution_records_the_stage_it_rolls_back(conveyor: ConveyorClient, worker: Worker) -> None:
    declaration = pipeline("""
name: rolled
variables: [{name: Break, defaultValue: "no"}]
stages:
  - name: Build
    actions: [{name: Make, provider: Noop}]
  - name: Deploy
    onFailure: {result: ROLLBACK}
    actions:
      - {name: Ship, provider: Commands, commands: ['test "#{variables.Break}" != yes']}
""")
    good, _ = await conveyor.start(declaration)
    assert (await finished(conveyor, good)).status == ExecutionStatus.SUCCEEDED
    bad, _ = await conveyor.start(declaration, variables={"Break": "yes"})
    failed = await finished(conveyor, bad)
    assert failed.rollback_execution is not None
    rolled = await finished(conveyor, ExecutionRef(bad.pipeline_name, failed.rollback_execution))
    assert rolled.rollback_stage == "Deploy" and rolled.rollback_of == good.execution_id
    assert f"rolls back Deploy to execution {good.execution_id}" in shown(execution_table(rolled))
    started = f"rollback: execution {failed.rollback_execution} was started to roll back stage Deploy"
    assert started in shown(execution_table(failed))
