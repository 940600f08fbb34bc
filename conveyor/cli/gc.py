"""`conveyor gc`: remove what no retained execution can still use (conveyor.gc), now or on a daily schedule."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.text import Text
from temporalio.service import RPCError

from conveyor.cli.common import app, console, errors, fail, run_async, say, settings
from conveyor.cli.render import literal, plural
from conveyor.cli.session import connect_existing
from conveyor.gc import GcKind, GcReport, collect_garbage
from conveyor.gc_schedule import DEFAULT_CRON, SCHEDULE_ID, ensure_gc_schedule
from conveyor.stores.artifacts import store_from_settings

_NOUNS = {  # singular, plural
    GcKind.ARTIFACT: ("artifact", "artifacts"),
    GcKind.DOCUMENT: ("pipeline declaration", "pipeline declarations"),
    GcKind.LOG: ("log directory", "log directories"),
    GcKind.WORKSPACE: ("workspace", "workspaces"),
    GcKind.JOB: ("job document", "job documents"),
    GcKind.RECORD: ("attempt record", "attempt records"),
    GcKind.TEMPLATE: ("uploaded template", "uploaded templates"),
}


@app.command(rich_help_panel="Processes")
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be removed; remove nothing")] = False,
    schedule: Annotated[
        bool, typer.Option("--schedule", help=f"Create (or set the cron of) the daily schedule '{SCHEDULE_ID}' instead")
    ] = False,
    cron: Annotated[str, typer.Option(help="With --schedule: when it runs (5-field cron, UTC)")] = DEFAULT_CRON,
) -> None:
    """Remove artifacts, pipeline declarations, logs and left-over workspaces that no retained execution
    can still use (open ones, those closed within CONVEYOR_RETAIN_DAYS, rollback targets); nothing used
    within CONVEYOR_GC_MIN_AGE_MINUTES. Prints each removal and the bytes freed."""
    run_async(_schedule(cron) if schedule else _gc(dry_run))


async def _gc(dry_run: bool) -> int:
    config = settings()
    session = await connect_existing(config)
    store = await asyncio.to_thread(store_from_settings, config)
    report = await collect_garbage(session.client.temporal, config, store, dry_run=dry_run)
    print_report(report)
    return 0


def print_report(report: GcReport) -> None:
    verb = "would remove" if report.dry_run else "removed"
    for item in report.removed:
        console.print(Text.assemble(f"{verb} {item.kind.value} ", literal(item.name), f", {_bytes(item.size)}"))
    for note in report.notes:
        say(f"note: {note}", to=errors)
    counts = []
    for kind, (one, many) in _NOUNS.items():
        count = sum(1 for item in report.removed if item.kind == kind)
        counts.append(f"{count} {one if count == 1 else many}")
    freed = "would free" if report.dry_run else "freed"
    say(
        f"{'Dry run: ' if report.dry_run else ''}{verb} {', '.join(counts)}; {freed} {_bytes(report.bytes_freed)} "
        f"({plural(report.retained_executions, 'retained execution')})"
    )


def _bytes(size: int) -> str:
    """`1,234,567 bytes (1.2 MB)`: exact, and readable."""
    if size < 1024:
        return plural(size, "byte")
    value, units = size / 1024, ["KB", "MB", "GB", "TB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{size:,} bytes ({value:.1f} {units[0]})"


async def _schedule(cron: str) -> int:
    config = settings()
    session = await connect_existing(config)
    try:
        created = await ensure_gc_schedule(session.client.temporal, config.task_queue, cron)
    except RPCError as err:
        fail(f"--cron '{cron}': Temporal refused the schedule ({err.message}); write a 5-field cron", 2)
    what = "created" if created else "updated"
    say(f"{what} schedule '{SCHEDULE_ID}': garbage collection at '{cron}' (UTC) on task queue {config.task_queue}")
    return 0
