"""The `Commands` provider: run an action's shell commands, like CodePipeline's Commands action.

All commands run in one `bash` process with `set -e`, so `export X=1` in one command is visible to
the next and the first failing command stops the action. The working directory is the primary
input artifact; every attempt gets a fresh workspace that is removed afterwards.

Environment of the commands (nothing else from the worker, so its secrets such as `AWS_*` or
`TEMPORAL_*` never reach them), later entries winning over earlier ones:

1. `PATH`, `HOME`, and `LANG` / `LC_ALL` when set, copied from the worker.
2. `TMPDIR`: a private temporary directory inside the workspace.
3. `CODEBUILD_SRC_DIR` and `CONVEYOR_SRC_DIR`: the primary input artifact (the working directory).
4. `CODEBUILD_SRC_DIR_<Name>` and `CONVEYOR_SRC_DIR_<Name>`: each further input artifact.
5. `CONVEYOR_PIPELINE_NAME`, `CONVEYOR_EXECUTION_ID`, `CONVEYOR_STAGE_NAME`, `CONVEYOR_ACTION_NAME`.
6. The names listed in the action's `passEnvironment` and in the worker's `CONVEYOR_PASS_ENV`
   (comma-separated), copied from the worker's environment when set there.
7. The action's declared `environment` variables.

Output variables are the values the listed names have after the last command (exported ones only).
Output artifacts are packed from the primary source directory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import re
import shlex
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.process import (
    ProcessGroupRecord,
    kill_process_group,
    kill_recorded_orphans,
    start_process_group,
)
from conveyor.model import ActionContext, ActionOutcome, ArtifactRef, CommandsInput
from conveyor.providers.commands import ACTIVITY
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, store_for_outputs
from conveyor.stores.logs import LOG_FLUSH_SECONDS, ActionLogName, ActionLogWriter, attempt_label, open_action_log
from conveyor.text import shorten

HEARTBEAT_SECONDS = 2.0
CANCEL_GRACE_SECONDS = 5.0
TIMEOUT_GRACE_SECONDS = 5.0
STRAGGLER_GRACE_SECONDS = 2.0  # background processes still running after the last command
OUTPUT_DRAIN_SECONDS = 5.0
EXIT_POLL_SECONDS = 0.05
REAP_POLL_SECONDS = 0.005  # after the pidfd said bash exited (EXIT_POLL_SECONDS without a pidfd)
OUTPUT_VARIABLES_LIMIT = 122880  # bytes of names + values, CodePipeline's limit
TAIL_LINES = 10
TAIL_LINE_LIMIT = 500  # characters of each output line quoted in a failure
WORKER_ENV_NAMES = ("PATH", "HOME", "LANG", "LC_ALL")
PASS_ENV_VARIABLE = "CONVEYOR_PASS_ENV"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
_RESERVED_DIRS = {"src", "tmp", "conveyor"}
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Workspace:
    """One attempt's private directories."""

    root: Path

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def meta(self) -> Path:  # script, step file, env dump: out of the commands' way
        return self.root / "conveyor"

    @property
    def script(self) -> Path:
        return self.meta / "script.sh"

    @property
    def step_file(self) -> Path:
        return self.meta / "step"

    @property
    def env_dump(self) -> Path:
        return self.meta / "env"

    def artifact_dir(self, name: str) -> Path:
        return self.root / name


def workspace_key(context: ActionContext) -> str:
    """A directory name for the idempotency key: readable, and unique thanks to the hash suffix."""
    key = context.idempotency_key
    return f"{_UNSAFE_KEY_CHARS.sub('_', key)}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def build_environment(input: CommandsInput, workspace: Workspace, worker_env: Mapping[str, str]) -> dict[str, str]:
    """The commands' environment, in the documented order (see the module docstring)."""
    env = {name: worker_env[name] for name in WORKER_ENV_NAMES if name in worker_env}
    env.setdefault("PATH", DEFAULT_PATH)
    env["TMPDIR"] = str(workspace.tmp)
    env["CODEBUILD_SRC_DIR"] = env["CONVEYOR_SRC_DIR"] = str(workspace.src)
    for ref in input.input_artifacts[1:]:
        extra_dir = str(workspace.artifact_dir(ref.name))
        env[f"CODEBUILD_SRC_DIR_{ref.name}"] = env[f"CONVEYOR_SRC_DIR_{ref.name}"] = extra_dir
    ctx = input.context
    env["CONVEYOR_PIPELINE_NAME"] = ctx.pipeline_name
    env["CONVEYOR_EXECUTION_ID"] = ctx.execution_id
    env["CONVEYOR_STAGE_NAME"] = ctx.stage_name
    env["CONVEYOR_ACTION_NAME"] = ctx.action_name
    worker_pass = [n.strip() for n in worker_env.get(PASS_ENV_VARIABLE, "").split(",") if n.strip()]
    for name in [*input.pass_environment, *worker_pass]:
        if name in worker_env:
            env[name] = worker_env[name]
    env.update(input.environment)
    return env


def render_script(commands: list[str], workspace: Workspace) -> str:
    """One bash script: each command preceded by its step marker, the environment dumped at the end."""
    lines = ["set -e"]
    for number, command in enumerate(commands, start=1):
        lines.append(f"printf '%s\\n' {number} > {shlex.quote(str(workspace.step_file))}")
        lines.append(f"printf '%s\\n' {shlex.quote(f'[conveyor] Running command {number}: {command}')}")
        lines.append(command)
    lines.append(f"env -0 > {shlex.quote(str(workspace.env_dump))}")
    return "\n".join(lines) + "\n"


def parse_env_dump(data: bytes) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in data.split(b"\0"):
        name, sep, value = item.decode("utf-8", errors="replace").partition("=")
        if sep:
            env[name] = value
    return env


def non_retryable(message: str, type: str) -> ApplicationError:
    return ApplicationError(message, type=type, non_retryable=True)


class CommandsProvider:
    """Activities of the Commands provider; one instance per worker."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store

    @activity.defn(name=ACTIVITY)
    async def run_commands(self, input: CommandsInput) -> ActionOutcome:
        ctx = input.context
        log = structlog.get_logger().bind(
            pipeline=ctx.pipeline_name, execution=ctx.execution_id, stage=ctx.stage_name, action=ctx.action_name
        )
        await kill_previous_attempt_orphans(log)
        # The action's attempt (a declared retry), and within it the activity's (a lost worker's retry).
        attempt = ctx.action_attempt
        workspace = Workspace(
            self.settings.workspaces_dir / workspace_key(ctx) / f"attempt-{attempt}-{activity.info().attempt}"
        )
        log.info("commands.started", attempt=attempt, commands=len(input.commands))
        try:
            await asyncio.to_thread(self._prepare_workspace, input, workspace)
            env = build_environment(input, workspace, os.environ)
            await asyncio.to_thread(workspace.script.write_text, render_script(input.commands, workspace))
            log_name = ActionLogName(ctx.pipeline_name, ctx.execution_id, ctx.stage_name, ctx.action_name)
            log_label = attempt_label(attempt, activity.info().attempt)
            log_file = await asyncio.to_thread(open_action_log, self.settings, log_name, log_label)
            await _run_script(input, workspace, env, log_file, attempt, log)
            outcome = await self._collect_outputs(input, workspace)
        finally:
            await asyncio.to_thread(remove_workspace, workspace)
        log.info(
            "commands.succeeded",
            variables=sorted(outcome.output_variables),
            artifacts=len(outcome.output_artifacts),
        )
        return outcome

    def _prepare_workspace(self, input: CommandsInput, workspace: Workspace) -> None:
        prepare_workspace(self.store, input.input_artifacts, workspace)

    async def _collect_outputs(self, input: CommandsInput, workspace: Workspace) -> ActionOutcome:
        variables = await asyncio.to_thread(_read_output_variables, input.output_variables, workspace.env_dump)
        artifacts: list[ArtifactRef] = []
        try:
            store = store_for_outputs(self.store, input.context.artifact_stores)
        except ArtifactError as exc:
            raise non_retryable(str(exc), "ArtifactError") from exc
        for spec in input.output_artifacts:
            try:
                artifacts.append(await asyncio.to_thread(store.put, spec.name, workspace.src, spec.files))
            except ArtifactError as exc:
                raise non_retryable(str(exc), "ArtifactError") from exc
        return ActionOutcome(
            output_variables=variables,
            output_artifacts=artifacts,
            summary=f"{len(input.commands)} commands succeeded",
        )


def prepare_workspace(store: ArtifactStore, inputs: list[ArtifactRef], workspace: Workspace) -> None:
    """A fresh workspace: the primary input extracted in src/, each further one in a directory of its name."""
    shutil.rmtree(workspace.root, ignore_errors=True)
    for path in (workspace.src, workspace.tmp, workspace.meta):
        path.mkdir(parents=True)
    for index, ref in enumerate(inputs):
        if index:
            _check_extra_artifact_name(ref.name)
        dest = workspace.src if index == 0 else workspace.artifact_dir(ref.name)
        try:
            store.extract(ref, dest)
        except ArtifactError as exc:
            raise non_retryable(f"input artifact '{ref.name}': {exc}", "ArtifactError") from exc


async def kill_previous_attempt_orphans(log: Any) -> None:
    """A retried attempt first kills what a dead worker's attempt left running, so they never race."""
    details = activity.info().heartbeat_details
    if not details:
        return
    try:
        record = ProcessGroupRecord.model_validate(details[0])
    except ValidationError:
        return  # not ours; nothing to recognise
    if await kill_recorded_orphans(record):
        log.warning("commands.previous_attempt_killed", pgid=record.pgid)


def _check_extra_artifact_name(name: str) -> None:
    """Further input artifacts become directories of the workspace, beside src/ and tmp/."""
    if name in _RESERVED_DIRS or name in ("", ".", "..") or "/" in name or "\\" in name:
        raise non_retryable(
            f"input artifact '{name}': this name cannot be used as a directory name", "ConfigurationError"
        )


def remove_workspace(workspace: Workspace) -> None:
    shutil.rmtree(workspace.root, ignore_errors=True)
    with contextlib.suppress(OSError):
        workspace.root.parent.rmdir()  # the action's directory, once no attempt is left in it


def _read_output_variables(names: list[str], env_dump: Path) -> dict[str, str]:
    exported = parse_env_dump(env_dump.read_bytes()) if env_dump.exists() else {}
    variables: dict[str, str] = {}
    for name in names:
        if name not in exported:
            raise non_retryable(f"output variable '{name}' was not exported by the commands", "ConfigurationError")
        variables[name] = exported[name]
    size = sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
    if size > OUTPUT_VARIABLES_LIMIT:
        raise non_retryable(
            f"output variables take {size} bytes, over the limit of {OUTPUT_VARIABLES_LIMIT} bytes",
            "OutputVariablesTooLarge",
        )
    return variables


@dataclass(frozen=True)
class SandboxExit:
    returncode: int | None
    tail: list[str]  # the last lines of output, masked


async def _run_script(
    input: CommandsInput, workspace: Workspace, env: dict[str, str], log_file: ActionLogWriter, attempt: int, log: Any
) -> None:
    """Run the script in its own process group; raise ApplicationError unless it exits 0."""
    done = await run_sandboxed(workspace, env, log_file, attempt, input.timeout_seconds, log)
    if done.returncode != 0:
        raise await _command_failure(input.commands, workspace, done.returncode, done.tail)


async def run_sandboxed(
    workspace: Workspace,
    env: dict[str, str],
    log_file: ActionLogWriter,
    attempt: int,
    timeout_seconds: float,
    log: Any,
    mask: Callable[[str], str] | None = None,
) -> SandboxExit:
    """Run the workspace's script with bash in its own process group, in `workspace.src`, its output (through
    `mask`) in the action's log, heartbeating its group; kill the group on timeout (ActionTimeout) or cancellation.
    The log is completed whatever happens."""
    try:
        await _write_lines(log_file, [f"[conveyor] attempt {attempt} started {datetime.now(UTC).isoformat()}"])
        proc = await start_process_group(["bash", str(workspace.script)], cwd=workspace.src, env=env)
        record = ProcessGroupRecord.for_leader(proc.pid)
        tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        pump = asyncio.create_task(_pump_output(proc, log_file, tail, mask))
        beat = asyncio.create_task(_heartbeat_forever(record))
        flusher = asyncio.create_task(_flush_log_forever(log_file))
        try:
            await _wait_or_kill(proc, pump, record.pgid, timeout_seconds, log)
        finally:
            beat.cancel()
            pump.cancel()
            flusher.cancel()
    finally:
        # Shielded: a cancelled action's log is still completed in the store. A store that cannot take the log's
        # end does not change the action's result (the worker's own log says so).
        try:
            await asyncio.shield(asyncio.to_thread(log_file.close))
        except Exception as exc:
            log.warning("commands.log_close_failed", error=str(exc))
    return SandboxExit(proc.returncode, list(tail))


async def _wait_or_kill(
    proc: asyncio.subprocess.Process, pump: asyncio.Task[None], pgid: int, timeout: float, log: Any
) -> None:
    try:
        await asyncio.wait_for(_leader_exit(proc), timeout)
    except TimeoutError:
        log.warning("commands.timed_out", timeout_seconds=timeout)
        await kill_process_group(pgid, TIMEOUT_GRACE_SECONDS)
        await _drain(pump)
        raise non_retryable(f"action timed out after {timeout} s", "ActionTimeout") from None
    except asyncio.CancelledError:
        log.warning("commands.cancelled")
        await kill_process_group(pgid, CANCEL_GRACE_SECONDS)
        await _drain(pump)
        raise
    # Background processes the commands left behind would hold the log pipe open forever.
    await kill_process_group(pgid, STRAGGLER_GRACE_SECONDS)
    await _drain(pump)


async def _leader_exit(proc: asyncio.subprocess.Process) -> None:
    """Wait for bash itself to exit.

    Not `proc.wait()`: asyncio only returns from it once every pipe is closed, and a background
    child of the commands can keep the output pipe open forever. A pidfd (Linux) tells the moment
    bash exits; asyncio's child watcher then reaps it within a few milliseconds.
    """
    interval = EXIT_POLL_SECONDS
    with contextlib.suppress(OSError, AttributeError, NotImplementedError):
        await _pidfd_readable(proc.pid)
        interval = REAP_POLL_SECONDS
    while proc.returncode is None:
        await asyncio.sleep(interval)


async def _pidfd_readable(pid: int) -> None:
    fd = os.pidfd_open(pid)
    try:
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def readable() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, readable)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


async def _drain(pump: asyncio.Task[None]) -> None:
    """Let the output copier reach the end of the pipe, but never wait on it for long."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(pump), OUTPUT_DRAIN_SECONDS)


def heartbeat_interval(heartbeat_timeout: timedelta | None) -> float:
    """Beat well inside the timeout the workflow set: a short timeout needs frequent beats."""
    if heartbeat_timeout is None:
        return HEARTBEAT_SECONDS
    return max(0.1, min(HEARTBEAT_SECONDS, heartbeat_timeout.total_seconds() / 3))


async def _heartbeat_forever(record: ProcessGroupRecord) -> None:
    details = record.model_dump(mode="json")
    interval = heartbeat_interval(activity.info().heartbeat_timeout)
    while True:
        activity.heartbeat(details)
        await asyncio.sleep(interval)


async def _flush_log_forever(log_file: ActionLogWriter) -> None:
    """Readers on other hosts see the output within seconds (the S3 log is uploaded in chunks)."""
    while True:
        await asyncio.sleep(LOG_FLUSH_SECONDS)
        try:
            await asyncio.to_thread(log_file.flush)
        except Exception as exc:  # the store is briefly unreachable: the buffer is kept for the next flush
            structlog.get_logger().warning("commands.log_flush_failed", error=str(exc))


async def _pump_output(
    proc: asyncio.subprocess.Process,
    log_file: ActionLogWriter,
    tail: collections.deque[str],
    mask: Callable[[str], str] | None = None,
) -> None:
    """Copy the merged output to the log, whole lines at a time, flushed so `tail -f` sees them."""
    assert proc.stdout is not None
    pending = b""
    while chunk := await proc.stdout.read(65536):
        *lines, pending = (pending + chunk).split(b"\n")
        if lines:
            await _write_lines(log_file, _decoded(lines, mask), tail)
    if pending:
        await _write_lines(log_file, _decoded([pending], mask), tail)


def _decoded(lines: list[bytes], mask: Callable[[str], str] | None) -> list[str]:
    text = [line.decode("utf-8", errors="replace") for line in lines]
    return [mask(line) for line in text] if mask else text


async def _write_lines(log_file: ActionLogWriter, lines: list[str], tail: collections.deque[str] | None = None) -> None:
    if tail is not None:
        tail.extend(lines)
    await asyncio.to_thread(log_file.write, "".join(f"{line}\n" for line in lines))


async def _command_failure(
    commands: list[str], workspace: Workspace, returncode: int | None, tail: list[str]
) -> ApplicationError:
    step_text = await asyncio.to_thread(_read_text_or_empty, workspace.step_file)
    step = int(step_text) if step_text.strip().isdigit() else 0
    what = f"command {step} ({shorten(commands[step - 1])!r})" if 1 <= step <= len(commands) else "the commands"
    if returncode is not None and returncode < 0:
        how = f"was killed by signal {-returncode}"
    else:
        how = f"failed with exit code {returncode}"
    output = "\n".join(shorten(line, TAIL_LINE_LIMIT) for line in tail) if tail else "(no output)"
    return non_retryable(f"{what} {how}; last output:\n{output}", "CommandFailed")


def _read_text_or_empty(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the Commands contract (conveyor.providers.commands)."""
    return [CommandsProvider(settings, store).run_commands]
