"""The pipeline commands as subprocesses against the real server with a real worker process:
apply, get, pipelines, start PIPELINE, transition, state, list --succeeded-in, show --actions."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from conveyor.devserver import EmbeddedServer
from conveyor.settings import Settings
from tests.test_cli import Background, cli_env, conveyor, write_pipeline

DECLARATION = """executionMode: QUEUED
variables:
  - {{name: Env, defaultValue: prod}}
stages:
  - name: Build
    actions:
      - {{name: Compile, provider: Commands, commands: ["echo {word}"]}}
  - name: Deploy
    actions:
      - {{name: Ship, provider: Noop, namespace: Ship, configuration: {{Target: "#{{variables.Env}}"}}}}
"""


async def eventually_json(*args: str, env: dict[str, str], check, timeout: float = 30):  # noqa: ANN001, ANN201
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await conveyor(*args, env=env)
        assert result.code == 0, str(result)
        data = json.loads(result.out)
        if check(data):
            return data
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{args}: condition never held; last output:\n{result.out}")
        await asyncio.sleep(0.3)


@pytest.mark.slow
async def test_registered_pipeline_lifecycle_through_the_cli(
    server: EmbeddedServer, settings: Settings, tmp_path: Path
) -> None:
    env = cli_env(settings.data_dir, server.address, settings.task_queue) | {"COLUMNS": "250"}  # no wrapped cells
    file, name = write_pipeline(tmp_path / "pipeline.yaml", DECLARATION.format(word="one"))
    worker = Background.conveyor("worker", env=env, log=tmp_path / "worker.log")
    try:
        await worker.wait_for_text("Worker on")
        first = await conveyor("apply", str(file), env=env)
        assert first.code == 0 and f"{name}: version 1 (applied" in first.out, str(first)
        same = await conveyor("apply", str(file), env=env)
        assert "version 1 (unchanged" in same.out, str(same)
        file.write_text(f"name: {name}\n" + DECLARATION.format(word="two"))  # the same pipeline, changed
        second = await conveyor("apply", str(file), env=env)
        assert "version 2 (applied" in second.out, str(second)

        # Commands that change nothing the others read, run together (each is a process start-up).
        pipelines, old, got = await asyncio.gather(
            conveyor("pipelines", "--output", "json", env=env),
            conveyor("get", name, "--version", "1", env=env),
            conveyor("get", name, "--output", "json", env=env),
        )
        mine = next(p for p in json.loads(pipelines.out) if p["name"] == name)
        assert mine["current"]["version"] == 2 and mine["mode"] == "QUEUED"
        assert old.code == 0 and "echo one" in old.out and "version: 1" in old.out, str(old)
        current = json.loads(got.out)
        assert current["pipeline"]["stages"][0]["actions"][0]["commands"] == ["echo two"]

        closed = await conveyor("transition", "disable", name, "Deploy", "--reason", "change freeze", env=env)
        assert closed.code == 0 and "disabled" in closed.out, str(closed)
        started = await conveyor("start", name, env=env)
        assert started.code == 0, str(started)
        ref = started.out.strip().splitlines()[-1]
        execution_id = ref.split("/", 1)[1]
        await eventually_json(
            "status", ref, "--output", "json", env=env, check=lambda s: s["waitingForStage"] == "Deploy"
        )
        state, table = await asyncio.gather(
            conveyor("state", name, "--output", "json", env=env), conveyor("state", name, env=env)
        )
        coordinator = json.loads(state.out)
        deploy = next(s for s in coordinator["stages"] if s["stageName"] == "Deploy")
        assert deploy["transition"]["enabled"] is False and deploy["transition"]["reason"] == "change freeze"
        assert [w["executionId"] for w in deploy["waiting"]] == [execution_id]
        assert "change freeze" in table.out and execution_id in table.out, str(table)

        opened = await conveyor("transition", "enable", name, "Deploy", env=env)
        assert opened.code == 0, str(opened)
        watched = await conveyor("watch", ref, env=env)
        assert watched.code == 0, str(watched)

        rows = await eventually_json(
            "list", name, "--succeeded-in", "Deploy", "--output", "json", env=env, check=lambda rows: len(rows) == 1
        )
        assert rows[0]["execution"] == ref and rows[0]["pipelineVersion"] == 2
        assert rows[0]["trigger"] == "StartPipelineExecution" and rows[0]["status"] == "Succeeded"
        none, shown, unknown, bad_stage, bad_version = await asyncio.gather(
            conveyor("list", name, "--succeeded-in", "Nope", "--output", "json", env=env),
            conveyor("show", ref, "--actions", env=env),
            conveyor("start", "no-such-pipeline", env=env),
            conveyor("transition", "disable", name, "Nope", env=env),
            conveyor("get", name, "--version", "9", env=env),
        )
        assert json.loads(none.out) == []
        assert shown.code == 0 and "Target=prod" in shown.out, str(shown)
        assert unknown.code == 1 and "is not registered" in unknown.err, str(unknown)
        assert bad_stage.code == 1 and "has no stage 'Nope'" in bad_stage.err, str(bad_stage)
        assert bad_version.code == 1 and "has no version 9" in bad_version.err, str(bad_version)
    finally:
        await worker.stop()


@pytest.mark.slow
async def test_stop_retry_and_rollback_through_the_cli(
    server: EmbeddedServer, settings: Settings, tmp_path: Path
) -> None:
    env = cli_env(settings.data_dir, server.address, settings.task_queue) | {"COLUMNS": "250"}
    file, name = write_pipeline(
        tmp_path / "pipeline.yaml",
        f"""conveyor: {{retryWindowMinutes: 10}}
stages:
  - name: Build
    actions:
      - {{name: Make, provider: Commands, commands: ["echo built"]}}
  - name: Deploy
    actions:
      - name: Ship
        provider: Commands
        commands: ["test -f {tmp_path}/fixed", "echo shipped >> {tmp_path}/ship.log"]
""",
    )
    worker = Background.conveyor("worker", env=env, log=tmp_path / "worker.log")
    try:
        await worker.wait_for_text("Worker on")
        assert (await conveyor("apply", str(file), env=env)).code == 0
        ref = (await conveyor("start", name, env=env)).out.strip().splitlines()[-1]
        failed = await eventually_json(
            "status", ref, "--output", "json", env=env, check=lambda s: s["status"] == "Failed"
        )
        assert failed["stages"][1]["status"] == "Failed"
        (tmp_path / "fixed").touch()
        bad_mode = await conveyor("retry", ref, "Deploy", "--mode", "sideways", env=env)
        assert bad_mode.code == 2 and "use failed-actions or all-actions" in bad_mode.err, str(bad_mode)
        retried = await conveyor("retry", ref, "Deploy", "--mode", "failed-actions", env=env)
        assert retried.code == 0 and "InProgress" in retried.out, str(retried)
        assert (await conveyor("watch", ref, env=env)).code == 0
        again = (await conveyor("start", name, env=env)).out.strip().splitlines()[-1]
        assert (await conveyor("watch", again, env=env)).code == 0
        rollback = await conveyor("rollback", name, "Deploy", "--to", ref, env=env)
        assert rollback.code == 0, str(rollback)
        rolled_ref = rollback.out.strip().splitlines()[-1]
        assert (await conveyor("watch", rolled_ref, env=env)).code == 0
        status, refused, stop_ended = await asyncio.gather(
            conveyor("status", rolled_ref, "--output", "json", env=env),
            conveyor("rollback", name, "Deploy", "--to", rolled_ref, env=env),
            conveyor("stop", ref, "--reason", "too late", env=env),
        )
        shown = json.loads(status.out)
        assert shown["executionType"] == "ROLLBACK" and shown["trigger"]["triggerType"] == "ManualRollback"
        assert refused.code == 1 and "is itself a rollback" in refused.err, str(refused)
        assert stop_ended.code == 1 and "has already ended" in stop_ended.err, str(stop_ended)
    finally:
        await worker.stop()
