"""Stage conditions: deployment windows (time-skipping server), variable checks, command rules, overrides."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ConveyorError
from conveyor.memo import state_from_memo
from conveyor.model import ConditionStatus, ExecutionState, ExecutionStatus, StageStatus
from conveyor.search_attributes import PIPELINE_STATUS
from conveyor.worker import build_worker
from tests.helpers import pipeline


def gated(condition_block: str, *, window: int = 0, extra_variables: str = "") -> dict:
    return pipeline(
        f"""
name: conditioned
conveyor: {{retryWindowMinutes: {window}}}
variables:
  - {{name: Env, defaultValue: staging}}
{extra_variables}
stages:
  - name: Build
    actions:
      - {{name: Make, provider: Commands, namespace: Build, commands: ["export TAG=v1.2.3"], outputVariables: [TAG]}}
  - name: Deploy
{condition_block}
    actions:
      - {{name: Ship, provider: Commands, commands: ["echo shipped"]}}
  - name: After
    actions:
      - {{name: Done, provider: Noop}}
"""
    )


def variable_check(result: str, variable: str, operator: str, value: str) -> str:
    return f"""    beforeEntry:
      conditions:
        - result: {result}
          rules:
            - name: Check
              ruleTypeId: {{provider: VariableCheck}}
              configuration: {{Variable: '{variable}', Operator: {operator}, Value: '{value}'}}"""


async def run(conveyor: ConveyorClient, declaration: dict, **kwargs) -> ExecutionState:  # noqa: ANN003
    ref, _ = await conveyor.start(declaration, **kwargs)
    return await asyncio.wait_for(conveyor.wait(ref), 60)


async def test_variable_check_skip_and_fail(conveyor: ConveyorClient, worker: Worker) -> None:
    skipped = await run(conveyor, gated(variable_check("SKIP", "#{variables.Env}", "EQ", "production")))
    assert skipped.status == ExecutionStatus.SUCCEEDED
    assert [s.status for s in skipped.stages] == [StageStatus.SUCCEEDED, StageStatus.SKIPPED, StageStatus.SUCCEEDED]
    condition = skipped.stages[1].conditions[0]
    assert condition.kind == "BEFORE_ENTRY" and condition.status == "Failed"
    assert condition.rules[0].summary == "'staging' EQ 'production': false"

    failed = await run(conveyor, gated(variable_check("FAIL", "#{Build.TAG}", "MATCHES", r"^v2\.")))
    assert failed.status == ExecutionStatus.FAILED
    assert failed.stages[1].status == StageStatus.FAILED and failed.stages[1].actions[0].status is None
    assert "beforeentry condition failed: rule 'Check' (VariableCheck)" in (failed.status_summary or "")

    passed = await run(conveyor, gated(variable_check("FAIL", "#{Build.TAG}", "MATCHES", r"^v1\.\d+")))
    assert passed.status == ExecutionStatus.SUCCEEDED
    assert passed.stages[1].conditions[0].status == "Succeeded"


async def test_commands_rule_and_on_success_condition(conveyor: ConveyorClient, worker: Worker, tmp_path: Path) -> None:
    block = f"""    beforeEntry:
      conditions:
        - result: FAIL
          rules:
            - {{name: Healthy, ruleTypeId: {{provider: Commands}}, commands: ["test -f {tmp_path}/healthy"]}}
    onSuccess:
      conditions:
        - result: FAIL
          rules:
            - {{name: Verified, ruleTypeId: {{provider: Commands}}, commands: ["test -f {tmp_path}/verified"]}}"""
    unhealthy = await run(conveyor, gated(block))
    assert unhealthy.status == ExecutionStatus.FAILED and unhealthy.stages[1].actions[0].status is None
    (tmp_path / "healthy").touch()
    unverified = await run(conveyor, gated(block))
    assert unverified.status == ExecutionStatus.FAILED
    deploy = unverified.stages[1]
    assert deploy.actions[0].status is not None and deploy.status == StageStatus.FAILED  # it ran, then failed its check
    assert [c.kind for c in deploy.conditions] == ["BEFORE_ENTRY", "ON_SUCCESS"]
    (tmp_path / "verified").touch()
    assert (await run(conveyor, gated(block))).status == ExecutionStatus.SUCCEEDED


async def test_override_of_a_failing_before_entry_condition(conveyor: ConveyorClient, worker: Worker) -> None:
    declaration = gated(variable_check("FAIL", "#{variables.Env}", "EQ", "production"), window=10)
    ref, _ = await conveyor.start(declaration)
    failed = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert failed.status == ExecutionStatus.FAILED
    with pytest.raises(ConveyorError, match="no ON_SUCCESS condition of stage 'Deploy'"):
        await conveyor.override_condition(ref, "Deploy", "ON_SUCCESS")
    await conveyor.override_condition(ref, "Deploy", "BEFORE_ENTRY", reason="emergency fix", by="ops")
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    deploy = final.stages[1]
    assert deploy.conditions[-1].status == "Overridden" and deploy.conditions[-1].overridden_by == "ops"


async def test_deployment_window_two_days_ahead_waits_then_enters(
    time_skipping: tuple[WorkflowEnvironment, ConveyorClient],
) -> None:
    env, conveyor = time_skipping
    paris = ZoneInfo("Europe/Paris")
    opening = (await env.get_current_time()).astimezone(paris) + timedelta(days=2)
    opening = opening.replace(minute=0, second=0, microsecond=0)
    cron = f"* * {opening.hour} {opening.day} {opening.month} ? {opening.year}"
    block = f"""    beforeEntry:
      conditions:
        - result: FAIL
          rules:
            - name: Window
              ruleTypeId: {{provider: DeploymentWindow}}
              configuration: {{Cron: "{cron}", TimeZone: Europe/Paris}}"""
    async with build_worker(env.client, conveyor.settings):
        ref, _ = await conveyor.start(gated(block))

        async def waiting() -> str:
            while True:
                state = await conveyor.state(ref)
                conditions = state.stages[1].conditions
                if conditions and (conditions[0].rules[0].summary or "").startswith("waiting for the window"):
                    return conditions[0].rules[0].summary or ""
                await asyncio.sleep(0.1)

        summary = await asyncio.wait_for(waiting(), 30)
        assert datetime.fromisoformat(summary.rsplit(" at ", 1)[1]) == opening
        await env.sleep(timedelta(days=2, hours=1))  # skipped, not waited
        final = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    deploy = final.stages[1]
    assert deploy.conditions[0].status == "Succeeded"
    assert deploy.started_at is not None and deploy.started_at >= opening  # entered once the window opened


async def test_a_rule_erroring_at_run_time_is_recorded_alike_everywhere(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    """A MATCHES pattern arriving through a variable can only be found invalid when the rule runs: the
    rule and its condition are Errored, and state, memo, PipelineStatus and `list` all say Failed and why
    (it once failed the workflow with only "workflow failed by Temporal", `list` showing InProgress)."""
    block = variable_check("FAIL", "#{Build.TAG}", "MATCHES", "#{variables.Pattern}")
    declaration = gated(block, extra_variables="  - {name: Pattern, defaultValue: '^v1'}")
    del declaration["conveyor"]  # the default retry window: the failed execution stays open, Failed
    ref, _ = await conveyor.start(declaration, variables={"Pattern": "^v(1"})
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    reason = "invalid regular expression '^v(1': missing ): ^v(1"
    assert state.status == ExecutionStatus.FAILED and reason in (state.status_summary or "")
    assert state.finished_at is not None
    deploy = state.stages[1]
    assert deploy.status == StageStatus.FAILED and deploy.actions[0].status is None  # never entered
    assert deploy.error is not None and deploy.error.code == "ConditionErrored" and reason in deploy.error.message
    condition = deploy.conditions[0]
    assert condition.status == ConditionStatus.ERRORED and condition.finished_at is not None
    assert condition.rules[0].status == ConditionStatus.ERRORED and condition.rules[0].summary == reason

    handle = conveyor.temporal.get_workflow_handle(ref.workflow_id)
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.RUNNING  # open for `conveyor retry` (7 days)
    assert description.typed_search_attributes.get(PIPELINE_STATUS) == "Failed"
    recorded = state_from_memo(await description.memo())
    assert recorded is not None and recorded.status == ExecutionStatus.FAILED
    assert recorded.status_summary == state.status_summary and recorded.finished_at == state.finished_at
    assert recorded.stages[1].conditions[0].status == ConditionStatus.ERRORED
    [row] = await conveyor.list(ref.pipeline_name)
    assert (row.status, row.note, row.finished_at) == ("Failed", None, state.finished_at)
    query = f"PipelineName = '{ref.pipeline_name}' AND ExecutionStatus = 'Running' AND PipelineStatus = 'Failed'"
    assert [wf.id async for wf in conveyor.temporal.list_workflows(query)] == [ref.workflow_id]

    await conveyor.stop(ref, reason="not retrying")  # closes a failed execution waiting in its window
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(handle.result(), 30)
    assert (await conveyor.state(ref)).status == ExecutionStatus.FAILED


async def test_an_erroring_rule_fails_its_stage_even_under_skip(conveyor: ConveyorClient, worker: Worker) -> None:
    """SKIP applies to a rule that answered no; one that could not answer (here a time zone, known only
    at run time) must not silently skip a production stage."""
    block = """    beforeEntry:
      conditions:
        - result: SKIP
          rules:
            - name: Window
              ruleTypeId: {provider: DeploymentWindow}
              configuration: {Cron: "* * * ? * *", TimeZone: "#{variables.Zone}"}"""
    state = await run(conveyor, gated(block, extra_variables="  - {name: Zone, defaultValue: Mars/Olympus}"))
    assert state.status == ExecutionStatus.FAILED, state.status_summary
    assert [s.status for s in state.stages] == [StageStatus.SUCCEEDED, StageStatus.FAILED, None]
    condition = state.stages[1].conditions[0]
    assert condition.result == "SKIP" and condition.status == ConditionStatus.ERRORED
    assert (condition.rules[0].summary or "").startswith("unknown time zone 'Mars/Olympus'")
    assert "beforeentry condition errored: rule 'Window' (DeploymentWindow)" in (state.status_summary or "")
