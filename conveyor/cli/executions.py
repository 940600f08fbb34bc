"""Commands that run and read executions: run, start, status, watch, list, show, logs, approve, reject."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table
from rich.text import Text
from temporalio.service import RPCError

from conveyor.cli.common import (
    OutputOption,
    RevisionOption,
    TokenOption,
    UsageError,
    VarOption,
    app,
    approval_instructions,
    check_output,
    check_overrides,
    console,
    errors,
    parse_pairs,
    parse_ref,
    parse_revisions,
    print_state,
    run_async,
    say,
    settings,
    who,
)
from conveyor.cli.render import (
    action_details_table,
    execution_table,
    literal,
    status_text,
    variables_text,
)
from conveyor.cli.session import Session, connect_existing, running_session
from conveyor.client import ConveyorClient, ConveyorError, ExecutionRef
from conveyor.connections import beside
from conveyor.interface import ApprovalStatus, ConditionKind, RetryMode
from conveyor.log_follow import follow_log, log_finished, log_owner
from conveyor.logging import configure_logging
from conveyor.model import ExecutionState, ExecutionStatus, SourceRevisionOverride
from conveyor.presence import WorkerPresence, worker_presence
from conveyor.spec.declaration import Pipeline
from conveyor.spec.loading import load_pipeline
from conveyor.spec.validation import parse_pipeline
from conveyor.stores.archive import ArtifactError
from conveyor.stores.logs import ActionLogName, ActionLogReader, action_log_reader
from conveyor.stores.s3 import StoreUnavailableError
from conveyor.text import duration

# --- running pipelines ------------------------------------------------------------------------------


TargetArgument = Annotated[str, typer.Argument(help="A declaration file (YAML or JSON), or a registered pipeline")]


def is_file_target(target: str) -> bool:
    return Path(target).suffix.lower() in (".yaml", ".yml", ".json") or Path(target).is_file()


async def resolve_target(target: str, client: ConveyorClient | None) -> tuple[Pipeline, dict[str, Any], str]:
    """The pipeline to start: a one-off from a file, or the current version of a registered one."""
    if is_file_target(target):
        pipeline, data = load_pipeline(Path(target))
        return pipeline, data, target
    assert client is not None
    version, data = await client.registered(target)
    source = f"{target} (version {version.version})"
    return parse_pipeline(data, source), data, source


@app.command(rich_help_panel="Executions")
def run(
    target: TargetArgument,
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
    run_async(_run(target, parse_pairs(var, "--var"), token, parse_revisions(source_revision), worker))


async def _run(
    target: str,
    variables: dict[str, str],
    token: str | None,
    revisions: list[SourceRevisionOverride],
    with_worker: bool | None,
) -> int:
    if is_file_target(target):  # bad input is reported before anything starts
        pipeline, data, source = await resolve_target(target, None)
        check_overrides(pipeline, variables, revisions)
    config = settings()
    if is_file_target(target) and config.connections_file is None:
        # The worker this command brings up clones Git-hosted sources as the connections.yaml beside the file says.
        config = config.model_copy(update={"connections_file": beside(Path(target))})
    configure_logging("WARNING", sdk_level="ERROR")
    async with running_session(config, with_worker=with_worker) as session:
        if not is_file_target(target):
            pipeline, data, source = await resolve_target(target, session.client)
            check_overrides(pipeline, variables, revisions)
        in_process_worker = with_worker if with_worker is not None else session.embedded is not None
        (ref, started), presence = await asyncio.gather(
            session.client.start(
                data, variables=variables, token=token, source_revisions=revisions, started_by=who(), source_name=source
            ),
            asyncio.sleep(0) if in_process_worker else _presence(session),
        )
        console.print(
            Text.assemble(
                f"{'Started' if started else 'Already started'} execution ",
                literal(str(ref), "bold"),
                literal(f" on {session.address}"),
            ),
            soft_wrap=True,  # one line, whatever the width: scripts and people copy the id from it
        )
        _warn_if_unattended(presence)
        try:
            state = await _follow(session, ref)
        except asyncio.CancelledError:
            console.print(
                Text.assemble(
                    ("Interrupted.", "yellow"),
                    literal(
                        f" Execution {ref} keeps its state in {config.data_dir}; it continues "
                        "when a worker runs again (`conveyor server` and `conveyor worker`)."
                    ),
                )
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
                    live.console.print(literal(line), soft_wrap=True)

        return await session.client.wait(ref, on_state)


@app.command(rich_help_panel="Executions")
def start(
    target: TargetArgument,
    var: VarOption = None,
    token: TokenOption = None,
    source_revision: RevisionOption = None,
) -> None:
    """Start an execution of a registered pipeline (its current version) or of a declaration file,
    and print its id (PIPELINE/EXECUTION-ID). A worker runs it; with none polling, it waits (with a warning)."""
    run_async(_start(target, parse_pairs(var, "--var"), token, parse_revisions(source_revision)))


async def _start(
    target: str, variables: dict[str, str], token: str | None, revisions: list[SourceRevisionOverride]
) -> int:
    if is_file_target(target):
        pipeline, data, source = await resolve_target(target, None)
        check_overrides(pipeline, variables, revisions)
    session = await connect_existing(settings())
    if not is_file_target(target):
        pipeline, data, source = await resolve_target(target, session.client)
        check_overrides(pipeline, variables, revisions)
    (ref, started), presence = await asyncio.gather(  # the check costs no latency: it runs beside the start
        session.client.start(
            data, variables=variables, token=token, source_revisions=revisions, started_by=who(), source_name=source
        ),
        _presence(session),
    )
    if not started:
        say(f"execution {ref} already exists for this token; nothing new was started", to=errors)
    _warn_if_unattended(presence)
    say(str(ref))
    return 0


async def _presence(session: Session) -> WorkerPresence | None:
    """Whether a worker polls the executions' task queue; None when the server will not say."""
    try:
        client = session.client
        return await worker_presence(client.temporal, client.settings.task_queue, client.poll_window)
    except RPCError:
        return None


def _warn_if_unattended(presence: WorkerPresence | None) -> None:
    if presence is not None and not presence.recent:
        say(f"warning: {presence.unattended()}", to=errors)


# --- reading executions ------------------------------------------------------------------------------


@app.command(rich_help_panel="Executions")
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


@app.command(rich_help_panel="Executions")
def watch(execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")]) -> None:
    """Follow an execution live until it finishes; exit 0 if it succeeded."""
    run_async(_watch(execution))


async def _watch(execution: str) -> int:
    ref = parse_ref(execution)
    session = await connect_existing(settings())
    state = await _follow(session, ref)
    return 0 if state.status == ExecutionStatus.SUCCEEDED else 1


@app.command("list", rich_help_panel="Executions")
def list_executions(
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline's executions")] = None,
    succeeded_in: Annotated[
        str | None, typer.Option("--succeeded-in", help="Only executions that succeeded in this stage")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first")] = 20,
    output: OutputOption = "table",
) -> None:
    """List executions, newest first, with trigger, status, duration, source revision and version
    (works with no worker running)."""
    check_output(output)
    run_async(_list(pipeline, succeeded_in, limit, output))


async def _list(pipeline: str | None, succeeded_in: str | None, limit: int, output: str) -> int:
    session = await connect_existing(settings())
    rows = await session.client.list(pipeline, limit, succeeded_in=succeeded_in)
    if output == "json":
        console.print_json(json.dumps([row.model_dump(mode="json") for row in rows]))
        return 0
    table = Table()
    table.add_column("Execution", no_wrap=True)  # copied whole into other commands
    for column in ("Status", "Trigger", "Started", "Duration", "Source revision", "Version"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            literal(row.execution),
            status_text(row.status) + (literal(f"\n{row.note}", style="yellow") if row.note else ""),
            literal(row.trigger or ""),
            row.started_at.strftime("%Y-%m-%d %H:%M:%S") if row.started_at else "",
            duration(row.started_at, row.finished_at) if row.finished_at else "running",
            literal(", ".join(row.source_revisions)),
            str(row.pipeline_version or ""),
        )
    console.print(table)
    return 0


@app.command(rich_help_panel="Executions")
def show(
    execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")],
    actions: Annotated[bool, typer.Option("--actions", help="Every action execution in detail")] = False,
    output: OutputOption = "table",
) -> None:
    """An execution with its variables and source revisions; --actions adds every action execution
    with its resolved configuration, output variables and artifacts."""
    check_output(output)
    ref = parse_ref(execution)

    async def go() -> int:
        session = await connect_existing(settings())
        execution_state = await session.client.state(ref)
        if output == "json":
            console.print_json(execution_state.model_dump_json())
            return 0
        console.print(execution_table(execution_state))
        if execution_state.variables:
            console.print(variables_text(execution_state))
        if actions:
            console.print(action_details_table(execution_state))
        return 0

    run_async(go())


@app.command("stop", rich_help_panel="Executions")
def stop_execution(
    execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (shown in status)")] = "",
    abandon: Annotated[
        bool, typer.Option("--abandon", help="Cancel running actions now (kill their processes)")
    ] = False,
    by: Annotated[str | None, typer.Option("--by", help="Who stops it (default: your user name)")] = None,
) -> None:
    """Stop an execution: running actions finish and nothing new starts; --abandon cancels them at once.
    A stop that waits can be escalated with --abandon."""
    ref = parse_ref(execution)

    async def go() -> int:
        session = await connect_existing(settings())
        state = await session.client.stop(ref, reason=reason, abandon=abandon, by=by or who())
        say(f"{ref}: {state.status.value}")
        return 0

    run_async(go())


@app.command("retry", rich_help_panel="Executions")
def retry_stage(
    execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")],
    stage: Annotated[str, typer.Argument(help="The failed stage")],
    mode: Annotated[str, typer.Option("--mode", help="failed-actions or all-actions")] = "failed-actions",
    by: Annotated[str | None, typer.Option("--by", help="Who retries (default: your user name)")] = None,
) -> None:
    """Retry the failed stage of an execution (within its retry window); the execution resumes."""
    ref = parse_ref(execution)
    modes = {"failed-actions": RetryMode.FAILED_ACTIONS, "all-actions": RetryMode.ALL_ACTIONS}
    if mode not in modes:
        raise UsageError(f"--mode '{mode}': use failed-actions or all-actions")

    async def go() -> int:
        session = await connect_existing(settings())
        state = await session.client.retry(ref, stage, mode=modes[mode], by=by or who())
        say(f"{ref}: {state.status.value} ({state.status_summary})")
        return 0

    run_async(go())


@app.command("override-condition", rich_help_panel="Executions")
def override_condition(
    execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")],
    stage: Annotated[str, typer.Argument(help="The stage whose condition to override")],
    condition: Annotated[str, typer.Argument(help="before-entry or on-success")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why (recorded)")] = "",
    by: Annotated[str | None, typer.Option("--by", help="Who overrides (default: your user name)")] = None,
) -> None:
    """Let an execution past a stage condition: one that waits (a deployment window) or a failed
    beforeEntry condition (within the retry window)."""
    ref = parse_ref(execution)
    kinds = {"before-entry": ConditionKind.BEFORE_ENTRY, "on-success": ConditionKind.ON_SUCCESS}
    if condition not in kinds:
        raise UsageError(f"condition '{condition}': use before-entry or on-success")

    async def go() -> int:
        session = await connect_existing(settings())
        state = await session.client.override_condition(ref, stage, kinds[condition], reason=reason, by=by or who())
        say(f"{ref}: {state.status.value}")
        return 0

    run_async(go())


@app.command("rollback", rich_help_panel="Executions")
def rollback_stage(
    pipeline: Annotated[str, typer.Argument(help="A registered pipeline")],
    stage: Annotated[str, typer.Argument(help="The stage to roll back")],
    to: Annotated[str, typer.Option("--to", help="EXECUTION-ID that succeeded in the stage (its inputs are reused)")],
    by: Annotated[str | None, typer.Option("--by", help="Who rolls back (default: your user name)")] = None,
) -> None:
    """Start a ROLLBACK execution that re-runs STAGE with the artifacts, variables and source revisions
    of an earlier execution that succeeded in it (CodePipeline's rollback rules apply)."""
    target = to.rsplit("/", 1)[-1]

    async def go() -> int:
        session = await connect_existing(settings())
        ref = await session.client.rollback(pipeline, stage, target, by=by or who())
        say(str(ref))
        return 0

    run_async(go())


@app.command(rich_help_panel="Executions")
def logs(
    execution: Annotated[str, typer.Argument(help="PIPELINE/EXECUTION-ID")],
    stage: Annotated[str, typer.Argument()],
    action: Annotated[str, typer.Argument()],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the action ends")] = False,
) -> None:
    """Print an action's log (from the store the workers write to: the data directory or CONVEYOR_ARTIFACT_STORE)."""
    run_async(_logs(execution, stage, action, follow))


async def _logs(execution: str, stage: str, action: str, follow: bool) -> int:
    config = settings()
    ref = parse_ref(execution)
    reader = action_log_reader(config, ActionLogName(ref.pipeline_name, ref.execution_id, stage, action))
    if not follow:
        _print_bytes(await asyncio.to_thread(_read_log, reader, ref, stage, action))
        if not await asyncio.to_thread(reader.found):
            configured = "CONVEYOR_ARTIFACT_STORE" if config.artifact_store else "CONVEYOR_DATA_DIR"
            raise ConveyorError(
                f"no log for {ref} {stage}/{action} in {reader.where}: the action has not started, "
                f"or it ran on a worker with another {configured}"
            )
        return 0
    session = await connect_existing(config)
    try:
        async for chunk in follow_log(reader, lambda: _action_finished(session.client, ref, stage, action)):
            _print_bytes(chunk)
    except (ArtifactError, StoreUnavailableError) as exc:
        raise ConveyorError(f"cannot read the log of {ref} {stage}/{action}: {exc}") from None
    return 0


def _read_log(reader: ActionLogReader, ref: ExecutionRef, stage: str, action: str) -> bytes:
    try:
        return reader.read_new()
    except (ArtifactError, StoreUnavailableError) as exc:
        raise ConveyorError(f"cannot read the log of {ref} {stage}/{action}: {exc}") from None


def _print_bytes(chunk: bytes) -> None:
    if chunk:
        sys.stdout.write(chunk.decode("utf-8", "replace"))
        sys.stdout.flush()


async def _action_finished(client: ConveyorClient, ref: ExecutionRef, stage: str, action: str) -> bool:
    """Whether the action (or, for `<Action>.rollback`, its compensation) has ended."""
    state, found = await client.action_state(ref, stage, log_owner(action))
    return log_finished(state, found, action)


# --- approvals ----------------------------------------------------------------------------------------


def _decide(
    execution: str, stage: str, action: str, summary: str, token: str | None, by: str | None, approve: bool
) -> None:
    async def decide() -> int:
        ref = parse_ref(execution)
        session = await connect_existing(settings())
        result = await session.client.decide(
            ref, stage, action, approve=approve, summary=summary, token=token, by=by or who(), source="cli"
        )
        progress = f" ({result.approvals}/{result.quorum} approvals)" if result.status == ApprovalStatus.PENDING else ""
        say(f"{result.status}{progress} {execution} {stage}/{action} by {result.by}")
        return 0

    run_async(decide())


SummaryOption = Annotated[str, typer.Option("--summary", "-s", help="Why (at most 512 characters)")]
ApprovalTokenOption = Annotated[str | None, typer.Option("--token", help="Approval token (default: the current one)")]
ByOption = Annotated[str | None, typer.Option("--by", help="Who decides (default: your user name)")]


@app.command(rich_help_panel="Executions")
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


@app.command(rich_help_panel="Executions")
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
