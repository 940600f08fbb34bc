"""What `conveyor status`, `show`, `watch`, `list` and `logs` print, as real processes with their output
piped, against the session's Temporal server and a real worker (nothing mocked). Executions are started
and awaited with the client; the commands under test run as subprocesses."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.devserver import EmbeddedServer
from conveyor.model import ExecutionState
from conveyor.settings import Settings
from tests.helpers import pipeline, waiting_token
from tests.test_cli import UUID, cli_env
from tests.test_cli import conveyor as cli

# What a command prints, and what must be shown for it (never read as markup, never sent raw to the terminal).
ECHOED = "[/srv/releases/current] [conveyor] Running command 1 [bold]x :x:"
ESCAPES_PRINTF = r"\033[31mred\033]8;;http://evil\007link"  # printf turns these into ESC and BEL
ESCAPES_SHOWN = r"\x1b[31mred\x1b]8;;http://evil\x07link"


def piped_env(settings: Settings, server: EmbeddedServer) -> dict[str, str]:
    """The CLI's environment, as in a pipe: no COLUMNS to widen or narrow it."""
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    env.pop("COLUMNS", None)
    return env


async def run_to_end(conveyor: ConveyorClient, declaration: dict[str, Any], **options: Any) -> ExecutionState:
    ref, _ = await conveyor.start(declaration, **options)
    return await asyncio.wait_for(conveyor.wait(ref), 60)


def ref_of(state: ExecutionState) -> str:
    return str(ExecutionRef(state.pipeline_name, state.execution_id))


def assert_no_raw_controls(text: str) -> None:
    raw = [ch for ch in text if ch not in "\n\t" and (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0)]
    assert not raw, f"raw control characters {raw!r} in:\n{text!r}"


def flat(text: str) -> str:
    """Table borders and wrapping removed, so phrases can be looked for whole."""
    cells = [part.strip() for line in text.splitlines() for part in line.split("│")]
    return " ".join(" ".join(c for c in cells if c).split())


async def test_markup_emoji_and_escapes_from_commands_and_people_are_shown_literally(
    server: EmbeddedServer, settings: Settings, worker: Worker, conveyor: ConveyorClient
) -> None:
    env = piped_env(settings, server)
    commands = [f"echo '{ECHOED}'", f"printf '{ESCAPES_PRINTF}\\n'", "exit 3"]
    declaration = pipeline(
        f"""
name: literal
variables: [{{name: Target, defaultValue: x}}]
stages:
  - name: Gate
    actions: [{{name: Approve, provider: Manual}}]
  - name: Build
    actions: [{{name: Echo, provider: Commands, commands: {json.dumps(commands)}}}]
"""
    )
    ref, _ = await conveyor.start(declaration, variables={"Target": "[/opt/app] :x:"})
    await waiting_token(conveyor, ref, "Gate", "Approve")

    approved = await cli(
        "approve", str(ref), "Gate", "Approve", "--summary", "blocked, see [/wiki/runbook]", "--by", "[/ops]", env=env
    )
    assert approved.code == 0, str(approved)
    assert "by [/ops]" in approved.out

    watched = await cli("watch", str(ref), env=env, timeout=60)
    assert watched.code == 1, str(watched)  # the execution failed, and its table was shown
    assert ECHOED in watched.out, str(watched)

    status = await cli("status", str(ref), env=env)
    shown = await cli("show", str(ref), "--actions", env=env)
    for result in (status, shown):
        assert result.code == 0, str(result)
        assert ECHOED in result.out and ESCAPES_SHOWN in result.out, str(result)
        assert "blocked, see [/wiki/runbook]" in result.out and "by [/ops]" in result.out
        assert "exit code 3" in result.out
        assert_no_raw_controls(result.out)
    assert "variables: Target=[/opt/app] :x:" in shown.out


async def test_piped_output_never_cuts_execution_ids(
    server: EmbeddedServer, settings: Settings, worker: Worker, conveyor: ConveyorClient
) -> None:
    env = piped_env(settings, server)
    declaration = pipeline("""
name: piped
stages:
  - name: Only
    actions: [{name: Step, provider: Commands, commands: ["echo done"]}]
""")
    state = await run_to_end(conveyor, declaration)
    ref = ref_of(state)

    listed = await cli("list", state.pipeline_name, env=env)
    assert listed.code == 0, str(listed)
    assert re.search(rf"│ {re.escape(state.pipeline_name)}/{UUID} +│", listed.out), listed.out  # whole, one line
    status = await cli("status", ref, env=env)
    assert status.code == 0 and status.out.splitlines()[0].startswith(f"{ref}  Succeeded"), str(status)


async def test_status_shows_an_action_that_succeeded_on_its_second_attempt(
    server: EmbeddedServer, settings: Settings, worker: Worker, conveyor: ConveyorClient, tmp_path: Path
) -> None:
    marker = tmp_path / "failed-once"
    declaration = pipeline(f"""
name: retried
stages:
  - name: Build
    actions:
      - name: Flaky
        provider: Commands
        conveyor: {{retry: {{maximumAttempts: 3, initialIntervalSeconds: 0.2}}}}
        commands: ["test -f {marker} || {{ touch {marker}; echo not yet; exit 1; }}"]
""")
    state = await run_to_end(conveyor, declaration)
    assert state.stages[0].actions[0].max_attempts == 3

    status = await cli("status", ref_of(state), env=piped_env(settings, server))
    assert status.code == 0, str(status)
    text = flat(status.out)
    assert "succeeded on attempt 2 of 3" in text, status.out
    assert "attempt 1 failed: CommandFailed: command 1" in text, status.out


async def test_status_shows_a_failed_compensation_loudly_and_logs_reads_it(
    server: EmbeddedServer, settings: Settings, worker: Worker, conveyor: ConveyorClient
) -> None:
    env = piped_env(settings, server)
    declaration = pipeline("""
name: half-changed
stages:
  - name: Deploy
    onFailure: {result: ROLLBACK}
    actions:
      - name: Install
        provider: Commands
        commands: ["echo half-installed", "exit 1"]
        conveyor: {rollback: ["echo cannot undo", "exit 5"]}
""")
    state = await run_to_end(conveyor, declaration)  # three compensation attempts, 2 s and 4 s apart
    ref = ref_of(state)

    status = await cli("status", ref, env=env)
    assert status.code == 0, str(status)
    log_command = f"conveyor logs {ref} Deploy Install.rollback"
    alarm = (
        "Deploy may be half-changed: compensation of Install failed after 3 attempts; "
        f"read its log with `{log_command}`"
    )
    assert alarm in status.out, status.out
    assert "COMPENSATION FAILED after 3 attempts: CommandFailed" in flat(status.out), status.out

    logs = await cli(*log_command.split()[1:], "--follow", env=env)
    assert logs.code == 0, str(logs)
    assert logs.out.count("\ncannot undo\n") == 3 and "[conveyor] attempt 3 started" in logs.out, str(logs)
