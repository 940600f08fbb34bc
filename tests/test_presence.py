"""Commands that need a worker answer within seconds and say what is true: refused before sending when no
worker polls the task queue, "sent, not yet applied" (exit 3) when one polled moments ago but none
accepts, and a warning from `start` whose execution nobody will run yet. The commands are real
`python -m conveyor` processes against the session server; the workers are in-process, on the test's own
task queue, started and stopped where the scenario says."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.client import Client

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.devserver import EmbeddedServer
from conveyor.model import ExecutionStatus
from conveyor.settings import Settings
from conveyor.spec.loading import load_pipeline
from conveyor.worker import build_worker
from tests.helpers import waiting_token
from tests.test_cli import Result, cli_env, write_pipeline
from tests.test_cli import conveyor as run_cli

DECLARATION = """stages:
  - name: Build
    actions:
      - {name: Compile, provider: Noop}
  - name: Deploy
    actions:
      - {name: Ship, provider: Noop}
"""
GATED = """stages:
  - name: Prod
    actions:
      - {name: Gate, provider: Manual}
"""
QUICKLY = 30.0  # seconds: the 5 s acceptance deadline plus starting a Python process with 2 test workers on 2 cores
NOT_YET_APPLIED = 3


def refused_for_no_worker(result_err: str, settings: Settings, server: EmbeddedServer) -> bool:
    return (
        f"no worker is polling task queue '{settings.task_queue}' at {server.address}" in result_err
        and "start one with `conveyor worker`" in result_err
    )


async def test_apply_with_no_worker_is_refused_at_once_and_nothing_applies_later(
    server: EmbeddedServer, settings: Settings, temporal_client: Client, conveyor: ConveyorClient, tmp_path: Path
) -> None:
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    file, name = write_pipeline(tmp_path / "pipeline.yaml", DECLARATION)

    refused = await conveyor_cli("apply", str(file), env=env)
    assert refused.code == 1, str(refused)
    assert refused_for_no_worker(refused.err, settings, server), str(refused)

    async with build_worker(temporal_client, settings):
        # Had the refused apply been sent, it would be applied before this one, which would be "unchanged".
        result = await conveyor.apply(load_pipeline(file)[1])
    assert result.version.version == 1 and result.changed


async def test_transition_disable_after_the_last_poll_is_refused_and_the_transition_stays_open(
    server: EmbeddedServer, settings: Settings, temporal_client: Client, conveyor: ConveyorClient, tmp_path: Path
) -> None:
    env = cli_env(settings.data_dir, server.address, settings.task_queue) | {"CONVEYOR_WORKER_POLL_WINDOW": "1"}
    file, name = write_pipeline(tmp_path / "pipeline.yaml", DECLARATION)
    async with build_worker(temporal_client, settings):
        await conveyor.apply(load_pipeline(file)[1])
    await asyncio.sleep(1.5)  # the worker's last poll is now older than the window

    refused = await conveyor_cli("transition", "disable", name, "Deploy", "--reason", "freeze", env=env)
    assert refused.code == 1, str(refused)
    assert refused_for_no_worker(refused.err, settings, server), str(refused)

    async with build_worker(temporal_client, settings):
        # Any update sent earlier is handled before this one.
        await conveyor.set_transition(name, "Build", enabled=False, reason="later")
        state = await conveyor.pipeline_state(name)
    assert state.stage("Deploy").transition.enabled


async def test_a_worker_gone_moments_ago_gets_sent_not_yet_applied_and_it_applies_when_one_runs(
    server: EmbeddedServer, settings: Settings, temporal_client: Client, conveyor: ConveyorClient, tmp_path: Path
) -> None:
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    file, name = write_pipeline(tmp_path / "pipeline.yaml", DECLARATION)
    async with build_worker(temporal_client, settings):
        await conveyor.apply(load_pipeline(file)[1])
    # The server still lists the stopped worker's recent poll: the update is sent, and nobody accepts it.

    pending = await conveyor_cli("transition", "disable", name, "Deploy", "--reason", "freeze", env=env)
    assert pending.code == NOT_YET_APPLIED, str(pending)
    assert "sent, not yet applied: it applies when a worker runs" in pending.err, str(pending)
    assert "unless the Temporal server restarts first" in pending.err, str(pending)
    assert "error" not in pending.err.lower() and "failed" not in pending.err.lower(), str(pending)

    async with build_worker(temporal_client, settings):  # as promised: it applies once a worker runs
        deploy = (await conveyor.pipeline_state(name)).stage("Deploy")
        deadline = asyncio.get_running_loop().time() + 30  # generous: two test workers share two cores
        while deploy.transition.enabled and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.1)
            deploy = (await conveyor.pipeline_state(name)).stage("Deploy")
    assert not deploy.transition.enabled and deploy.transition.reason == "freeze"


async def test_approve_and_stop_with_no_worker_are_refused_at_once_and_the_execution_is_untouched(
    server: EmbeddedServer, settings: Settings, temporal_client: Client, conveyor: ConveyorClient, tmp_path: Path
) -> None:
    env = cli_env(settings.data_dir, server.address, settings.task_queue) | {"CONVEYOR_WORKER_POLL_WINDOW": "1"}
    file, _ = write_pipeline(tmp_path / "gated.yaml", GATED)
    async with build_worker(temporal_client, settings):
        ref, _ = await conveyor.start(load_pipeline(file)[1])
        await waiting_token(conveyor, ref, "Prod", "Gate")
    await asyncio.sleep(1.5)

    approved, stopped = await asyncio.gather(
        conveyor_cli("approve", str(ref), "Prod", "Gate", "--summary", "ship it", env=env),
        conveyor_cli("stop", str(ref), "--reason", "freeze", env=env),
    )
    for result in (approved, stopped):
        assert result.code == 1, str(result)
        assert refused_for_no_worker(result.err, settings, server), str(result)

    async with build_worker(temporal_client, settings):
        token = await waiting_token(conveyor, ref, "Prod", "Gate")  # still waiting: neither was sent
        state = await conveyor.state(ref)
        assert state.status == ExecutionStatus.IN_PROGRESS
        await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="tester")
        final = await asyncio.wait_for(conveyor.wait(ref, interval=0.2), 30)
    assert final.status == ExecutionStatus.SUCCEEDED


async def test_start_without_a_worker_warns_and_exits_0_and_with_one_it_does_not(
    server: EmbeddedServer, settings: Settings, temporal_client: Client, tmp_path: Path
) -> None:
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    file, name = write_pipeline(tmp_path / "pipeline.yaml", DECLARATION)

    alone = await conveyor_cli("start", str(file), env=env)
    assert alone.code == 0, str(alone)
    assert alone.out.strip().startswith(f"{name}/"), str(alone)
    assert (
        f"warning: no worker is polling task queue '{settings.task_queue}' at {server.address}: "
        "the execution will wait until one runs (`conveyor worker`)"
    ) in alone.err, str(alone)

    async with build_worker(temporal_client, settings):  # it ran once a worker came
        ref = ExecutionRef(*alone.out.strip().split("/"))
        client = ConveyorClient(temporal_client, settings)
        final = await asyncio.wait_for(client.wait(ref, interval=0.2), 30)
        assert final.status == ExecutionStatus.SUCCEEDED

        served = await conveyor_cli("start", str(file), env=env)
        assert served.code == 0 and "warning" not in served.err, str(served)


async def test_a_bad_poll_window_is_a_usage_error(server: EmbeddedServer, settings: Settings) -> None:
    env = cli_env(settings.data_dir, server.address, settings.task_queue) | {"CONVEYOR_WORKER_POLL_WINDOW": "soon"}
    result = await conveyor_cli("transition", "disable", "p", "S", env=env)
    assert result.code == 2, str(result)
    assert "CONVEYOR_WORKER_POLL_WINDOW='soon': write a number of seconds greater than 0" in result.err


async def conveyor_cli(*args: str, env: dict[str, str]) -> Result:
    """A command that must answer quickly: a hang fails the test instead of waiting minutes."""
    try:
        return await run_cli(*args, env=env, timeout=QUICKLY)
    except TimeoutError:
        pytest.fail(f"`conveyor {' '.join(args)}` gave no answer within {QUICKLY:.0f} s")
