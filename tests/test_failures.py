"""When things go wrong: declared action retries, stage onFailure results, stop, manual retry."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from temporalio import activity, workflow
from temporalio.activity import _Definition as _ActivityDefinition
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker
from temporalio.workflow import _Definition as _WorkflowDefinition

from conveyor.client import ConveyorClient, ConveyorError
from conveyor.model import (
    ActionStatus,
    CoordinationRequest,
    ExecutionState,
    ExecutionStatus,
    StageEntryDecision,
    StageStatus,
)
from conveyor.search_attributes import PIPELINE_STATUS
from conveyor.settings import Settings
from conveyor.worker import WORKFLOWS, activities_for, worker_options, workflow_runner
from tests.helpers import pipeline, waiting_for_stage, waiting_token
from workflows.execution import PipelineExecutionWorkflow


async def test_transient_failure_is_retried_to_success_with_each_attempt_visible(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    declaration = pipeline(
        f"""
name: flaky
stages:
  - name: Test
    actions:
      - name: Flaky
        provider: Commands
        conveyor:
          retry: {{maximumAttempts: 3, initialIntervalSeconds: 0.2}}
        commands:
          - echo x >> {counter}
          - test "$(wc -l < {counter})" -ge 3
"""
    )
    ref, _ = await conveyor.start(declaration)
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    flaky = state.stages[0].actions[0]
    assert flaky.attempt == 3
    assert [a.attempt for a in flaky.attempts] == [1, 2]
    assert all(a.error.code == "CommandFailed" for a in flaky.attempts)
    log = (conveyor.settings.logs_dir / ref.pipeline_name / ref.execution_id / "Test" / "Flaky.log").read_text()
    assert [line.split()[2] for line in log.splitlines() if "] attempt" in line] == ["1", "2", "3"]


async def test_configuration_error_fails_at_once_despite_a_retry_policy(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    declaration = pipeline(
        """
name: misconfigured
stages:
  - name: Build
    actions:
      - name: Exports
        provider: Commands
        outputVariables: [NEVER_SET]
        conveyor:
          retry: {maximumAttempts: 5, initialIntervalSeconds: 5}
        commands: ["true"]
"""
    )
    ref, _ = await conveyor.start(declaration)
    state = await asyncio.wait_for(conveyor.wait(ref), 30)  # 5 attempts at 5 s would take far longer
    action = state.stages[0].actions[0]
    assert state.status == ExecutionStatus.FAILED
    assert action.status == ActionStatus.FAILED and action.attempt == 1 and action.attempts == []
    assert action.error is not None and action.error.code == "ConfigurationError"
    assert "output variable 'NEVER_SET' was not exported" in action.error.message


FLAKY_STAGE = """
name: {name}
conveyor: {{retryWindowMinutes: {window}}}
stages:
  - name: Build
    onFailure: {on_failure}
    actions:
      - {{name: Steady, provider: Commands, commands: ["echo ran >> {side}/steady.log"]}}
      - name: Flaky
        provider: Commands
        commands:
          - echo ran >> {side}/flaky.log
          - test -f {side}/fixed || {{ touch {side}/fixed-next; test -f {side}/auto-fix && touch {side}/fixed; false; }}
  - name: After
    actions:
      - {{name: Done, provider: Commands, commands: ["echo ran >> {side}/after.log"]}}
"""


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def flaky(tmp_path: Path, on_failure: str, window: int = 0, auto_fix: bool = True) -> dict:
    if auto_fix:
        (tmp_path / "auto-fix").touch()  # the first failure fixes the cause: a retry then passes
    return pipeline(FLAKY_STAGE.format(name="flaky-stage", window=window, on_failure=on_failure, side=tmp_path))


async def test_on_failure_retry_failed_actions_reruns_only_what_failed(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(flaky(tmp_path, "{result: RETRY, retryConfiguration: {retryMode: FAILED_ACTIONS}}"))
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    build = state.stages[0]
    assert build.attempt == 2 and [a.attempt for a in build.previous_attempts] == [1]
    assert build.previous_attempts[0].status == StageStatus.FAILED
    assert build.previous_attempts[0].retry_mode == "FAILED_ACTIONS"
    assert lines(tmp_path / "steady.log") == ["ran"]  # succeeded before: kept, not re-run
    assert len(lines(tmp_path / "flaky.log")) == 2
    assert lines(tmp_path / "after.log") == ["ran"]


async def test_on_failure_retry_all_actions_reruns_the_whole_stage(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(flaky(tmp_path, "{result: RETRY, retryConfiguration: {retryMode: ALL_ACTIONS}}"))
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert len(lines(tmp_path / "steady.log")) == 2 and len(lines(tmp_path / "flaky.log")) == 2


async def test_on_failure_skip_marks_the_stage_skipped_and_goes_on(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(flaky(tmp_path, "{result: SKIP}", auto_fix=False))
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED
    assert state.stages[0].status == StageStatus.SKIPPED
    assert lines(tmp_path / "after.log") == ["ran"]


async def test_on_failure_fail_ends_the_execution(conveyor: ConveyorClient, worker: Worker, tmp_path: Path) -> None:
    ref, _ = await conveyor.start(flaky(tmp_path, "{result: FAIL}"))
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED and state.stages[1].status is None


async def test_manual_retry_resumes_the_same_execution_within_its_window(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(flaky(tmp_path, "{result: FAIL}", window=10, auto_fix=False))
    failed = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert failed.status == ExecutionStatus.FAILED
    with pytest.raises(ConveyorError, match="only the failed stage 'Build' can be retried"):
        await conveyor.retry(ref, "After")
    with pytest.raises(ConveyorError, match="retry mode 'SOME'"):
        await conveyor.retry(ref, "Build", mode="SOME")
    (tmp_path / "fixed").touch()
    resumed = await conveyor.retry(ref, "Build", mode="FAILED_ACTIONS", by="alice")
    assert resumed.status == ExecutionStatus.IN_PROGRESS
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    build = final.stages[0]
    assert build.attempt == 2 and build.previous_attempts[0].retried_by == "alice"
    assert lines(tmp_path / "steady.log") == ["ran"] and len(lines(tmp_path / "flaky.log")) == 2
    with pytest.raises(ConveyorError, match="only a failed execution can be retried|has already ended"):
        await conveyor.retry(ref, "Build")


async def test_manual_retry_is_refused_once_a_newer_execution_entered_the_stage(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    declaration = flaky(tmp_path, "{result: FAIL}", window=10, auto_fix=False)
    declaration["executionMode"] = "PARALLEL"
    older, _ = await conveyor.start(declaration)
    assert (await asyncio.wait_for(conveyor.wait(older), 60)).status == ExecutionStatus.FAILED
    newer, _ = await conveyor.start(declaration)
    assert (await asyncio.wait_for(conveyor.wait(newer), 60)).status == ExecutionStatus.FAILED
    with pytest.raises(ConveyorError, match=f"a newer execution \\({newer.execution_id}\\) has entered stage 'Build'"):
        await conveyor.retry(older, "Build")
    await conveyor.stop(older, reason="done with it")
    await conveyor.stop(newer, reason="done with it")


APPROVE_THEN_CHECK = """
name: approve-then-check
conveyor: {{retryWindowMinutes: 10}}
stages:
  - name: Prod
    actions:
      - {{name: Gate, provider: Manual}}
      - {{name: Check, provider: Commands, runOrder: 2, commands: ["test -f {side}/fixed"]}}
"""


async def test_stale_approval_token_from_an_earlier_attempt_is_refused(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(pipeline(APPROVE_THEN_CHECK.format(side=tmp_path)))
    first_token = await waiting_token(conveyor, ref, "Prod", "Gate")
    await conveyor.decide(ref, "Prod", "Gate", approve=True, token=first_token, by="alice")
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.FAILED
    (tmp_path / "fixed").touch()
    await conveyor.retry(ref, "Prod", mode="ALL_ACTIONS")
    second_token = await waiting_token(conveyor, ref, "Prod", "Gate")
    assert second_token != first_token
    with pytest.raises(ConveyorError, match="token does not match approval 'Gate'"):
        await conveyor.decide(ref, "Prod", "Gate", approve=True, token=first_token, by="mallory")
    await conveyor.decide(ref, "Prod", "Gate", approve=True, token=second_token, by="alice")
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.SUCCEEDED


LONG_ACTION = """
name: long
stages:
  - name: Work
    actions:
      - name: Long
        provider: Commands
        commands: ["echo $$ > {side}/pid", "sleep {seconds}", "echo done >> {side}/done"]
  - name: Next
    actions:
      - {{name: Never, provider: Commands, commands: ["echo ran >> {side}/next"]}}
"""


async def running_pid(path: Path) -> int:
    async def wait() -> int:
        while not (path.exists() and path.read_text().strip()):
            await asyncio.sleep(0.1)
        return int(path.read_text())

    return await asyncio.wait_for(wait(), 30)


async def test_stop_and_wait_lets_the_running_action_finish_and_starts_nothing_new(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(pipeline(LONG_ACTION.format(side=tmp_path, seconds=3)))
    await running_pid(tmp_path / "pid")
    stopping = await conveyor.stop(ref, reason="release cancelled", by="ops")
    assert stopping.status == ExecutionStatus.STOPPING
    with pytest.raises(ConveyorError, match="a stop is already in progress"):
        await conveyor.stop(ref, reason="again")
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.STOPPED
    assert state.status_summary == "stopped by ops in stage 'Work': release cancelled"
    assert state.stages[0].actions[0].status == ActionStatus.SUCCEEDED  # it finished
    assert lines(tmp_path / "done") == ["done"] and not (tmp_path / "next").exists()
    with pytest.raises(ConveyorError, match="has already ended: Stopped"):
        await conveyor.stop(ref, abandon=True)


async def test_abandon_and_escalation_kill_the_running_action(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(pipeline(LONG_ACTION.format(side=tmp_path, seconds=300)))
    pid = await running_pid(tmp_path / "pid")
    await conveyor.stop(ref, reason="wait first")
    await conveyor.stop(ref, reason="now", abandon=True, by="ops")  # escalation
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.STOPPED
    long = state.stages[0].actions[0]
    assert long.status == ActionStatus.ABANDONED
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not (tmp_path / "done").exists() and not (tmp_path / "next").exists()


async def test_temporal_cancel_abandons_running_actions(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(pipeline(LONG_ACTION.format(side=tmp_path, seconds=300)))
    pid = await running_pid(tmp_path / "pid")
    await conveyor.temporal.get_workflow_handle(ref.workflow_id).cancel()
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.STOPPED
    assert "cancelled through Temporal" in (state.status_summary or "")

    async def gone() -> None:
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            await asyncio.sleep(0.1)

    await asyncio.wait_for(gone(), 15)


async def test_stop_cancels_a_pending_approval_and_releases_the_stage_lock(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    declaration = pipeline(
        """
name: stop-lock
executionMode: QUEUED
stages:
  - name: Gate
    actions:
      - {name: Approve, provider: Manual}
"""
    )
    first, _ = await conveyor.start(declaration)
    await waiting_token(conveyor, first, "Gate", "Approve")
    second, _ = await conveyor.start(declaration)

    await waiting_for_stage(conveyor, second, "Gate")
    await conveyor.stop(first, reason="not this one")
    stopped = await asyncio.wait_for(conveyor.wait(first), 30)
    assert stopped.status == ExecutionStatus.STOPPED
    gate = stopped.stages[0].actions[0]
    assert gate.status == ActionStatus.ABANDONED and gate.error is not None
    assert gate.error.code == "ApprovalCancelled"
    await waiting_token(conveyor, second, "Gate", "Approve")  # the lock went to the next in line
    await conveyor.stop(second, reason="cleanup", abandon=True)


async def test_failure_releases_the_stage_lock_to_the_waiting_execution(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    declaration = pipeline(
        """
name: fail-lock
executionMode: QUEUED
stages:
  - name: Gate
    actions:
      - {name: Approve, provider: Manual}
"""
    )
    first, _ = await conveyor.start(declaration)
    token = await waiting_token(conveyor, first, "Gate", "Approve")
    second, _ = await conveyor.start(declaration)

    await waiting_for_stage(conveyor, second, "Gate")
    await conveyor.decide(first, "Gate", "Approve", approve=False, token=token, summary="no")
    assert (await asyncio.wait_for(conveyor.wait(first), 30)).status == ExecutionStatus.FAILED
    await waiting_token(conveyor, second, "Gate", "Approve")  # the failed one let go of the stage
    await conveyor.stop(second, reason="cleanup", abandon=True)


# --- manual retry by default (issue 12) ---------------------------------------------------------------------

UNPREPARED = """
name: unprepared
{conveyor}
stages:
  - name: Deploy
    actions:
      - {{name: Ship, provider: Commands, commands: ["test -f {side}/ready"]}}
"""


async def test_manual_retry_is_available_by_default(conveyor: ConveyorClient, worker: Worker, tmp_path: Path) -> None:
    ref, _ = await conveyor.start(pipeline(UNPREPARED.format(conveyor="", side=tmp_path)))
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.FAILED
    (tmp_path / "ready").touch()
    await conveyor.retry(ref, "Deploy", by="alice")
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    assert final.stages[0].previous_attempts[0].retried_by == "alice"


async def test_retry_refused_without_a_window_says_how_to_allow_it(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(
        pipeline(UNPREPARED.format(conveyor="conveyor: {retryWindowMinutes: 0}", side=tmp_path))
    )
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.FAILED
    with pytest.raises(WorkflowFailureError):
        await asyncio.wait_for(conveyor.temporal.get_workflow_handle(ref.workflow_id).result(), 30)
    with pytest.raises(ConveyorError) as refused:
        await conveyor.retry(ref, "Deploy")
    message = str(refused.value)
    assert message.startswith(f"execution {ref} has already ended: Failed, and its retry window is over")
    assert "conveyor.retryWindowMinutes" in message and "`conveyor: {retryWindowMinutes: 10080}`" in message


# --- what Temporal knows that the execution could not record (issue 12) --------------------------------------


@activity.defn(name="coordinate")
async def coordinator_unreachable_at_deploy(request: CoordinationRequest) -> StageEntryDecision | None:
    """Stands in for the `coordinate` activity: lets the execution into Build, then fails for good."""
    if request.entry is None:
        return None
    if request.entry.stage_name == "Deploy":
        raise ApplicationError(
            "coordinator unreachable: connection refused", type="CoordinationError", non_retryable=True
        )
    return StageEntryDecision(stage_name=request.entry.stage_name, decision="Enter")


def worker_with(
    client: Client,
    settings: Settings,
    *,
    activities: list[Callable[..., Any]] = [],  # noqa: B006 - read only
    workflows: list[type] = [],  # noqa: B006 - read only
) -> Worker:
    """Conveyor's worker with some activities or workflows replaced by those of the same name."""
    replaced = {_ActivityDefinition.must_from_callable(a).name for a in activities}
    kept = [a for a in activities_for(settings) if _ActivityDefinition.must_from_callable(a).name not in replaced]
    types = {_WorkflowDefinition.must_from_class(w).name for w in workflows}
    registered = [*workflows, *(w for w in WORKFLOWS if _WorkflowDefinition.must_from_class(w).name not in types)]
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=registered,
        activities=[*kept, *activities],
        **(worker_options() | {"workflow_runner": workflow_runner(registered)}),
    )


TWO_STAGES = """
name: {name}
stages:
  - name: Build
    actions:
      - {{name: Compile, provider: Commands, commands: ["true"]}}
  - name: Deploy
    actions:
      - {{name: Ship, provider: Commands, commands: ["true"]}}
"""


async def test_a_failure_the_execution_receives_is_recorded_before_it_fails(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings
) -> None:
    async with worker_with(temporal_client, settings, activities=[coordinator_unreachable_at_deploy]):
        ref, _ = await conveyor.start(pipeline(TWO_STAGES.format(name="unreachable")))
        handle = conveyor.temporal.get_workflow_handle(ref.workflow_id)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 30)
    reason = "coordinator unreachable: connection refused"
    state = await conveyor.state(ref)
    assert state.status == ExecutionStatus.FAILED and state.status_summary == f"execution failed: {reason}"
    description = await handle.describe()
    assert state.finished_at is not None and state.finished_at <= description.close_time
    assert description.typed_search_attributes.get(PIPELINE_STATUS) == "Failed"
    [row] = await conveyor.list(ref.pipeline_name)
    assert (row.status, row.temporal_status, row.finished_at) == ("Failed", "FAILED", state.finished_at)
    assert [s.status for s in state.stages] == [StageStatus.SUCCEEDED, None]  # Deploy never entered


LONG_ONE = """
name: {name}
stages:
  - name: Work
    actions:
      - {{name: Long, provider: Commands, commands: ["echo $$ > {side}/pid", "sleep 60"]}}
"""


async def test_an_execution_terminated_through_temporal_shows_as_such(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    ref, _ = await conveyor.start(pipeline(LONG_ONE.format(name="terminated", side=tmp_path)))
    pid = await running_pid(tmp_path / "pid")
    handle = conveyor.temporal.get_workflow_handle(ref.workflow_id)
    await handle.terminate(reason="runaway release")
    try:
        closed_at = (await handle.describe()).close_time
        state = await conveyor.state(ref)
        assert state.status == ExecutionStatus.STOPPED
        assert state.status_summary is not None and state.status_summary.startswith("terminated through Temporal")
        assert "runaway release" in state.status_summary
        assert state.finished_at == closed_at  # its duration stops when Temporal closed it
        work = state.stages[0]
        assert (work.status, work.finished_at) == (StageStatus.STOPPED, closed_at)
        [row] = await conveyor.list(ref.pipeline_name)
        assert (row.status, row.temporal_status) == ("Stopped", "TERMINATED")
        assert row.note is not None and row.note.startswith("terminated through Temporal")
        # The recorded PipelineStatus cannot change after a terminate: README's queries exclude closed executions.
        in_progress = f"PipelineName = '{ref.pipeline_name}' AND PipelineStatus = 'InProgress'"
        assert [wf.id async for wf in conveyor.temporal.list_workflows(in_progress)] == [ref.workflow_id]
        running = f"{in_progress} AND ExecutionStatus = 'Running'"
        assert [wf.id async for wf in conveyor.temporal.list_workflows(running)] == []
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


@workflow.defn(name="PipelineExecution")
class ExecutionWithABug(PipelineExecutionWorkflow):
    """The execution workflow with a bug reached after its first stage: its workflow task fails, every time."""

    @workflow.run
    async def run(self, raw_input: Any) -> ExecutionState:
        return await super().run(raw_input)

    async def _enter_stage(self, stage: Any) -> StageEntryDecision | None:
        if stage.name == "Deploy":
            raise RuntimeError("a bug in the execution workflow")
        return await super()._enter_stage(stage)


async def test_a_workflow_task_failing_shows_stuck_and_is_not_turned_into_a_failure(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings
) -> None:
    async with worker_with(temporal_client, settings, workflows=[ExecutionWithABug]):
        ref, _ = await conveyor.start(pipeline(TWO_STAGES.format(name="stuck")))

        async def stuck() -> ExecutionState:
            while not (state := await conveyor.state(ref)).stuck:
                await asyncio.sleep(0.3)
            return state

        state = await asyncio.wait_for(stuck(), 30)
    handle = conveyor.temporal.get_workflow_handle(ref.workflow_id)
    try:
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING  # Temporal retries the task; nothing failed
        assert state.status == ExecutionStatus.IN_PROGRESS  # what it recorded before the failing task
        assert state.stuck is not None
        assert re.fullmatch(
            r"stuck: workflow task failing since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: "
            r"a bug in the execution workflow \(attempt \d+\)",
            state.stuck,
        ), state.stuck
        [row] = await conveyor.list(ref.pipeline_name)
        assert row.status == "InProgress" and row.note is not None
        assert (
            row.note.startswith("stuck: workflow task failing since") and "a bug in the execution workflow" in row.note
        )
    finally:
        await handle.terminate(reason="test over")
