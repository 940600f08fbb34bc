"""Commands about registered pipelines: apply, get, pipelines, state, transition."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.table import Table

from conveyor.cli.common import (
    OutputOption,
    UsageError,
    app,
    check_output,
    console,
    run_async,
    settings,
    who,
)
from conveyor.cli.render import coordinator_table
from conveyor.cli.session import connect_existing
from conveyor.spec.loading import load_pipeline

PANEL = "Pipelines"
PipelineArgument = Annotated[str, typer.Argument(help="The pipeline's name")]


@app.command(rich_help_panel=PANEL)
def apply(file: Annotated[Path, typer.Argument(help="Pipeline declaration (YAML or JSON)")]) -> None:
    """Register a pipeline, or update it: every change gets the next version number."""

    async def go() -> int:
        _, data = load_pipeline(file)
        session = await connect_existing(settings())
        result = await session.client.apply(data, by=who())
        version = result.version
        what = "applied" if result.changed else "unchanged"
        console.print(f"{data['name']}: version {version.version} ({what}, {version.digest[:19]}...)", highlight=False)
        return 0

    run_async(go())


@app.command(rich_help_panel=PANEL)
def get(
    pipeline: PipelineArgument,
    version: Annotated[int | None, typer.Option("--version", help="This version (default: the current one)")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="yaml or json")] = "yaml",
) -> None:
    """Print a registered pipeline's declaration (any version)."""
    if output not in ("yaml", "json"):
        raise UsageError(f"--output '{output}': use yaml or json")

    async def go() -> int:
        session = await connect_existing(settings())
        _, declaration = await session.client.registered(pipeline, version)
        if output == "json":
            sys.stdout.write(json.dumps({"pipeline": declaration}, indent=2) + "\n")
        else:
            sys.stdout.write(yaml.safe_dump(declaration, sort_keys=False))
        return 0

    run_async(go())


@app.command(rich_help_panel=PANEL)
def pipelines(output: OutputOption = "table") -> None:
    """List registered pipelines with their current version and execution mode."""
    check_output(output)

    async def go() -> int:
        session = await connect_existing(settings())
        rows = await session.client.pipelines()
        if output == "json":
            console.print_json(json.dumps([{"name": name, **memo} for name, memo in rows]))
            return 0
        table = Table("Pipeline", "Version", "Mode", "Applied", "By")
        for name, memo in rows:
            current = memo.get("current") or {}
            table.add_row(
                name,
                str(current.get("version", "-")),
                str(memo.get("mode", "")),
                str(current.get("appliedAt", ""))[:19],
                str(current.get("appliedBy") or ""),
            )
        console.print(table)
        return 0

    run_async(go())


@app.command(rich_help_panel=PANEL)
def state(pipeline: PipelineArgument, output: OutputOption = "table") -> None:
    """Per stage: inbound transition, lock holder, waiting executions, last success, newest entry."""
    check_output(output)

    async def go() -> int:
        session = await connect_existing(settings())
        coordinator = await session.client.pipeline_state(pipeline)
        if output == "json":
            console.print_json(coordinator.model_dump_json())
        else:
            console.print(coordinator_table(coordinator))
        return 0

    run_async(go())


transition_app = typer.Typer(help="Close or open the inbound transition of a stage.", no_args_is_help=True)
app.add_typer(transition_app, name="transition", rich_help_panel=PANEL)
ReasonOption = Annotated[str, typer.Option("--reason", "-r", help="Why (shown in `conveyor state`)")]


def _set_transition(pipeline: str, stage: str, reason: str, enabled: bool) -> None:
    async def go() -> int:
        session = await connect_existing(settings())
        result = await session.client.set_transition(pipeline, stage, enabled=enabled, reason=reason, by=who())
        word = "enabled" if result.enabled else "disabled"
        console.print(f"{pipeline}: transition into {stage} {word} by {result.changed_by}", highlight=False)
        return 0

    run_async(go())


@transition_app.command("disable")
def disable_transition(pipeline: PipelineArgument, stage: str, reason: ReasonOption = "") -> None:
    """Executions wait in front of the stage until it is enabled again."""
    _set_transition(pipeline, stage, reason, enabled=False)


@transition_app.command("enable")
def enable_transition(pipeline: PipelineArgument, stage: str, reason: ReasonOption = "") -> None:
    """Let executions into the stage again (SUPERSEDED: the latest waiting; QUEUED: in arrival order)."""
    _set_transition(pipeline, stage, reason, enabled=True)
