"""What every `conveyor` command shares: the Typer app, consoles, options, input parsing and the
runner that turns expected failures into a message and an exit code."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
from collections.abc import Coroutine
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

from conveyor.cli.render import execution_table, literal
from conveyor.client import ConveyorError, ExecutionRef, UpdateNotApplied
from conveyor.connection import (
    TemporalUnavailableError,
)
from conveyor.devserver import EmbeddedServerError
from conveyor.model import ExecutionState, SourceRevisionOverride
from conveyor.settings import Settings, SettingsError
from conveyor.spec.declaration import Pipeline
from conveyor.spec.validation import DeclarationError

app = typer.Typer(
    name="conveyor",
    help="CodePipeline-style release pipelines as durable Temporal workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# Output to a pipe or a file is this wide (unless COLUMNS says otherwise): piped tables never fold or
# cut execution ids, approval tokens or messages at 80 columns.
PIPED_WIDTH = 4096


def make_console(*, stderr: bool = False, soft_wrap: bool = False) -> Console:
    made = Console(stderr=stderr, soft_wrap=soft_wrap)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = PIPED_WIDTH
    return made


console = make_console()
errors = make_console(stderr=True, soft_wrap=True)

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


# Exit code of a command whose update was sent but not yet applied: not a failure, it may still apply.
NOT_YET_APPLIED = 3


class UsageError(ValueError):
    """Bad command-line input; exits 2 with the message."""


def say(text: str, style: str = "", *, to: Console | None = None) -> None:
    """Print one message that may hold user text (names, reasons, summaries), exactly as written."""
    (to or console).print(literal(text, style))


def print_error(message: str) -> None:
    errors.print(Text.assemble(("error:", "red"), " ", literal(message)))


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
            say(line, to=errors)
        raise typer.Exit(2) from None
    except (UsageError, SettingsError) as err:
        fail(str(err), 2)
    except UpdateNotApplied as err:  # no "error:": saying it failed would be false
        say(str(err), to=errors)
        raise typer.Exit(NOT_YET_APPLIED) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:  # a path that bypassed the client's update deadline
        say(
            "sent, not yet known to be applied: it applies when a worker runs, unless the Temporal server "
            "restarts first",
            to=errors,
        )
        raise typer.Exit(NOT_YET_APPLIED) from None
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
    try:
        return Settings.from_env()
    except SettingsError as err:
        raise UsageError(str(err)) from None


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
