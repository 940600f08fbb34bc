"""Long waits on the time-skipping test server: the 7-day approval timeout in seconds of wall time."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from temporalio.testing import WorkflowEnvironment

from conveyor import search_attributes
from conveyor.client import ConveyorClient
from conveyor.model import ActionStatus, ExecutionStatus
from conveyor.worker import build_worker
from tests.helpers import pipeline, waiting_token

APPROVAL_ONLY = """
name: timeout
stages:
  - name: Prod
    actions:
      - name: Gate
        provider: Manual
  - name: Deploy
    actions:
      - {name: Ship, provider: Commands, commands: ["echo never"]}
"""


async def test_approval_times_out_after_seven_days(
    time_skipping: tuple[WorkflowEnvironment, ConveyorClient],
) -> None:
    env, conveyor = time_skipping
    async with build_worker(env.client, conveyor.settings):
        ref, _ = await conveyor.start(pipeline(APPROVAL_ONLY))
        began = time.monotonic()
        await waiting_token(conveyor, ref)
        await env.sleep(timedelta(days=7, minutes=1))  # skipped, not waited
        # Failed, and open for `conveyor retry` (the default retry window): wait on the status, not the close.
        state = await asyncio.wait_for(conveyor.wait(ref), 30)
        wall = time.monotonic() - began
    assert wall < 30
    assert state.status == ExecutionStatus.FAILED
    prod = state.stage("Prod")
    assert prod is not None
    gate = prod.actions[0]
    assert gate.token is None
    assert gate.status == ActionStatus.FAILED
    assert gate.error is not None and gate.error.code == "ApprovalTimedOut"
    assert gate.error.message == "no decision within 7 days"
    assert gate.started_at is not None and gate.finished_at is not None
    assert gate.finished_at - gate.started_at >= timedelta(days=7)
    deploy = state.stage("Deploy")
    assert deploy is not None and deploy.status is None
    assert search_attributes.PIPELINE_STATUS.name == "PipelineStatus"
