"""The same approval policy through the two other channels, as people use them: `conveyor approve` and
`temporal workflow update execute`, each a real subprocess against the real server and worker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path

from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.devserver import EmbeddedServer, find_binary
from conveyor.model import ExecutionStatus
from conveyor.settings import Settings
from tests.helpers import pipeline, waiting_token
from tests.test_approval_policy import POLICY
from tests.test_cli import cli_env
from tests.test_cli import conveyor as conveyor_cli

POLICY_OF_TWO = "{approvers: [alice, bob, dave], quorum: 2, sources: [cli, temporal]}"


async def test_policy_through_conveyor_approve(
    conveyor: ConveyorClient, worker: Worker, server: EmbeddedServer, settings: Settings, data_dir: Path
) -> None:
    env = cli_env(data_dir, server.address, settings.task_queue)
    ref, _ = await conveyor.start(pipeline(POLICY.format(policy=POLICY_OF_TWO)), started_by="dave")
    await waiting_token(conveyor, ref, "Prod", "Gate")

    async def approve(*args: str) -> tuple[int, str]:
        result = await conveyor_cli("approve", str(ref), "Prod", "Gate", *args, env=env)
        return result.code, result.out + result.err

    # The refusals change nothing, so they run together (each is a process start-up); then the decisions in order.
    (code, said), (dave_code, dave_said), (token_code, token_said) = await asyncio.gather(
        approve("--by", "mallory"), approve("--by", "dave"), approve("--by", "bob", "--token", str(uuid.uuid4()))
    )
    assert code != 0 and "'mallory' may not decide approval 'Gate'" in said
    assert dave_code != 0 and "separation of duties" in dave_said
    assert token_code != 0 and "token does not match" in token_said
    code, said = await approve("--by", "alice", "--summary", "canary is green")
    assert code == 0 and "Pending (1/2 approvals)" in said
    (code, said), status = await asyncio.gather(approve("--by", "alice"), conveyor_cli("status", str(ref), env=env))
    assert code != 0 and "'alice' has already approved 'Gate'" in said
    assert "decision Prod/Gate: Approved (1/2) by alice via cli" in status.out and "canary is green" in status.out
    code, said = await approve("--by", "bob")
    assert code == 0 and "Approved" in said
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.SUCCEEDED
    code, said = await approve("--by", "alice")
    assert code != 0 and "already decided" in said


async def temporal_update(address: str, ref: ExecutionRef, decision: dict[str, object]) -> tuple[int, str]:
    """`temporal workflow update execute` on the stage workflow, as README shows it."""
    argv = [
        find_binary("temporal"),
        "workflow",
        "update",
        "execute",
        "--workflow-id",
        ref.stage_workflow_id("Prod"),
        "--name",
        "approve",
        "--input",
        json.dumps(decision),
        "--address",
        address,
    ]
    done = await asyncio.to_thread(subprocess.run, argv, env=os.environ, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


async def test_policy_through_temporal_workflow_update(
    conveyor: ConveyorClient, worker: Worker, server: EmbeddedServer
) -> None:
    ref, _ = await conveyor.start(pipeline(POLICY.format(policy=POLICY_OF_TWO)), started_by="dave")
    token = await waiting_token(conveyor, ref, "Prod", "Gate")

    async def decide(by: str, token: str = token, source: str = "temporal") -> tuple[int, str]:
        return await temporal_update(
            server.address, ref, {"token": token, "actionName": "Gate", "by": by, "source": source}
        )

    code, said = await decide("mallory")
    assert code != 0 and "'mallory' may not decide approval 'Gate'" in said
    code, said = await decide("dave")
    assert code != 0 and "separation of duties" in said
    code, said = await decide("alice", token=str(uuid.uuid4()))
    assert code != 0 and "token does not match" in said
    code, said = await decide("alice", source="slack")  # a claimed channel the policy does not take
    assert code != 0 and "does not take decisions from 'slack'" in said
    code, said = await decide("alice")
    assert code == 0 and "status:Pending" in said and "approvals:1" in said, said
    code, said = await decide("alice")
    assert code != 0 and "'alice' has already approved 'Gate'" in said
    assert (await conveyor.state(ref)).status == ExecutionStatus.IN_PROGRESS  # one approval of two
    code, said = await decide("bob")
    assert code == 0, said
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED
    assert [(a.by, a.source) for a in final.stages[1].actions[0].approvals] == [
        ("alice", "temporal"),
        ("bob", "temporal"),
    ]
