"""Commands about registered pipelines: apply, get, pipelines, state, transition."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table
from temporalio.client import ScheduleRange, ScheduleSpec
from temporalio.service import RPCError, RPCStatusCode

from conveyor.cli.common import (
    OutputOption,
    UsageError,
    app,
    check_output,
    console,
    run_async,
    say,
    settings,
    who,
)
from conveyor.cli.render import coordinator_table, literal
from conveyor.cli.session import connect_existing
from conveyor.client import ConveyorError
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
        say(f"{data['name']}: version {version.version} ({what}, {version.digest[:19]}...)")
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
            console.print_json(json.dumps([{"name": name, **memo.as_read()} for name, memo in rows]))
            return 0
        table = Table("Pipeline", "Version", "Mode", "Applied", "By")
        for name, memo in rows:
            current = memo.current
            table.add_row(
                literal(name),
                literal(str(current.version) if current else "-"),
                literal(memo.mode.value if memo.mode else ""),
                literal(current.applied_at.isoformat()[:19] if current else ""),  # to the second
                literal((current.applied_by or "") if current else ""),
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
        coordinator = await session.client.pipeline_facts(pipeline)
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
        say(f"{pipeline}: transition into {stage} {word} by {result.changed_by}")
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


schedule_app = typer.Typer(help="A pipeline's Temporal Schedules: its cron (conveyor.schedule) and its poll.")
app.add_typer(schedule_app, name="schedule", rich_help_panel=PANEL)
KindOption = Annotated[str, typer.Option("--kind", help="schedule, poll or all")]
NoteOption = Annotated[str, typer.Option("--note", help="Why (kept on the schedule)")]


def _schedule_ids(pipeline: str, kind: str) -> list[str]:
    kinds = {"schedule": ["schedule"], "poll": ["poll"], "all": ["schedule", "poll"]}
    if kind not in kinds:
        raise UsageError(f"--kind '{kind}': use schedule, poll or all")
    return [f"{pipeline}/{k}" for k in kinds[kind]]


@schedule_app.command("list")
def list_schedules(
    pipeline: Annotated[str | None, typer.Argument(help="Only this pipeline's")] = None,
    output: OutputOption = "table",
) -> None:
    """List the pipelines' schedules (the same as `temporal schedule list`)."""
    check_output(output)

    async def go() -> int:
        session = await connect_existing(settings())
        rows: list[dict[str, Any]] = []
        async for entry in await session.client.temporal.list_schedules():
            name, _, kind = entry.id.rpartition("/")
            if kind not in ("schedule", "poll") or (pipeline and name != pipeline):
                continue
            info = entry.info
            spec = entry.schedule.spec if entry.schedule else None
            rows.append(
                {
                    "id": entry.id,
                    "pipeline": name,
                    "kind": kind,
                    "spec": _spec_text(spec),
                    "paused": bool(entry.schedule and entry.schedule.state.paused),
                    "nextRun": info.next_action_times[0].isoformat() if info and info.next_action_times else None,
                }
            )
        if output == "json":
            console.print_json(json.dumps(rows))
            return 0
        table = Table("Schedule", "Kind", "Spec", "Paused", "Next run")
        for row in rows:
            table.add_row(
                literal(row["id"]),
                literal(row["kind"]),
                literal(row["spec"]),
                "yes" if row["paused"] else "no",
                literal(row["nextRun"] or ""),
            )
        console.print(table)
        return 0

    run_async(go())


def _spec_text(spec: ScheduleSpec | None) -> str:
    """A cron-like line for calendars (the server stores a cron as one), `every ...` for intervals."""
    if spec is None:
        return ""

    def field(ranges: Sequence[ScheduleRange]) -> str:
        return ",".join(str(r.start) if r.start == r.end else f"{r.start}-{r.end}" for r in ranges) or "*"

    parts = [
        " ".join(field(f) for f in (c.minute, c.hour, c.day_of_month, c.month, c.day_of_week)) for c in spec.calendars
    ]
    parts += list(spec.cron_expressions) + [f"every {i.every}" for i in spec.intervals]
    zone = f" ({spec.time_zone_name})" if spec.time_zone_name and spec.calendars else ""
    return ", ".join(parts) + zone


def _pause(pipeline: str, kind: str, note: str, paused: bool) -> None:
    ids = _schedule_ids(pipeline, kind)

    async def go() -> int:
        session = await connect_existing(settings())
        done = 0
        for schedule in ids:
            handle = session.client.temporal.get_schedule_handle(schedule)
            try:
                if paused:
                    await handle.pause(note=note or f"paused by {who()}")
                else:
                    await handle.unpause(note=note or f"unpaused by {who()}")
            except RPCError as err:
                if err.status == RPCStatusCode.NOT_FOUND and kind == "all":
                    continue
                raise ConveyorError(f"schedule {schedule}: {err.message}") from None
            say(f"{schedule}: {'paused' if paused else 'running'}")
            done += 1
        if not done:
            raise ConveyorError(f"pipeline '{pipeline}' has no schedules (declare conveyor.schedule or conveyor.poll)")
        return 0

    run_async(go())


@schedule_app.command("pause")
def pause_schedule(pipeline: PipelineArgument, kind: KindOption = "all", note: NoteOption = "") -> None:
    """Pause a pipeline's schedules (no new scheduled or polled starts)."""
    _pause(pipeline, kind, note, paused=True)


@schedule_app.command("unpause")
def unpause_schedule(pipeline: PipelineArgument, kind: KindOption = "all", note: NoteOption = "") -> None:
    """Resume a pipeline's schedules."""
    _pause(pipeline, kind, note, paused=False)
