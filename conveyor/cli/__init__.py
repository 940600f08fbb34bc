"""The `conveyor` command line (Typer + Rich)."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from conveyor.cli.render import execution_table, status_text
from conveyor.cli.session import Session, connect_existing, resolve_address, running_session
from conveyor.client import ConveyorClient, ConveyorError, ExecutionRef
from conveyor.connection import (
    DEFAULT_RETENTION_DAYS,
    TemporalUnavailableError,
    fix_commands,
    missing_search_attributes,
    retention,
)
from conveyor.devserver import EmbeddedServer, EmbeddedServerError
from conveyor.logging import configure_logging
from conveyor.model import ActionStatus, ExecutionState, ExecutionStatus, SourceRevisionOverride
from conveyor.settings import Settings, action_log_path
from conveyor.spec import json_schema
from conveyor.spec.declaration import Pipeline
from conveyor.spec.loading import load_pipeline, validate_file
from conveyor.spec.validation import DeclarationError

app = typer.Typer(
    name="conveyor",
    help="CodePipeline-style release pipelines as durable Temporal workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True, soft_wrap=True)

OutputOption = Annotated[str, typer.Option("--output", "-o", help="table or json")]
VarOption = Annotated[
    list[str] | None, typer.Option("--var", help="Pipeline variable override NAME=VALUE (repeatable)")
]
TokenOption = Annotated[
    str | None, typer.Option("--token", help="Client request token: a repeat with the same token starts nothing new")
]
RevisionOption = Annotated[
    list[str] | None,
    typer.Option("--source-revision", help="Source revision override ACTION=COMMIT_ID (repeatable)"),
]


class UsageError(ValueError):
    """Bad command-line input; exits 2 with the message."""


def print_error(message: str) -> None:
    errors.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True)


def fail(message: str, code: int = 1) -> NoReturn:
    print_error(message)
    raise typer.Exit(code)


async def _stop_on_sigterm(coro: Coroutine[Any, Any, int | None]) -> int | None:
    """SIGTERM (kill, docker stop, systemd) cancels the command like Ctrl-C does, so the embedded
    server and worker it started are stopped rather than orphaned."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await coro
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def run_async(coro: Coroutine[Any, Any, int | None]) -> None:
    """Run a command's coroutine; expected failures become a message and an exit code, never a traceback."""
    try:
        code = asyncio.run(_stop_on_sigterm(coro))
    except DeclarationError as err:
        for line in str(err).splitlines():
            errors.print(line, highlight=False, markup=False)
        raise typer.Exit(2) from None
    except UsageError as err:
        fail(str(err), 2)
    except (ConveyorError, TemporalUnavailableError, EmbeddedServerError) as err:
        fail(str(err))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except asyncio.CancelledError:  # SIGTERM
        raise typer.Exit(128 + signal.SIGTERM) from None
    except typer.Exit:
        raise
    except Exception as err:  # a bug, not bad input: still no traceback unless asked for
        if os.environ.get("CONVEYOR_DEBUG"):
            raise
        fail(f"unexpected error: {err!r} (set CONVEYOR_DEBUG=1 to see the traceback)")
    raise typer.Exit(code or 0)


def settings() -> Settings:
    return Settings.from_env()


def parse_pairs(values: list[str] | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} '{value}': write it as NAME=VALUE")
        out[key] = val
    return out


def parse_ref(text: str) -> ExecutionRef:
    """An execution reference, checked before anything connects: bad input is a usage error."""
    try:
        return ExecutionRef.parse(text)
    except ConveyorError as err:
        raise UsageError(str(err)) from None


def parse_revisions(values: list[str] | None) -> list[SourceRevisionOverride]:
    return [
        SourceRevisionOverride(action_name=k, revision_value=v)
        for k, v in parse_pairs(values, "--source-revision").items()
    ]


def check_overrides(pipeline: Pipeline, variables: dict[str, str], revisions: list[SourceRevisionOverride]) -> None:
    """Refuse what the execution would fail on at once (as CodePipeline refuses it at start)."""
    declared = {v.name for v in pipeline.variables}
    for name in variables:
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise UsageError(f"--var '{name}': the pipeline declares no such variable (it declares: {known})")
    sources = {a.name for a in pipeline.stages[0].actions if a.action_type_id.category.value == "Source"}
    for revision in revisions:
        if revision.action_name not in sources:
            raise UsageError(f"--source-revision '{revision.action_name}': not a Source action of the pipeline")


def who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def print_state(state: ExecutionState, output: str) -> None:
    if output == "json":
        console.print_json(state.model_dump_json())
    else:
        console.print(execution_table(state))


def check_output(output: str) -> None:
    if output not in ("table", "json"):
        raise UsageError(f"--output '{output}': use table or json")


def approval_instructions(state: ExecutionState, address: str, embedded: bool) -> list[str]:
    """The exact commands (conveyor and temporal) that decide each waiting approval."""
    lines: list[str] = []
    ref = ExecutionRef(state.pipeline_name, state.execution_id)
    env = f"TEMPORAL_ADDRESS={address} " if embedded else ""
    for stage in state.stages:
        for action in stage.actions:
            if action.token is None:
                continue
            payload = json.dumps(
                {"token": action.token, "actionName": action.action_name, "summary": "Looks good", "by": who()}
            )
            lines += [
                f"Approval waiting in stage {stage.stage_name}, action {action.action_name}. Approve with either:",
                f"  {env}conveyor approve {ref} {stage.stage_name} {action.action_name} --summary 'Looks good'",
                f"  temporal workflow update execute --address {address} "
                f"--workflow-id '{ref.stage_workflow_id(stage.stage_name)}' --name approve --input '{payload}'",
            ]
    return lines


# --- running pipelines ------------------------------------------------------------------------------


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Pipeline declaration (YAML or JSON)")],
    var: VarOption = None,
    token: TokenOption = None,
    source_revision: RevisionOption = None,
    worker: Annotated[
        bool | None, typer.Option("--worker/--no-worker", help="Run a worker in this process (default: when embedded)")
    ] = None,
) -> None:
    """Run a pipeline to its end, showing live progress; exit 0 on success, 1 otherwise.

    With no TEMPORAL_ADDRESS it starts an embedded Temporal server and a worker and stops them at the
    end. Ctrl-C stops them too; the execution keeps its state and continues when a worker next runs
    against the same data directory (`conveyor server` + `conveyor worker`).
    """
    run_async(_run(file, parse_pairs(var, "--var"), token, parse_revisions(source_revision), worker))


async def _run(
    file: Path,
    variables: dict[str, str],
    token: str | None,
    revisions: list[SourceRevisionOverride],
    with_worker: bool | None,
) -> int:
    pipeline, data = load_pipeline(file)  # bad input is reported before anything starts
    check_overrides(pipeline, variables, revisions)
    config = settings()
    configure_logging("WARNING", sdk_level="ERROR")
    async with running_session(config, with_worker=with_worker) as session:
        ref, started = await session.client.start(
            data, variables=variables, token=token, source_revisions=revisions, started_by=who(), source_name=str(file)
        )
        console.print(
            f"{'Started' if started else 'Already started'} execution [bold]{ref}[/bold] on {session.address}",
            soft_wrap=True,  # one line, whatever the width: scripts and people copy the id from it
        )
        try:
            state = await _follow(session, ref)
        except asyncio.CancelledError:
            console.print(
                f"[yellow]Interrupted.[/yellow] Execution {ref} keeps its state in {config.data_dir}; it continues "
                "when a worker runs again (`conveyor server` and `conveyor worker`)."
            )
            raise
    return 0 if state.status == ExecutionStatus.SUCCEEDED else 1


async def _follow(session: Session, ref: ExecutionRef) -> ExecutionState:
    shown: set[str] = set()
    with Live(console=console, refresh_per_second=4, transient=False) as live:

        def on_state(state: ExecutionState) -> None:
            live.update(execution_table(state))
            tokens = {a.token for s in state.stages for a in s.actions if a.token}
            if tokens - shown:
                shown.update(tokens)
                for line in approval_instructions(state, session.address, session.embedded is not None):
                    live.console.print(line, highlight=False, markup=False, soft_wrap=True)

        return await session.client.wait(ref, on_state)


@app.command()
def start(
    file: Annotated[Path, typer.Argument(help="Pipeline declaration (YAML or JSON)")],
    var: VarOption = None,
    token: TokenOption = None,
    source_revision: RevisionOption = None,
) -> None:
    """Start an execution and print its id (PIPELINE/EXECUTION-ID); needs a running worker."""
    run_async(_start(file, parse_pairs(var, "--var"), token, parse_revisions(source_revision)))


async def _start(
    file: Path, variables: dict[str, str], token: str | None, revisions: list[SourceRevisionOverride]
) -> int:
    pipeline, data = load_pipeline(file)
    check_overrides(pipeline, variables, revisions)
    session = await connect_existing(settings())
    ref, started = await session.client.start(
        data, variables=variables, token=token, source_revisions=revisions, started_by=who(), source_name=str(file)
    )
    if not started:
        errors.print(f"execution {ref} already exists for this token; nothing new was started")
    console.print(str(ref), highlight=False)
    return 0


# --- reading executions ------------------------------------------------------------------------------


@app.command()
def status(
    execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")],
    output: OutputOption = "table",
) -> None:
    """Show an execution's stages and actions (works with no worker, and after it finished)."""
    check_output(output)
    run_async(_status(execution, output))


async def _status(execution: str, output: str) -> int:
    ref = parse_ref(execution)
    session = await connect_existing(settings())
    print_state(await session.client.state(ref), output)
    return 0


@app.command()
def watch(execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")]) -> None:
    """Follow an execution live until it finishes; exit 0 if it succeeded."""
    run_async(_watch(execution))


async def _watch(execution: str) -> int:
    ref = parse_ref(execution)
    session = await connect_existing(settings())
    state = await _follow(session, ref)
    return 0 if state.status == ExecutionStatus.SUCCEEDED else 1


@app.command("list")
def list_executions(
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline's executions")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 20,
    output: OutputOption = "table",
) -> None:
    """List executions, newest first (works with no worker running)."""
    check_output(output)
    run_async(_list(pipeline, limit, output))


async def _list(pipeline: str | None, limit: int, output: str) -> int:
    session = await connect_existing(settings())
    rows = await session.client.list(pipeline, limit)
    if output == "json":
        console.print_json(
            json.dumps(
                [
                    {
                        "execution": str(r.ref),
                        "pipelineName": r.ref.pipeline_name,
                        "executionId": r.ref.execution_id,
                        "status": r.status,
                        "startedAt": r.started_at.isoformat() if r.started_at else None,
                        "closedAt": r.closed_at.isoformat() if r.closed_at else None,
                        "temporalStatus": r.temporal_status,
                    }
                    for r in rows
                ]
            )
        )
        return 0
    table = Table("Execution", "Status", "Started", "Temporal")
    for r in rows:
        started = r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else ""
        table.add_row(str(r.ref), status_text(r.status), started, r.temporal_status)
    console.print(table)
    return 0


@app.command()
def logs(
    execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")],
    stage: Annotated[str, typer.Argument()],
    action: Annotated[str, typer.Argument()],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the action ends")] = False,
) -> None:
    """Print an action's log (from the data directory the workers write to)."""
    run_async(_logs(execution, stage, action, follow))


async def _logs(execution: str, stage: str, action: str, follow: bool) -> int:
    config = settings()
    ref = parse_ref(execution)
    path = action_log_path(config.logs_dir, ref.pipeline_name, ref.execution_id, stage, action)
    session = await connect_existing(config) if follow else None
    position = 0
    while True:
        if path.exists():
            with path.open("rb") as handle:
                handle.seek(position)
                chunk = handle.read()
                position += len(chunk)
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
        if session is None:
            if not path.exists():
                raise ConveyorError(
                    f"no log for {ref} {stage}/{action} in {config.logs_dir}: the action has not started, "
                    "or it ran on a worker with another CONVEYOR_DATA_DIR"
                )
            return 0
        if await _action_finished(session.client, ref, stage, action):
            follow_once_more = path.exists() and path.stat().st_size > position
            if not follow_once_more:
                return 0
        await asyncio.sleep(0.5)


async def _action_finished(client: ConveyorClient, ref: ExecutionRef, stage: str, action: str) -> bool:
    state = await client.state(ref)
    if state.status.is_terminal:
        return True
    stage_state = state.stage(stage)
    if stage_state is None:
        raise ConveyorError(f"pipeline '{ref.pipeline_name}' has no stage '{stage}'")
    found = next((a for a in stage_state.actions if a.action_name == action), None)
    if found is None:
        raise ConveyorError(f"stage '{stage}' has no action '{action}'")
    return found.status in (ActionStatus.SUCCEEDED, ActionStatus.FAILED, ActionStatus.ABANDONED)


# --- approvals ----------------------------------------------------------------------------------------


def _decide(
    execution: str, stage: str, action: str, summary: str, token: str | None, by: str | None, approve: bool
) -> None:
    async def decide() -> int:
        ref = parse_ref(execution)
        session = await connect_existing(settings())
        result = await session.client.decide(
            ref, stage, action, approve=approve, summary=summary, token=token, by=by or who()
        )
        console.print(f"{result.status} {execution} {stage}/{action} by {result.by}", highlight=False)
        return 0

    run_async(decide())


SummaryOption = Annotated[str, typer.Option("--summary", "-s", help="Why (at most 512 characters)")]
ApprovalTokenOption = Annotated[str | None, typer.Option("--token", help="Approval token (default: the current one)")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who decides (default: your user name)")]


@app.command()
def approve(
    execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")],
    stage: Annotated[str, typer.Argument()],
    action: Annotated[str, typer.Argument()],
    summary: SummaryOption = "",
    token: ApprovalTokenOption = None,
    by: ByOption = None,
) -> None:
    """Approve a waiting Manual approval."""
    _decide(execution, stage, action, summary, token, by, approve=True)


@app.command()
def reject(
    execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")],
    stage: Annotated[str, typer.Argument()],
    action: Annotated[str, typer.Argument()],
    summary: SummaryOption = "",
    token: ApprovalTokenOption = None,
    by: ByOption = None,
) -> None:
    """Reject a waiting Manual approval (the action, its stage and the execution fail)."""
    _decide(execution, stage, action, summary, token, by, approve=False)


# --- declarations --------------------------------------------------------------------------------------


@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Pipeline declaration (YAML or JSON)")]) -> None:
    """Check a declaration; every problem is listed with its path and what to change."""

    async def check() -> int:
        report = validate_file(file)
        for warning in report.warnings:
            errors.print(f"warning: {warning.render(str(file))}", highlight=False, markup=False)
        if not report.ok:
            raise DeclarationError(str(file), report.errors)
        assert report.pipeline is not None
        actions = sum(len(s.actions) for s in report.pipeline.stages)
        console.print(f"{file}: valid ({len(report.pipeline.stages)} stages, {actions} actions)", highlight=False)
        return 0

    run_async(check())


@app.command()
def schema() -> None:
    """Print the JSON Schema of the declaration (for editors)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


# --- long-lived processes -----------------------------------------------------------------------------


@app.command()
def server(
    port: Annotated[int, typer.Option(help="gRPC port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port")] = 8233,
    headless: Annotated[bool, typer.Option(help="No Temporal UI")] = False,
    retention_days: Annotated[int, typer.Option(help="Keep closed executions this many days")] = DEFAULT_RETENTION_DAYS,
) -> None:
    """Run the embedded Temporal server (SQLite in the data directory) until Ctrl-C."""
    if retention_days < 1:
        fail("--retention-days must be at least 1", 2)

    async def serve() -> int:
        config = settings()
        embedded = EmbeddedServer(config, port=port, ui_port=ui_port, headless=headless, retention_days=retention_days)
        await embedded.start()
        try:
            console.print(f"Temporal server: {embedded.address} (namespace {config.temporal_namespace})")
            if embedded.ui_url:
                console.print(f"Temporal UI:     {embedded.ui_url}")
            console.print(f"Data:            {embedded.db_file} (retention {retention_days} days)")
            console.print("Stop with Ctrl-C.")
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(embedded.stop)
        return 0

    run_async(serve())


@app.command()
def worker(
    min_retention_days: Annotated[
        int, typer.Option(help="Refuse a namespace that forgets executions sooner than this")
    ] = DEFAULT_RETENTION_DAYS,
) -> None:
    """Run a worker (the same as `python worker.py`) until Ctrl-C."""
    run_async(_worker(min_retention_days))


async def _worker(min_retention_days: int) -> int:
    from conveyor.worker import run_worker

    config = settings()
    configure_logging(os.environ.get("CONVEYOR_LOG_LEVEL", "INFO"), json=bool(os.environ.get("CONVEYOR_LOG_JSON")))
    session = await connect_existing(config)
    temporal = session.client.temporal
    if config.temporal_address:
        missing = await missing_search_attributes(temporal)
        short = (await retention(temporal)).days < min_retention_days
        if missing or short:
            errors.print("The namespace is not ready for Conveyor. Fix it with:", highlight=False)
            for line in fix_commands(
                session.address, config.temporal_namespace, missing, min_retention_days if short else None
            ):
                errors.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
            return 1
    console.print(
        f"Worker on {resolve_address(config)} namespace {config.temporal_namespace} task queue {config.task_queue}"
    )
    await run_worker(temporal, config)
    return 0


def main(argv: list[str] | None = None) -> NoReturn:
    try:
        app(args=argv, prog_name="conveyor")
        code: int = 0
    except UsageError as err:  # raised while reading options, before run_async could report it
        print_error(str(err))
        code = 2
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:
            errors.print(str(exit_.code), highlight=False, markup=False)
            code = 1
    _exit_now(code)


def _exit_now(code: int) -> NoReturn:
    """Exit without interpreter teardown. The Temporal client's Rust threads can call into a
    finalizing interpreter and abort it (temporalio/sdk-python#300: "PyGILState_Release: thread
    state ... must be current when releasing"), turning a finished command into SIGABRT or SIGSEGV.
    Everything a command starts (embedded server, worker) is stopped before this point."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed pipe: nothing more can be said
            pass
    os._exit(code)
