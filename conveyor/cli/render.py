"""Rich renderings of execution state: the table `status`, `watch` and `run` show."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text

from conveyor.model import ActionState, ExecutionState, StageState

STYLES = {
    "Succeeded": "green",
    "InProgress": "cyan",
    "Failed": "red",
    "Stopped": "yellow",
    "Stopping": "yellow",
    "Abandoned": "yellow",
    "Superseded": "magenta",
    "Cancelled": "magenta",
    "Skipped": "dim",
}


def status_text(status: str | None) -> Text:
    if status is None:
        return Text("-", style="dim")
    return Text(status, style=STYLES.get(status, ""))


def duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _detail(action: ActionState) -> str:
    if action.error is not None:
        return f"{action.error.code}: {action.error.message}"
    if action.token is not None:
        custom = action.resolved_configuration.get("CustomData")
        return f"waiting for approval{f' ({custom})' if custom else ''}"
    if action.approval is not None:
        who = action.approval.by or "unknown"
        return f"{action.approval.status} by {who}" + (f": {action.approval.summary}" if action.approval.summary else "")
    return action.summary or ""


def execution_table(state: ExecutionState) -> Group:
    header = Text.assemble(
        (f"{state.pipeline_name}/{state.execution_id}", "bold"),
        "  ",
        status_text(state.status.value),
        f"  {duration(state.started_at, state.finished_at)}",
        f"  v{state.pipeline_version}  trigger: {state.trigger.trigger_type.value}",
        f"  by {state.started_by}" if state.started_by else "",
    )
    table = Table(show_lines=False, expand=False, pad_edge=False)
    for column in ("Stage", "Action", "Status", "Time", "Details", "Approval token"):
        table.add_column(column, overflow="fold")
    for stage in state.stages:
        _add_stage(table, stage)
    parts: list[Text | Table] = [header, table]
    if state.status_summary:
        parts.append(Text(state.status_summary, style=STYLES.get(state.status.value, "")))
    for revision in state.source_revisions:
        parts.append(Text(f"source {revision.action_name}: {revision.revision_id} {revision.revision_summary or ''}"))
    return Group(*parts)


def _add_stage(table: Table, stage: StageState) -> None:
    attempt = f" (attempt {stage.attempt})" if stage.attempt > 1 else ""
    table.add_row(
        Text(stage.stage_name + attempt, style="bold"),
        "",
        status_text(stage.status.value if stage.status else None),
        duration(stage.started_at, stage.finished_at),
        "",
        "",
    )
    for action in sorted(stage.actions, key=lambda a: a.run_order):
        table.add_row(
            "",
            f"{action.run_order}. {action.action_name} [{action.provider}]",
            status_text(action.status.value if action.status else None),
            duration(action.started_at, action.finished_at),
            _detail(action),
            action.token or "",
        )
