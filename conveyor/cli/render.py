"""Rich renderings of execution state: the table `status`, `watch` and `run` show."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text

from conveyor.model import (
    ActionState,
    ConditionState,
    CoordinatorState,
    ExecutionSlot,
    ExecutionState,
    StageFact,
    StageState,
)

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
    "Errored": "red",
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
        request = action.approval_request
        progress = f" {len(action.approvals)}/{request.quorum}" if request and request.quorum > 1 else ""
        who = f" from {', '.join(request.approvers)}" if request and request.approvers else ""
        return f"waiting for approval{progress}{who}{f' ({custom})' if custom else ''}"
    if action.approval is not None:
        who = action.approval.by or "unknown"
        return f"{action.approval.status} by {who}" + (
            f": {action.approval.summary}" if action.approval.summary else ""
        )
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
    if state.stuck:
        parts.append(Text(state.stuck, style="bold red"))
    if state.waiting_for_stage:
        why = f": {state.waiting_reason}" if state.waiting_reason else ""
        parts.append(Text(f"waiting to enter stage {state.waiting_for_stage}{why}", style="yellow"))
    if state.status_summary:
        parts.append(Text(state.status_summary, style=STYLES.get(state.status.value, "")))
    for revision in state.source_revisions:
        parts.append(Text(f"source {revision.action_name}: {revision.revision_id} {revision.revision_summary or ''}"))
    parts += _approval_lines(state)
    return Group(*parts)


def _approval_lines(state: ExecutionState) -> list[Text]:
    """Every accepted decision (who, from where, when, why) and anything the approver snapshot could not resolve."""
    lines = []
    for stage in state.stages:
        for action in stage.actions:
            where = f"{stage.stage_name}/{action.action_name}"
            for d in action.approvals:
                status = f"Approved ({d.approvals}/{d.quorum})" if d.status == "Pending" else d.status
                why = f": {d.summary}" if d.summary else ""
                when = d.decided_at.strftime("%Y-%m-%d %H:%M:%S UTC")
                lines.append(Text(f"decision {where}: {status} by {d.by or 'unknown'} via {d.source} at {when}{why}"))
            request = action.approval_request
            for problem in request.problems if request else []:
                lines.append(Text(f"approvers of {where}: {problem}", style="yellow"))
    return lines


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
    for condition in stage.conditions:
        _add_condition(table, condition)
    for action in sorted(stage.actions, key=lambda a: a.run_order):
        table.add_row(
            "",
            f"{action.run_order}. {action.action_name} [{action.provider}]",
            status_text(action.status.value if action.status else None),
            duration(action.started_at, action.finished_at),
            _detail(action),
            action.token or "",
        )


def _add_condition(table: Table, condition: ConditionState) -> None:
    """A condition's row, then one per rule that ran (its summary says why it passed, failed or errored)."""
    kind = {"BEFORE_ENTRY": "beforeEntry", "ON_SUCCESS": "onSuccess", "ON_FAILURE": "onFailure"}.get(condition.kind)
    result = f" (result {condition.result})" if condition.result else ""
    by = f"overridden by {condition.overridden_by}" if condition.overridden_by else ""
    table.add_row(
        "",
        f"{kind or condition.kind} condition{result}",
        status_text(condition.status.value),
        duration(condition.started_at, condition.finished_at),
        by,
        "",
    )
    for rule in condition.rules:
        if rule.started_at is None:
            continue  # not evaluated: an earlier rule decided
        table.add_row(
            "",
            f"  rule {rule.rule_name} [{rule.provider}]",
            status_text(rule.status.value),
            duration(rule.started_at, rule.finished_at),
            rule.summary or "",
            "",
        )


def _fact(fact: StageFact | None) -> str:
    return f"{fact.execution_id} (v{fact.pipeline_version})" if fact else "-"


def _slot(slot: ExecutionSlot | None) -> str:
    return slot.execution_id if slot else "-"


def coordinator_table(state: CoordinatorState) -> Group:
    """CodePipeline's GetPipelineState, per stage."""
    current = state.current
    header = Text.assemble(
        (state.pipeline_name, "bold"),
        f"  mode {state.execution_mode}",
        f"  version {current.version}" if current else "  (not applied: executions started from files)",
    )
    table = Table()
    for column in ("Stage", "Inbound transition", "Held by", "Waiting", "Last succeeded", "Newest entered"):
        table.add_column(column, overflow="fold")
    names = list(current.stage_names) if current else []
    names += [s.stage_name for s in state.stages if s.stage_name not in names]
    locks = {s.stage_name: s for s in state.stages}
    for name in names:
        lock = locks.get(name)
        if lock is None:
            table.add_row(name, Text("enabled", style="green"), "-", "-", "-", "-")
            continue
        transition = lock.transition
        if transition.enabled:
            gate = Text("enabled", style="green")
        else:
            gate = Text(
                f"disabled by {transition.changed_by or 'unknown'}: {transition.reason or 'no reason given'}",
                style="yellow",
            )
        table.add_row(
            name,
            gate,
            _slot(lock.holder),
            ", ".join(w.execution_id for w in [*lock.waiting, *lock.held]) or "-",
            _fact(lock.last_succeeded),
            _fact(lock.newest_entered),
        )
    return Group(header, table)


def action_details_table(state: ExecutionState) -> Table:
    """Every action execution: resolved configuration, output variables, artifacts (`show --actions`)."""
    table = Table(show_lines=True)
    for column in ("Stage / action", "Status", "Resolved configuration", "Output variables", "Artifacts"):
        table.add_column(column, overflow="fold")
    for stage in state.stages:
        for action in stage.actions:
            if action.status is None:
                continue
            table.add_row(
                f"{stage.stage_name}/{action.action_name}",
                status_text(action.status.value),
                "\n".join(f"{k}={v}" for k, v in action.resolved_configuration.items()),
                "\n".join(f"{k}={v}" for k, v in action.output_variables.items()),
                "\n".join(f"{a.name} {a.digest[:19]}..." for a in action.output_artifacts),
            )
    return table
