"""Rich renderings of execution state: the table `status`, `show`, `watch` and `run` show, in words.

Every piece of user or command text (an action's output or error, a decision's summary, a variable, a
reason) goes through `literal`: a rich `Text`, never parsed for markup or emoji codes, with terminal
control characters shown escaped, so a command's output can neither break the table nor recolour,
retitle or hyperlink the operator's terminal.
"""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Group
from rich.table import Table
from rich.text import Text

from conveyor.bake import bake_summary, wave_line
from conveyor.identities import who_may_decide
from conveyor.interface import ApprovalStatus
from conveyor.model import (
    ActionState,
    ActionStatus,
    ApprovalRequest,
    BakeStatus,
    CompensationStatus,
    ConditionState,
    ConditionStatus,
    CoordinatorState,
    ExecutionSlot,
    ExecutionState,
    StageAttempt,
    StageFact,
    StageState,
    StageStatus,
    TransitionState,
)
from conveyor.settings import compensation_log_name
from conveyor.text import duration, utc_time, window_opening

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
LOUD = "bold red"
BAKE_STYLES = {BakeStatus.BAKING: "cyan", BakeStatus.PASSED: "green", BakeStatus.FAILED: "red"}
WAITING = "yellow"

# --- literal text ---------------------------------------------------------------------------------

_KEPT_CONTROLS = "\n\t"
# C0 controls (ESC starts colour, cursor and OSC hyperlink/title sequences), DEL, C1 controls (8-bit CSI).
_CONTROL_ESCAPES = {
    code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)] if chr(code) not in _KEPT_CONTROLS
}
# Bidirectional overrides and isolates: they reorder what the terminal shows.
_BIDI_ESCAPES = {code: f"\\u{code:04x}" for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]}
_VISIBLE = str.maketrans(_CONTROL_ESCAPES | _BIDI_ESCAPES)


def visible_controls(text: str) -> str:
    """`text` with every terminal control character spelled out (`\\x1b`), newlines and tabs kept."""
    return text.replace("\r\n", "\n").translate(_VISIBLE)


def literal(text: str, style: str = "") -> Text:
    """Untrusted text (a command's output, a person's words) as rich shows it: exactly as written."""
    return Text(visible_controls(text), style=style)


def lines(parts: list[Text]) -> Text:
    return Text("\n").join(parts)


# --- small pieces -----------------------------------------------------------------------------------


def status_text(status: str | None) -> Text:
    if status is None:
        return Text("-", style="dim")
    return literal(status, STYLES.get(status, ""))


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def logs_command(state: ExecutionState, stage: str, action: str) -> str:
    return f"conveyor logs {state.pipeline_name}/{state.execution_id} {stage} {action}"


# --- the execution ----------------------------------------------------------------------------------


def execution_table(state: ExecutionState) -> Group:
    table = Table(show_lines=False, expand=False, pad_edge=False)
    for column in ("Stage", "Action", "Status", "Time", "Details"):
        table.add_column(column, overflow="fold")
    table.add_column("Approval token", no_wrap=True)  # copied whole into commands
    for stage in state.stages:
        _add_stage(table, state, stage)
    return Group(_header(state), table, *_notes(state))


def variables_text(state: ExecutionState) -> Text:
    """The execution's variables (`show`)."""
    return literal("variables: " + ", ".join(f"{k}={v}" for k, v in state.variables.items()))


def _header(state: ExecutionState) -> Text:
    trigger = state.trigger
    detail = f" ({trigger.trigger_detail})" if trigger.trigger_detail else ""
    return Text.assemble(
        literal(f"{state.pipeline_name}/{state.execution_id}", "bold"),
        "  ",
        status_text(state.status.value),
        f"  {duration(state.started_at, state.finished_at)}",
        f"  v{state.pipeline_version}  ",
        literal(f"{state.execution_type.lower()} execution, " if state.execution_type != "STANDARD" else ""),
        literal(f"trigger: {trigger.trigger_type.value}{detail}"),
        literal(f"  by {state.started_by}" if state.started_by else ""),
    )


def _notes(state: ExecutionState) -> list[Text]:
    """What the rows cannot hold: why it waits, how it ended, rollbacks, the loud failures, decisions."""
    notes: list[Text] = []
    if state.stuck:  # read from Temporal: the workflow task keeps failing
        notes.append(literal(state.stuck, LOUD))
    if state.waiting_for_stage:
        why = f": {state.waiting_reason}" if state.waiting_reason else ""
        notes.append(literal(f"waiting to enter stage {state.waiting_for_stage}{why}", WAITING))
    if state.status_summary:
        notes.append(literal(state.status_summary, STYLES.get(state.status.value, "")))
    notes += _rollback_notes(state)
    notes += _compensation_alarms(state)
    for revision in state.source_revisions:
        summary = f" {first_line(revision.revision_summary)}" if revision.revision_summary else ""
        notes.append(literal(f"source {revision.action_name}: {revision.revision_id}{summary}"))
    notes += _approval_notes(state)
    return notes


def _rollback_notes(state: ExecutionState) -> list[Text]:
    notes: list[Text] = []
    if state.execution_type == "ROLLBACK" and state.rollback_of:
        releases = ", ".join(r.revision_id[:12] for r in state.source_revisions)
        release = f", release {releases}" if releases else ""
        stage = state.rollback_stage or "its stage"
        notes.append(literal(f"rolls back {stage} to execution {state.rollback_of}{release}", "magenta"))
    if state.rollback_execution:
        failed = next((s.stage_name for s in state.stages if s.status == StageStatus.FAILED), None)
        what = f" to roll back stage {failed}" if failed else ""
        ref = f"{state.pipeline_name}/{state.rollback_execution}"
        notes.append(
            literal(f"rollback: execution {state.rollback_execution} was started{what}; see `conveyor status {ref}`")
        )
    return notes


def _compensation_alarms(state: ExecutionState) -> list[Text]:
    """A compensation that failed leaves changes half-undone: said loudly, with where to read why."""
    alarms: list[Text] = []
    for stage in state.stages:
        for action in stage.actions:
            compensation = action.compensation
            if compensation is None or compensation.status != CompensationStatus.FAILED:
                continue
            log = logs_command(state, stage.stage_name, compensation_log_name(action.action_name))
            alarms.append(
                literal(
                    f"{stage.stage_name} may be half-changed: compensation of {action.action_name} failed after "
                    f"{plural(compensation.attempt, 'attempt')}; read its log with `{log}`",
                    LOUD,
                )
            )
    return alarms


def _approval_notes(state: ExecutionState) -> list[Text]:
    """Per approval: every accepted decision, the refused signals, the approvers that resolved to nobody."""
    notes: list[Text] = []
    for stage in state.stages:
        for action in stage.actions:
            notes += _decision_notes(f"{stage.stage_name}/{action.action_name}", action)
    return notes


def _decision_notes(where: str, action: ActionState) -> list[Text]:
    notes: list[Text] = []
    for d in action.approvals:  # who, from where, when, why
        status = f"Approved ({d.approvals}/{d.quorum})" if d.status == ApprovalStatus.PENDING else d.status
        why = f": {d.summary}" if d.summary else ""
        by = f"by {d.by or 'unknown'} via {d.source} at {utc_time(d.decided_at)}"
        notes.append(literal(f"decision {where}: {status} {by}{why}"))
    for refused in action.refused_decisions:  # a signal cannot be refused to its sender: it is told here
        notes.append(literal(f"refused decision {where} (sent as a signal): {refused}", WAITING))
    request = action.approval_request
    if request is not None and action.token is not None and (request.artifacts or request.source_revisions):
        artifacts = [f"{name} {digest[:19]}..." for name, digest in sorted(request.artifacts.items())]
        notes.append(literal(f"approval {where} is bound to {', '.join([*artifacts, *request.source_revisions])}"))
    for problem in request.problems if request else []:
        notes.append(literal(f"approvers of {where}: {problem}", WAITING))
    return notes


# --- a stage and its actions -----------------------------------------------------------------------


def _add_stage(table: Table, state: ExecutionState, stage: StageState) -> None:
    attempt = f" (attempt {stage.attempt})" if stage.attempt > 1 else ""
    table.add_row(
        literal(stage.stage_name + attempt, "bold"),
        "",
        status_text(stage.status.value if stage.status else None),
        duration(stage.started_at, stage.finished_at),
        _stage_details(stage),
        "",
    )
    for action in sorted(stage.actions, key=lambda a: a.run_order):
        table.add_row(
            "",
            literal(f"{action.run_order}. {action.action_name} [{action.provider}]"),
            status_text(action.status.value if action.status else None),
            duration(action.started_at, action.finished_at),
            _action_details(state, stage, action),
            literal(action.token or ""),
        )


def _stage_details(stage: StageState) -> Text:
    parts = [_previous_attempt(a) for a in stage.previous_attempts]
    parts += [_condition(c) for c in stage.conditions]
    skipped = _skip_reason(stage)
    if skipped is not None:
        parts.append(skipped)
    elif stage.error is not None and not any(a.error for a in stage.actions):
        # Not an action's failure (those are on the action's row): a condition, a stop, a lost stage.
        parts.append(literal(stage.error.message, STYLES.get(stage.status.value if stage.status else "", "")))
    return lines(parts)


def _previous_attempt(attempt: StageAttempt) -> Text:
    status = attempt.status.value if attempt.status else "ended"
    error = f": {first_line(attempt.error.message)}" if attempt.error else ""
    mode = f", {attempt.retry_mode}" if attempt.retry_mode else ""
    return literal(
        f"attempt {attempt.attempt} {status}{error}; retried by {attempt.retried_by or 'unknown'}{mode}", "dim"
    )


def _skip_reason(stage: StageState) -> Text | None:
    if stage.status != StageStatus.SKIPPED:
        return None
    if stage.error is not None:
        return literal(f"skipped (onFailure: SKIP) after it failed: {stage.error.message}", "dim")
    failed = next((c for c in reversed(stage.conditions) if c.status == ConditionStatus.FAILED), None)
    if failed is not None:
        return literal(f"skipped: its {failed.kind.declared} condition failed (result SKIP)", "dim")
    return literal("skipped", "dim")


def _condition(condition: ConditionState) -> Text:
    kind = condition.kind.declared
    if condition.status == ConditionStatus.OVERRIDDEN:
        at = f" at {utc_time(condition.overridden_at)}" if condition.overridden_at else ""
        why = condition.override_reason or "no reason given"
        return literal(f"{kind} condition overridden by {condition.overridden_by or 'unknown'}{at}: {why}", WAITING)
    if condition.status == ConditionStatus.ERRORED:  # fails the stage whatever the result
        rule = next((r for r in condition.rules if r.status == ConditionStatus.ERRORED), None)
        what = f": rule '{rule.rule_name}' ({rule.provider}) could not be evaluated: {rule.summary}" if rule else ""
        return literal(f"{kind} condition errored{what}; the stage fails", "red")
    if condition.status == ConditionStatus.FAILED:
        rule = next((r for r in condition.rules if r.status == ConditionStatus.FAILED), None)
        what = f": rule '{rule.rule_name}' ({rule.provider}): {rule.summary or 'failed'}" if rule else ""
        return literal(f"{kind} condition failed{what} (result {condition.result or 'FAIL'})", "red")
    if condition.status == ConditionStatus.SUCCEEDED:
        return literal(f"{kind} condition passed", "green")
    rule = next((r for r in condition.rules if r.status == ConditionStatus.IN_PROGRESS), None)
    if rule is not None and rule.opens_at is not None:
        opens = window_opening(rule.opens_at, rule.time_zone)
        return literal(f"{kind}: waiting for the window to open at {opens}", WAITING)
    if rule is not None:
        return literal(f"{kind}: checking rule '{rule.rule_name}' ({rule.provider})", "cyan")
    return literal(f"{kind} condition being evaluated", "cyan")


def _action_details(state: ExecutionState, stage: StageState, action: ActionState) -> Text:
    parts = [_action_outcome(action)]
    if action.external_url:  # a build's log (CodeBuild's deep link), an approval's ExternalEntityLink
        is_link = action.external_url.startswith(("https://", "http://"))
        label = "link" if is_link else "external execution id"  # Lambda's externalExecutionId may be any id
        parts.append(literal(f"{label}: {action.external_url}"))
    parts += _action_attempts(action)
    parts += _bake_and_waves(action)
    parts += _build_phases(action)
    parts += _compensation(state, stage, action)
    parts += [literal(f"notification failed: {error}", WAITING) for error in action.notification_errors]
    return lines([p for p in parts if p.plain])


def _action_outcome(action: ActionState) -> Text:
    if action.error is not None:
        return literal(f"{action.error.code}: {action.error.message}", "red")
    if action.token is not None:
        return _approval_waiting(action)
    if action.approval is not None:
        decided = action.approval
        why = f": {decided.summary}" if decided.summary else ""
        return literal(f"{decided.status} by {decided.by or 'unknown'}{why}")
    return literal(action.summary or "")


def _bake_and_waves(action: ActionState) -> list[Text]:
    """Its bake ("baking, 4.5 min left, alarms OK") and each wave (name, status, times, bake)."""
    now = datetime.now(UTC)
    parts = []
    if action.bake is not None:
        parts.append(literal(bake_summary(action.bake, now), BAKE_STYLES[action.bake.status]))
    for wave in action.waves:
        style = STYLES.get(wave.status.value, "") if wave.status else "dim"
        took = f" {duration(wave.started_at, wave.finished_at)}" if wave.started_at else ""
        parts.append(literal(f"{wave_line(wave, now)}{took}", style))
    return parts


def _build_phases(action: ActionState) -> list[Text]:
    """A build's phases (CodeBuild), one line each: "phase BUILD FAILED 3.2s"."""
    shown = []
    for phase in action.phases:
        status = phase.status or "IN_PROGRESS"
        text = f"phase {phase.name} {status} {duration(phase.started_at, phase.finished_at)}".rstrip()
        shown.append(literal(text, STYLES.get(status.title(), "")))
    return shown


def _action_attempts(action: ActionState) -> list[Text]:
    """Earlier failed attempts of a declared retry, and which attempt this is ("succeeded on attempt 3 of 5")."""
    parts = [
        literal(f"attempt {a.attempt} failed: {a.error.code}: {first_line(a.error.message)}", "dim")
        for a in action.attempts
    ]
    of = f" of {action.max_attempts}" if action.max_attempts else ""
    retried = action.attempt > 1
    if action.status == ActionStatus.SUCCEEDED and retried:
        parts.append(literal(f"succeeded on attempt {action.attempt}{of}", "green"))
    elif action.status == ActionStatus.FAILED and (retried or (action.max_attempts or 1) > 1):
        parts.append(literal(f"failed on attempt {action.attempt}{of}", "red"))
    elif action.status == ActionStatus.IN_PROGRESS and retried:
        parts.append(literal(f"running attempt {action.attempt}{of}", "cyan"))
    return parts


def _compensation(state: ExecutionState, stage: StageState, action: ActionState) -> list[Text]:
    """Its rollback commands, once they ran: status, attempts, and the command that reads their log."""
    compensation = action.compensation
    if compensation is None:
        return []
    attempts = plural(compensation.attempt, "attempt")
    error = compensation.error
    last_error = f": {error.code}: {first_line(error.message)}" if error else ""
    if compensation.status == CompensationStatus.FAILED:
        summary = literal(f"COMPENSATION FAILED after {attempts}{last_error}", LOUD)
    elif compensation.status == CompensationStatus.SUCCEEDED:
        earlier = f" (after a failed attempt{last_error})" if compensation.attempt > 1 and error else ""
        summary = literal(
            f"compensated: rollback commands succeeded on attempt {compensation.attempt}{earlier}", "green"
        )
    else:
        summary = literal(
            f"compensating: rollback commands running, attempt {compensation.attempt}{last_error}", "cyan"
        )
    log = logs_command(state, stage.stage_name, compensation_log_name(action.action_name))
    return [summary, literal(f"compensation log: {log}", "dim")]


def _approval_waiting(action: ActionState) -> Text:
    """Progress toward the quorum, who has approved, who may still decide (never someone excluded)."""
    request = action.approval_request or ApprovalRequest()
    approved = [d for d in action.approvals if d.status in (ApprovalStatus.APPROVED, ApprovalStatus.PENDING)]
    parts = ["waiting for approval"]
    if request.quorum > 1 or approved:
        by = f" (approved by {', '.join(d.by or 'unknown' for d in approved)})" if approved else ""
        parts.append(f"{len(approved)} of {request.quorum} approvals{by}")
    parts.append(f"may decide: {who_may_decide(request, approved)}")
    if request.excluded:
        parts.append(f"may not decide (separation of duties): {', '.join(request.excluded)}")
    custom = request.custom_data or action.resolved_configuration.get("CustomData")
    if custom:
        parts.append(f"details: {custom}")
    if request.reviews:
        parts.append(f"changes to review: {' | '.join(request.reviews)}")
    return literal("; ".join(parts), WAITING)


# --- the pipeline (`conveyor state`) ---------------------------------------------------------------


def _fact(fact: StageFact | None) -> Text:
    return literal(f"{fact.execution_id} (v{fact.pipeline_version})" if fact else "-")


def _slot(slot: ExecutionSlot | None) -> Text:
    return literal(slot.execution_id if slot else "-")


def _transition(transition: TransitionState) -> Text:
    """Who changed the transition, when, and why."""
    who = transition.changed_by or "unknown"
    at = f" at {utc_time(transition.changed_at)}" if transition.changed_at else ""
    if not transition.enabled:
        return literal(f"disabled by {who}{at}: {transition.reason or 'no reason given'}", WAITING)
    if transition.changed_by is None and transition.changed_at is None:
        return Text("enabled", style="green")
    why = f": {transition.reason}" if transition.reason else ""
    return literal(f"enabled by {who}{at}{why}", "green")


def coordinator_table(state: CoordinatorState) -> Group:
    """CodePipeline's GetPipelineState, per stage."""
    current = state.current
    header = Text.assemble(
        literal(state.pipeline_name, "bold"),
        literal(f"  mode {state.execution_mode}"),
        f"  version {current.version}" if current else "  (not applied: executions started from files)",
    )
    table = Table()
    table.add_column("Stage", overflow="fold")
    table.add_column("Inbound transition", overflow="fold")
    for column in ("Held by", "Waiting", "Last succeeded", "Newest entered"):
        table.add_column(column, no_wrap=True)  # execution ids, copied whole
    names = list(current.stage_names) if current else []
    names += [s.stage_name for s in state.stages if s.stage_name not in names]
    locks = {s.stage_name: s for s in state.stages}
    for name in names:
        lock = locks.get(name)
        if lock is None:
            table.add_row(literal(name), Text("enabled", style="green"), "-", "-", "-", "-")
            continue
        table.add_row(
            literal(name),
            _transition(lock.transition),
            _slot(lock.holder),
            literal(", ".join(w.execution_id for w in [*lock.waiting, *lock.held]) or "-"),
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
                literal(f"{stage.stage_name}/{action.action_name}"),
                status_text(action.status.value),
                literal("\n".join(f"{k}={v}" for k, v in action.resolved_configuration.items())),
                literal("\n".join(f"{k}={v}" for k, v in action.output_variables.items())),
                literal("\n".join(f"{a.name} {a.digest[:19]}..." for a in action.output_artifacts)),
            )
    return table
