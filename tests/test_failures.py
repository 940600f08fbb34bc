"""When things go wrong: declared action retries, stage onFailure results, stop, manual retry."""

from __future__ import annotations

import asyncio
from pathlib import Path

from temporalio.worker import Worker

from conveyor.client import ConveyorClient
from conveyor.model import ActionStatus, ExecutionStatus
from tests.helpers import pipeline


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
