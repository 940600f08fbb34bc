"""The Commands provider, run through the SDK's ActivityEnvironment with real bash processes."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.process import (
    ProcessGroupRecord,
    kill_recorded_orphans,
    start_process_group,
)
from activities.providers.commands import CommandsProvider
from conveyor.model import ActionContext, ArtifactRef, CommandsInput, OutputArtifactSpec
from conveyor.settings import Settings, action_log_path
from conveyor.stores.artifacts import LocalArtifactStore

CONTEXT = ActionContext(pipeline_name="shop", execution_id="exec-1", stage_name="Build", action_name="Compile")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def provider(settings: Settings) -> CommandsProvider:
    return CommandsProvider(settings, LocalArtifactStore(settings.artifacts_dir))


def commands_input(commands: list[str], **fields: Any) -> CommandsInput:
    return CommandsInput(context=CONTEXT, commands=commands, **fields)


def live_in_group(pgid: int) -> list[psutil.Process]:
    """Independent of the code under test: every non-zombie process whose group is `pgid`."""
    found = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (ProcessLookupError, psutil.Error):
            pass
    return found


async def wait_for_members(pgid: int, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout  # generous: a loaded machine (two test workers on two cores) is slow
    while time.monotonic() < deadline:
        if len(live_in_group(pgid)) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"process group {pgid} never had {count} members")


class Heartbeats:
    """Collects heartbeat details, as the worker would send them to the server."""

    def __init__(self, env: ActivityEnvironment) -> None:
        self.details: list[Any] = []
        env.on_heartbeat = lambda *details: self.details.extend(details)

    async def first_record(self, timeout: float = 30) -> ProcessGroupRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.details:
                return ProcessGroupRecord.model_validate(self.details[0])
            await asyncio.sleep(0.01)
        raise AssertionError("the activity never heartbeated")


async def test_success_exports_variables_across_commands(provider: CommandsProvider, settings: Settings) -> None:
    result = await ActivityEnvironment().run(
        provider.run_commands,
        commands_input(
            ["export GREETING=hello", 'export VERSION="$GREETING-1.2"', "echo built $VERSION"],
            output_variables=["VERSION", "GREETING"],
        ),
    )
    assert result.output_variables == {"VERSION": "hello-1.2", "GREETING": "hello"}
    assert result.summary == "3 commands succeeded"
    log = action_log_path(settings.logs_dir, "shop", "exec-1", "Build", "Compile").read_text()
    assert "[conveyor] attempt 1 started" in log
    assert "[conveyor] Running command 3: echo built $VERSION" in log
    assert "built hello-1.2\n" in log
    assert list(settings.workspaces_dir.iterdir()) == []  # workspace removed


async def test_output_artifact_becomes_input_of_a_second_run(tmp_path: Path, provider: CommandsProvider) -> None:
    env = ActivityEnvironment()
    build = await env.run(
        provider.run_commands,
        commands_input(
            ["mkdir dist", "echo wheel > dist/app.whl", "echo noise > other.txt"],
            output_artifacts=[OutputArtifactSpec(name="BuildOutput", files=["dist/*"])],
        ),
    )
    (built,) = build.output_artifacts
    assert built.name == "BuildOutput"

    source_dir = tmp_path / "checkout"
    source_dir.mkdir()
    (source_dir / "README").write_text("source\n")
    source = provider.store.put("SourceOutput", source_dir, ["**/*"])
    deploy = await env.run(
        provider.run_commands,
        commands_input(
            ['export DEPLOYED="$(cat "$CODEBUILD_SRC_DIR_BuildOutput/dist/app.whl")"', "export SRC=$(cat README)"],
            input_artifacts=[source, built],
            output_variables=["DEPLOYED", "SRC"],
        ),
    )
    assert deploy.output_variables == {"DEPLOYED": "wheel", "SRC": "source"}


async def test_failure_names_the_command_and_exit_code(provider: CommandsProvider) -> None:
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(
            provider.run_commands,
            commands_input(["echo first", "echo about to fail; exit 3", "echo never"]),
        )
    err = caught.value
    assert err.type == "CommandFailed" and err.non_retryable
    assert "command 2 ('echo about to fail; exit 3') failed with exit code 3" in err.message
    assert "about to fail" in err.message and "never" not in err.message


async def test_unexported_output_variable_is_a_configuration_error(provider: CommandsProvider) -> None:
    with pytest.raises(ApplicationError, match="output variable 'MISSING' was not exported") as caught:
        await ActivityEnvironment().run(
            provider.run_commands, commands_input(["LOCAL_ONLY=1"], output_variables=["MISSING"])
        )
    assert caught.value.type == "ConfigurationError"


async def test_worker_secrets_stay_out_but_pass_through_names_come_in(
    provider: CommandsProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    monkeypatch.setenv("TEMPORAL_API_KEY", "do-not-leak")
    monkeypatch.setenv("DEPLOY_REGION", "eu-west-1")
    monkeypatch.setenv("BUILD_FLAVOUR", "fast")
    monkeypatch.setenv("CONVEYOR_PASS_ENV", "BUILD_FLAVOUR, NOT_SET_ANYWHERE")
    result = await ActivityEnvironment().run(
        provider.run_commands,
        commands_input(
            [
                'export SECRET="${AWS_SECRET_ACCESS_KEY:-absent}${TEMPORAL_API_KEY:-}"',
                'export SEEN="$DEPLOY_REGION/$BUILD_FLAVOUR/$DECLARED"',
                'export WHERE="$CONVEYOR_PIPELINE_NAME/$CONVEYOR_STAGE_NAME/$CONVEYOR_ACTION_NAME"',
                'test "$PWD" = "$CODEBUILD_SRC_DIR" && test -d "$TMPDIR"',
            ],
            pass_environment=["DEPLOY_REGION"],
            environment={"DECLARED": "yes"},
            output_variables=["SECRET", "SEEN", "WHERE"],
        ),
    )
    assert result.output_variables == {"SECRET": "absent", "SEEN": "eu-west-1/fast/yes", "WHERE": "shop/Build/Compile"}


async def test_timeout_kills_the_whole_process_group(provider: CommandsProvider) -> None:
    env = ActivityEnvironment()
    beats = Heartbeats(env)
    with pytest.raises(ApplicationError, match="action timed out after 1 s") as caught:
        await env.run(
            provider.run_commands,
            commands_input(["sleep 300 & sleep 301 & echo started", "sleep 302"], timeout_seconds=1),
        )
    assert caught.value.type == "ActionTimeout" and caught.value.non_retryable
    record = await beats.first_record()
    assert live_in_group(record.pgid) == []


async def test_background_processes_do_not_outlive_the_action(provider: CommandsProvider) -> None:
    env = ActivityEnvironment()
    beats = Heartbeats(env)
    result = await env.run(provider.run_commands, commands_input(["sleep 300 &", "echo done"]))
    assert result.summary == "2 commands succeeded"
    assert live_in_group((await beats.first_record()).pgid) == []


async def test_cancellation_kills_the_group_and_cleans_up(provider: CommandsProvider, settings: Settings) -> None:
    env = ActivityEnvironment()
    beats = Heartbeats(env)
    task = asyncio.create_task(env.run(provider.run_commands, commands_input(["sleep 300 & sleep 301"])))
    record = await beats.first_record()
    await wait_for_members(record.pgid, 3)  # bash and both children are running
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live_in_group(record.pgid) == []
    assert list(settings.workspaces_dir.iterdir()) == []


async def start_orphan_group(tmp_path: Path) -> ProcessGroupRecord:
    proc = await start_process_group(["bash", "-c", "sleep 300 & sleep 301 & wait"], cwd=tmp_path, env=os.environ)
    await wait_for_members(proc.pid, 3)
    return ProcessGroupRecord.for_leader(proc.pid)


async def test_kill_recorded_orphans_kills_only_a_matching_group(tmp_path: Path) -> None:
    record = await start_orphan_group(tmp_path)
    try:
        stale = record.model_copy(update={"leader_start_time": record.leader_start_time - 10})
        assert not await kill_recorded_orphans(stale)
        assert not await kill_recorded_orphans(record.model_copy(update={"boot_id": "another-boot"}))
        assert len(live_in_group(record.pgid)) == 3  # left alone

        assert await kill_recorded_orphans(record)
        assert live_in_group(record.pgid) == []
    finally:
        if live_in_group(record.pgid):
            os.killpg(record.pgid, signal.SIGKILL)


async def test_retried_attempt_kills_its_predecessors_orphans_first(tmp_path: Path, provider: CommandsProvider) -> None:
    record = await start_orphan_group(tmp_path)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, heartbeat_details=[record.model_dump(mode="json")])
    try:
        result = await env.run(provider.run_commands, commands_input(["true"]))
        assert result.summary == "1 commands succeeded"
        assert live_in_group(record.pgid) == []
    finally:
        if live_in_group(record.pgid):
            os.killpg(record.pgid, signal.SIGKILL)


async def test_corrupt_input_artifact_is_a_non_retryable_artifact_error(provider: CommandsProvider) -> None:
    bogus = ArtifactRef(name="SourceOutput", digest="sha256:" + "0" * 64, location="file:///nowhere", size=1)
    expected = "input artifact 'SourceOutput': artifact 'SourceOutput' is missing"
    with pytest.raises(ApplicationError, match=expected) as caught:
        await ActivityEnvironment().run(provider.run_commands, commands_input(["true"], input_artifacts=[bogus]))
    assert caught.value.type == "ArtifactError" and caught.value.non_retryable
