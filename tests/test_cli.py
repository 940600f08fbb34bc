"""The `conveyor` command line, run as real processes against real Temporal servers (nothing mocked).

Every command is a `python -m conveyor ...` subprocess. Long-lived pieces (`conveyor worker`,
`conveyor server`, a bare `temporal server start-dev`) are real background processes; no test runs an
in-process worker, and commands are awaited with asyncio so the shared event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from conveyor import search_attributes
from conveyor.devserver import EmbeddedServer, find_binary, free_port, server_record_path
from conveyor.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HELLO = ROOT / "examples" / "hello-release" / "pipeline.yaml"
APPROVAL = ROOT / "examples" / "approval-release" / "pipeline.yaml"
CONFIG_VARIABLES = (
    "TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "CONVEYOR_TASK_QUEUE", "CONVEYOR_DATA_DIR", "CONVEYOR_CONNECTIONS",
)  # fmt: skip
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


# --- running the CLI ------------------------------------------------------------------------------


def cli_env(data_dir: Path, address: str | None = None, task_queue: str | None = None) -> dict[str, str]:
    """The caller's environment without any Conveyor/Temporal configuration, plus exactly these."""
    env = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    env["CONVEYOR_DATA_DIR"] = str(data_dir)
    if address:
        env["TEMPORAL_ADDRESS"] = address
    if task_queue:
        env["CONVEYOR_TASK_QUEUE"] = task_queue
    return env


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"conveyor {shlex.join(self.args)} -> {self.code}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def _default_sigint() -> None:
    # A shell started in the background ignores SIGINT, and children inherit that; Ctrl-C must reach us.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def spawn(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "conveyor",
        *args,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_default_sigint,
    )


async def conveyor(*args: str, env: dict[str, str], timeout: float = 60) -> Result:
    """Run one command to its end; never a traceback, whatever the outcome."""
    process = await spawn(*args, env=env)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    result = Result(args, process.returncode or 0, out.decode(), err.decode())
    assert "Traceback" not in result.out and "Traceback" not in result.err, str(result)
    return result


class Background:
    """A long-lived process (worker, server) with its output in a file; stopped by id, never by name."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    @classmethod
    def conveyor(cls, *args: str, env: dict[str, str], log: Path) -> Background:
        return cls([sys.executable, "-m", "conveyor", *args], env, log)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_for_text(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode} before printing {text!r}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {timeout} s:\n{self.text()}")
            await asyncio.sleep(0.1)

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return await asyncio.to_thread(self.process.wait, timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return await asyncio.to_thread(self.process.wait, 10)


def processes_mentioning(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        if marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


async def no_process_mentions(marker: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while (left := processes_mentioning(marker)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not left, [p.info["cmdline"] for p in left]


def kill_processes_mentioning(marker: str) -> None:
    """Last-resort cleanup: only processes carrying this test's own temporary directory."""
    for proc in processes_mentioning(marker):
        try:
            proc.kill()
        except psutil.Error:
            pass


def started_ref(output: str) -> tuple[str, str]:
    found = re.search(r"Started execution (\S+) on\s+(\S+)", output)
    assert found, output
    return found.group(1), found.group(2)


def write_pipeline(path: Path, text: str) -> tuple[Path, str]:
    """A declaration file with a unique pipeline name, so tests never share executions."""
    name = f"cli-{uuid.uuid4().hex[:8]}"
    path.write_text(f"name: {name}\n{text}")
    return path, name


# --- 1. `run` on the embedded server ---------------------------------------------------------------


async def test_run_on_the_embedded_server_succeeds_fails_and_leaves_nothing_running(tmp_path: Path) -> None:
    data = tmp_path / "data"
    deploy = tmp_path / "deploy"
    env = cli_env(data)
    try:
        ok = await conveyor("run", str(HELLO), "--var", f"DeployRoot={deploy}", env=env, timeout=90)
        assert ok.code == 0, str(ok)
        assert "Succeeded" in ok.out
        ref, address = started_ref(ok.out)
        assert ref.startswith("hello-release/") and address.startswith("127.0.0.1:")
        assert (deploy / "production" / "VERSION").read_text().strip().startswith("1.0.")
        await no_process_mentions(str(data))  # the embedded server is gone (the worker was in-process)
        assert not server_record_path(data).exists()

        failing, _ = write_pipeline(
            tmp_path / "failing.yaml",
            """stages:
  - name: Build
    actions:
      - {name: Broken, provider: Commands, commands: ["echo about to fail", "exit 3"]}
""",
        )
        failed = await conveyor("run", str(failing), env=env, timeout=90)
        assert failed.code == 1, str(failed)
        assert "Failed" in failed.out
        await no_process_mentions(str(data))
        assert not server_record_path(data).exists()
    finally:
        kill_processes_mentioning(str(data))


# --- 2. Ctrl-C during `run`, then `server` + `worker` on the same data directory -------------------------


async def test_ctrl_c_stops_everything_and_the_execution_continues_on_the_same_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    deploy = tmp_path / "deploy"
    env = cli_env(data)  # no TEMPORAL_ADDRESS: the embedded server, later found through server.json
    background: list[Background] = []
    try:
        run = await spawn("run", str(APPROVAL), "--var", f"DeployRoot={deploy}", env=env)
        assert run.stdout is not None
        shown: list[str] = []

        async def read_until_instructions() -> None:
            while not any("temporal workflow update execute" in line for line in shown):
                line = await run.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    raise AssertionError("run ended before printing approval instructions:\n" + "".join(shown))
                shown.append(line.decode())

        try:
            await asyncio.wait_for(read_until_instructions(), 60)
        except BaseException:
            run.kill()
            raise
        text = "".join(shown)
        ref, address = started_ref(text)
        assert ref.startswith("approval-release/")
        assert "Approval waiting in stage Approval, action ApproveProduction" in text
        approve_line = next(line for line in shown if "conveyor approve" in line)
        assert f"TEMPORAL_ADDRESS={address} conveyor approve {ref} Approval ApproveProduction" in approve_line
        update_line = next(line for line in shown if "temporal workflow update execute" in line)
        assert f"--address {address}" in update_line and f"--workflow-id '{ref}/Approval'" in update_line
        assert "--name approve" in update_line
        assert re.search(rf'"token": "{UUID}"', update_line), update_line

        interrupted_at = time.monotonic()
        run.send_signal(signal.SIGINT)
        try:
            rest, err = await asyncio.wait_for(run.communicate(), 20)
        except TimeoutError:
            run.kill()
            raise AssertionError("run did not exit within 20 s of Ctrl-C") from None
        assert time.monotonic() - interrupted_at < 20
        # Ctrl-C is not a verdict on the execution: run_async maps KeyboardInterrupt to the shell's 130.
        assert run.returncode == 130, (run.returncode, rest, err)
        assert "Traceback" not in rest.decode() + err.decode()
        assert f"Interrupted. Execution {ref} keeps its state" in " ".join(rest.decode().split())
        await no_process_mentions(str(data))
        assert not server_record_path(data).exists()

        # The same data directory, served by `conveyor server`; the worker and the commands find it
        # through server.json (TEMPORAL_ADDRESS stays unset).
        port = free_port()
        server_process = Background.conveyor(
            "server", "--port", str(port), "--headless", env=env, log=tmp_path / "server.log"
        )
        background.append(server_process)
        await server_process.wait_for_text("Stop with Ctrl-C.", 60)
        record = json.loads(server_record_path(data).read_text())
        assert record["address"] == f"127.0.0.1:{port}" and record["pid"] == server_process.process.pid

        worker = Background.conveyor("worker", env=env, log=tmp_path / "worker.log")
        background.append(worker)
        await worker.wait_for_text(f"Worker on 127.0.0.1:{port}", 30)

        status = await conveyor("status", ref, "--output", "json", env=env)
        assert status.code == 0, str(status)
        state = json.loads(status.out)
        assert state["status"] == "InProgress"
        gate = next(s for s in state["stages"] if s["stageName"] == "Approval")
        assert gate["status"] == "InProgress" and gate["actions"][0]["token"]

        approved = await conveyor("approve", ref, "Approval", "ApproveProduction", "--summary", "ok", env=env)
        assert approved.code == 0, str(approved)
        watched = await conveyor("watch", ref, env=env, timeout=60)
        assert watched.code == 0, str(watched)
        assert "Succeeded" in watched.out
        assert (deploy / "NOTES.txt").exists()

        assert await worker.stop() == 128 + signal.SIGTERM  # a clean shutdown, not a kill
        assert await server_process.stop() == 128 + signal.SIGTERM  # stopped in order, not killed
        await no_process_mentions(str(data))  # its temporal child went with it
        assert not server_record_path(data).exists()
    finally:
        for process in background:
            await process.stop()
        kill_processes_mentioning(str(data))


# --- 3. start/status/list/logs/approve/reject against the session server ------------------------------


@pytest.mark.slow
async def test_commands_against_a_configured_server_with_a_worker_process(
    server: EmbeddedServer, settings: Settings, tmp_path: Path
) -> None:
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    file, name = write_pipeline(
        tmp_path / "pipeline.yaml",
        """variables:
  - {name: Greeting, defaultValue: hi}
stages:
  - name: Build
    actions:
      - name: Echo
        provider: Commands
        commands: ['echo "#{variables.Greeting} from build"', "echo on $CONVEYOR_STAGE_NAME"]
  - name: Slow
    actions:
      - {name: Ticker, provider: Commands, commands: ["echo first tick", "sleep 3", "echo second tick"]}
  - name: Gate
    actions:
      - {name: Approve, provider: Manual}
  - name: Ship
    actions:
      - {name: Deploy, provider: Commands, commands: ["echo shipped"]}
""",
    )
    quick, quick_name = write_pipeline(
        tmp_path / "quick.yaml",
        """stages:
  - name: Only
    actions:
      - {name: Step, provider: Commands, commands: ["echo done"]}
""",
    )
    worker = Background.conveyor("worker", env=env, log=tmp_path / "worker.log")
    try:
        await worker.wait_for_text(f"Worker on {server.address}", 30)

        first = await conveyor("start", str(file), "--var", "Greeting=hello", "--token", "release-42", env=env)
        assert first.code == 0, str(first)
        ref = first.out.strip()
        assert re.fullmatch(rf"{name}/{UUID}", ref), str(first)

        # Follow the slow action while it runs: the first line arrives before the second is written.
        log_file = settings.logs_dir / name / ref.split("/")[1] / "Slow" / "Ticker.log"
        follow = await spawn("logs", ref, "Slow", "Ticker", "--follow", env=env)
        assert follow.stdout is not None

        async def first_tick() -> str:
            seen = ""
            while "first tick" not in seen:
                line = (await follow.stdout.readline()).decode()  # type: ignore[union-attr]
                if not line:
                    _, err = await follow.communicate()
                    raise AssertionError(f"logs --follow ended early ({follow.returncode}): {seen}{err.decode()}")
                seen += line
            return seen

        try:
            seen = await asyncio.wait_for(first_tick(), 30)
            assert "second tick" not in log_file.read_text()  # the action is still running
            rest, follow_err = await asyncio.wait_for(follow.communicate(), 30)  # ends when the action does
        finally:
            if follow.returncode is None:
                follow.kill()
        assert follow.returncode == 0, follow_err.decode()
        assert "second tick" in rest.decode() and "Traceback" not in seen + rest.decode() + follow_err.decode()

        # Commands that change nothing the others read, run together (each is a process start-up).
        again, logs, status, table, listed, wrong_approve, wrong_reject = await asyncio.gather(
            conveyor("start", str(file), "--var", "Greeting=hello", "--token", "release-42", env=env),
            conveyor("logs", ref, "Build", "Echo", env=env),
            conveyor("status", ref, "--output", "json", env=env),
            conveyor("status", ref, env=env),
            conveyor("list", name, "--output", "json", env=env),
            conveyor("approve", ref, "Gate", "Approve", "--token", "not-the-token", env=env),
            conveyor("reject", ref, "Gate", "Approve", "--token", "not-the-token", env=env),
        )
        assert again.code == 0, str(again)
        assert again.out.strip() == ref
        assert "already exists" in again.err and "nothing new was started" in again.err

        assert logs.code == 0, str(logs)
        assert "hello from build" in logs.out and "on Build" in logs.out

        assert status.code == 0, str(status)
        state = json.loads(status.out)
        assert state["pipelineName"] == name
        assert [s["stageName"] for s in state["stages"]] == ["Build", "Slow", "Gate", "Ship"]
        assert table.code == 0, str(table)
        for stage in ("Build", "Slow", "Gate", "Ship"):
            assert stage in table.out

        assert listed.code == 0, str(listed)
        assert ref in [row["execution"] for row in json.loads(listed.out)]

        for wrong in (wrong_approve, wrong_reject):
            assert wrong.code == 1, str(wrong)
            assert "error:" in wrong.err and "token does not match" in wrong.err, str(wrong)

        rejected = await conveyor("reject", ref, "Gate", "Approve", "--summary", "not today", env=env)
        assert rejected.code == 0, str(rejected)
        watched = await conveyor("watch", ref, env=env)
        assert watched.code == 1, str(watched)
        final = json.loads((await conveyor("status", ref, "--output", "json", env=env)).out)
        assert final["status"] == "Failed"
        gate = next(s for s in final["stages"] if s["stageName"] == "Gate")
        assert gate["actions"][0]["approval"]["summary"] == "not today"

        started = await conveyor("start", str(quick), env=env)
        assert started.code == 0, str(started)
        quick_ref = started.out.strip()
        assert (await conveyor("watch", quick_ref, env=env)).code == 0
    finally:
        await worker.stop()

    # No worker at all now: finished executions are still readable (their memo).
    done, failed = await asyncio.gather(
        conveyor("status", quick_ref, "--output", "json", env=env), conveyor("status", ref, env=env)
    )
    assert done.code == 0, str(done)
    state = json.loads(done.out)
    assert state["status"] == "Succeeded" and state["pipelineName"] == quick_name
    assert state["stages"][0]["actions"][0]["status"] == "Succeeded"
    assert failed.code == 0 and "Failed" in failed.out, str(failed)


# --- 4. bad input: a message and an exit code, never a traceback ------------------------------------------


async def test_bad_input_is_a_message_never_a_traceback(
    server: EmbeddedServer, settings: Settings, tmp_path: Path
) -> None:
    live = cli_env(settings.data_dir, server.address, settings.task_queue)
    dead_address = f"127.0.0.1:{free_port()}"
    dead = cli_env(tmp_path / "data", dead_address)
    file, _ = write_pipeline(
        tmp_path / "ok.yaml",
        "stages:\n  - name: A\n    actions:\n      - {name: B, provider: Commands, commands: [echo]}\n",
    )
    cases = {
        # The reference is checked before connecting: the dead address is never tried.
        "bad ref": (("status", "not-a-ref"), dead, 2, "PIPELINE/EXECUTION-ID"),
        "bad ref (approve)": (("approve", "nope", "S", "A"), dead, 2, "PIPELINE/EXECUTION-ID"),
        "missing file": (("start", "missing.yaml"), live, 2, "file not found"),
        "var without value": (("start", str(file), "--var", "novalue"), live, 2, "--var 'novalue'"),
        "undeclared variable": (("start", str(file), "--var", "Nope=1"), live, 2, "--var 'Nope'"),
        "revision without value": (("run", str(file), "--source-revision", "x"), dead, 2, "--source-revision"),
        "bad output": (("status", "p/e", "--output", "xml"), dead, 2, "--output 'xml'"),
        "nothing listens": (("status", "p/e"), dead, 1, dead_address),
        "unknown execution": (("status", f"pipe/{uuid.uuid4()}"), live, 1, "was not found"),
        "no log": (("logs", "pipe/e", "Stage", "Action"), live, 1, "no log for pipe/e"),
    }
    results = await asyncio.gather(*(conveyor(*args, env=env, timeout=30) for args, env, _, _ in cases.values()))
    for (case, (_, _, code, message)), result in zip(cases.items(), results, strict=True):
        assert result.code == code, f"{case}: {result}"
        assert message in result.err, f"{case}: {result}"  # `conveyor()` already checked: no traceback


# --- 5. `worker` against a namespace that is not ready -----------------------------------------------------


async def test_worker_refuses_an_unprepared_namespace_and_prints_commands_that_fix_it(tmp_path: Path) -> None:
    temporal = find_binary("temporal")
    plain = {k: v for k, v in os.environ.items() if k not in CONFIG_VARIABLES}
    port = free_port()
    address = f"127.0.0.1:{port}"
    dev = Background(
        [
            temporal, "server", "start-dev", "--headless", "--ip", "127.0.0.1",
            "--port", str(port), "--http-port", str(free_port()), "--metrics-port", str(free_port()),
            "--db-filename", str(tmp_path / "x.sqlite"), "--log-level", "error",
        ],
        plain,
        tmp_path / "dev.log",
    )  # fmt: skip
    env = cli_env(tmp_path / "data", address)
    worker: Background | None = None
    try:
        describe = [temporal, "operator", "namespace", "describe", "--address", address, "--namespace", "default"]
        deadline = time.monotonic() + 60
        while True:
            probe = await asyncio.to_thread(
                subprocess.run, describe, env=plain, capture_output=True, text=True, timeout=30
            )
            if probe.returncode == 0:
                break
            assert dev.process.poll() is None, dev.text()
            assert time.monotonic() < deadline, probe.stderr
            await asyncio.sleep(0.3)
        assert "24h0m0s" in probe.stdout  # the dev server's own retention: too short for Conveyor

        refused = await conveyor("worker", env=env)
        assert refused.code == 1, str(refused)
        assert "not ready for Conveyor" in refused.err
        fixes = [line.strip() for line in refused.err.splitlines() if line.strip().startswith("temporal operator")]
        creates = [line for line in fixes if line.startswith("temporal operator search-attribute create")]
        assert all(f"--address {address}" in line for line in creates), refused.err
        created = {re.search(r"--name (\S+) --type (\S+)", line).groups() for line in creates}  # type: ignore[union-attr]
        assert created == set(search_attributes.CLI_TYPES.items()), refused.err
        updates = [line for line in fixes if line.startswith("temporal operator namespace update")]
        assert len(updates) == 1 and "--retention" in updates[0] and f"--address {address}" in updates[0]

        for line in fixes:  # verbatim, as an operator pastes them (the binary is the venv's)
            argv = shlex.split(line)
            argv[0] = temporal
            done = await asyncio.to_thread(subprocess.run, argv, env=plain, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"

        worker = Background.conveyor("worker", env=env, log=tmp_path / "worker.log")
        await worker.wait_for_text(f"Worker on {address}", 30)
    finally:
        if worker is not None:
            await worker.stop()
        await dev.stop()
        kill_processes_mentioning(str(tmp_path))
