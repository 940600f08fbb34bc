"""What operators see, rendered without a server: every piece of user or command text is shown literally
(never read as rich markup or emoji codes, terminal control characters made visible, Slack's `& < >`
escaped), and the table says in words what the state holds (waits, overrides, attempts, compensation,
rollbacks, approvals, transitions)."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from rich.console import Console, RenderableType

from conveyor.cli.render import (
    action_details_table,
    coordinator_table,
    execution_table,
    literal,
    variables_text,
)
from conveyor.model import (
    ActionState,
    ActionStatus,
    ApprovalNotice,
    ApprovalRequest,
    ApprovalResult,
    CompensationState,
    ConditionState,
    CoordinatorState,
    ErrorDetails,
    ExecutionState,
    ExecutionStatus,
    RuleState,
    SourceRevision,
    StageAttempt,
    StageLock,
    StageState,
    StageStatus,
    TransitionState,
)
from conveyor.slack.messages import approval_blocks, not_counted_text, status_line

# Text that rich would read as markup, emoji or a terminal escape, and what must be shown instead.
NASTY = {
    "[bold]not bold[/bold]": "[bold]not bold[/bold]",
    "see [/x]": "see [/x]",
    "deployed to [/srv/releases/current]": "deployed to [/srv/releases/current]",
    "[conveyor] Running command 1": "[conveyor] Running command 1",
    "it broke :x: here": "it broke :x: here",
    "\x1b[31mred\x1b[0m": "\\x1b[31mred\\x1b[0m",
    "\x1b]8;;http://evil\x07click\x1b]8;;\x07": "\\x1b]8;;http://evil\\x07click\\x1b]8;;\\x07",
}
WHEN = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def rendered(renderable: RenderableType) -> str:
    """What a console writes to a pipe (wide enough that nothing wraps)."""
    out = io.StringIO()
    Console(file=out, width=2000, color_system=None, legacy_windows=False).print(renderable)
    return out.getvalue()


def assert_literal(output: str, shown: str) -> None:
    assert shown in output, f"{shown!r} not shown literally in:\n{output}"
    raw = [ch for ch in output if ch not in "\n\t" and (ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0)]
    assert not raw, f"raw control characters {raw!r} in:\n{output!r}"


def action(**fields: object) -> ActionState:
    return ActionState.model_validate({"action_name": "Deploy", "provider": "Commands", "category": "Deploy"} | fields)


def execution(*actions: ActionState, **fields: object) -> ExecutionState:
    stage = StageState(stage_name="Prod", status=StageStatus.IN_PROGRESS, attempt=1, actions=list(actions))
    return ExecutionState(pipeline_name="shop", execution_id="e-1", stages=[stage], **fields)  # type: ignore[arg-type]


def decision(text: str, status: str = "Approved") -> ApprovalResult:
    return ApprovalResult(action_name="Gate", status=status, summary=text, by="alice", decided_at=WHEN)


def gate(**fields: object) -> ActionState:
    return ActionState(action_name="Gate", provider="Manual", category="Approval", **fields)  # type: ignore[arg-type]


# Each renderer of user or command text, fed one nasty text.
RENDERERS: dict[str, Callable[[str], RenderableType]] = {
    "action summary": lambda t: execution_table(execution(action(status=ActionStatus.SUCCEEDED, summary=t))),
    "action error": lambda t: execution_table(
        execution(action(status=ActionStatus.FAILED, error=ErrorDetails(code="CommandFailed", message=t)))
    ),
    "earlier attempt's error": lambda t: execution_table(
        execution(
            action(
                status=ActionStatus.IN_PROGRESS,
                attempt=2,
                max_attempts=3,
                attempts=[{"attempt": 1, "error": {"code": "CommandFailed", "message": t}}],
            )
        )
    ),
    "approval decision summary": lambda t: execution_table(
        execution(gate(status=ActionStatus.SUCCEEDED, approval=decision(t), approvals=[decision(t)]))
    ),
    "approval rejection": lambda t: execution_table(
        execution(
            gate(status=ActionStatus.FAILED, approval=decision(t, "Rejected"), approvals=[decision(t, "Rejected")])
        )
    ),
    "refused signal decision": lambda t: execution_table(
        execution(gate(status=ActionStatus.IN_PROGRESS, token="tok", refused_decisions=[f"approve by bob: {t}"]))
    ),
    "custom data": lambda t: execution_table(
        execution(
            gate(
                status=ActionStatus.IN_PROGRESS,
                token="tok",
                resolved_configuration={"CustomData": t},
                approval_request=ApprovalRequest(custom_data=t),
            )
        )
    ),
    "approver problem": lambda t: execution_table(
        execution(gate(status=ActionStatus.IN_PROGRESS, token="tok", approval_request=ApprovalRequest(problems=[t])))
    ),
    "status summary": lambda t: execution_table(execution(status=ExecutionStatus.FAILED, status_summary=t)),
    "waiting reason": lambda t: execution_table(execution(waiting_for_stage="Prod", waiting_reason=t)),
    "started by": lambda t: execution_table(execution(started_by=t)),
    "variable values": lambda t: variables_text(execution(variables={"Target": t})),
    "resolved configuration": lambda t: action_details_table(
        execution(action(status=ActionStatus.SUCCEEDED, resolved_configuration={"Url": t}))
    ),
    "output variables": lambda t: action_details_table(
        execution(action(status=ActionStatus.SUCCEEDED, output_variables={"Out": t}))
    ),
    "transition reason in state": lambda t: coordinator_table(
        CoordinatorState(
            pipeline_name="shop",
            stages=[StageLock(stage_name="Prod", transition=TransitionState(enabled=False, reason=t, changed_by=t))],
        )
    ),
    "literal()": literal,
}


@pytest.mark.parametrize("text", NASTY, ids=range(len(NASTY)))
@pytest.mark.parametrize("renderer", RENDERERS)
def test_user_and_command_text_is_rendered_literally(renderer: str, text: str) -> None:
    assert_literal(rendered(RENDERERS[renderer](text)), NASTY[text])


def test_literal_keeps_newlines_and_tabs_and_shows_other_controls() -> None:
    assert literal("a\tb\nc\r\nd\re\x00f\x7fg\x9bh").plain == "a\tb\nc\nd\\x0de\\x00f\\x7fg\\x9bh"


# --- Slack: & < > escaped, so user text never becomes a link, a mention or broken markup ----------------


def notice(**fields: object) -> ApprovalNotice:
    base = {
        "kind": "opened",
        "pipeline_name": "shop",
        "execution_id": "e-1",
        "stage_name": "Prod",
        "action_name": "Gate",
        "token": "tok",
        "expires": WHEN,
    }
    return ApprovalNotice.model_validate(base | fields)


SLACK_NASTY = "<@U0BOSS> & <!here> <http://evil|click>"
SLACK_SHOWN = "&lt;@U0BOSS&gt; &amp; &lt;!here&gt; &lt;http://evil|click&gt;"


def slack_texts(blocks: list[dict]) -> str:
    """Every text in the blocks, joined: what Slack would parse as mrkdwn."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(str(node["text"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return "\n".join(found)


def test_slack_message_escapes_user_text() -> None:
    rejection = decision(SLACK_NASTY, "Rejected").model_copy(update={"by": SLACK_NASTY})
    closed = notice(
        custom_data=SLACK_NASTY,
        started_by=SLACK_NASTY,
        approvers=[SLACK_NASTY],
        authors=[SLACK_NASTY],
        revisions=[{"actionName": "Source", "revisionId": "abc123", "revisionSummary": SLACK_NASTY}],
        external_entity_link="https://example.com/x?a=1&b=<2>",
        approvals=[rejection],
        outcome="Rejected",
    )
    text = slack_texts(approval_blocks(closed))
    assert text.count(SLACK_SHOWN) >= 5, text
    assert "<https://example.com/x?a=1&amp;b=&lt;2&gt;|" in text
    assert SLACK_NASTY not in text and "<@" not in text and "<!here" not in text
    assert SLACK_SHOWN in status_line(closed)


def test_slack_refusal_answer_escapes_the_reason() -> None:
    answer = not_counted_text(approve=True, reason=f"'{SLACK_NASTY}' may not decide approval 'Gate'")
    assert SLACK_SHOWN in answer and "<@" not in answer


# --- what the table shows, in words ------------------------------------------------------------------


def one_line(output: str) -> str:
    """The output with table borders and wrapping removed, so phrases can be looked for whole."""
    cells = [part.strip() for line in output.splitlines() for part in line.split("│")]
    return " ".join(" ".join(c for c in cells if c).split())


def shown(state: ExecutionState) -> str:
    return one_line(rendered(execution_table(state)))


def stage(name: str = "Prod", **fields: object) -> StageState:
    return StageState.model_validate({"stage_name": name, **fields})


def test_a_stage_waiting_for_its_deployment_window_says_when_it_opens_in_the_windows_time_zone() -> None:
    waiting = ConditionState(
        kind="BEFORE_ENTRY",
        rules=[
            RuleState(
                rule_name="OfficeHours",
                provider="DeploymentWindow",
                status="InProgress",
                opens_at=WHEN,
                time_zone="Europe/Berlin",
            )
        ],
    )
    text = shown(ExecutionState(pipeline_name="shop", execution_id="e-1", stages=[stage(conditions=[waiting])]))
    assert "beforeEntry: waiting for the window to open at 2026-11-20 09:00:00, Europe/Berlin" in text
    assert "(2026-11-20 08:00:00 UTC)" in text


def test_an_override_says_who_when_and_why() -> None:
    overridden = ConditionState(
        kind="ON_SUCCESS", status="Overridden", overridden_by="ops", overridden_at=WHEN, override_reason="hotfix 12"
    )
    text = shown(ExecutionState(pipeline_name="shop", execution_id="e-1", stages=[stage(conditions=[overridden])]))
    assert "onSuccess condition overridden by ops at 2026-11-20 08:00:00 UTC: hotfix 12" in text


def test_a_failed_condition_and_a_skipped_stage_say_why() -> None:
    failed = ConditionState(
        kind="BEFORE_ENTRY",
        result="SKIP",
        status="Failed",
        rules=[
            RuleState(rule_name="OnlyMain", provider="VariableCheck", status="Failed", summary="'dev' EQ 'main': false")
        ],
    )
    by_condition = stage("Canary", status=StageStatus.SKIPPED, conditions=[failed])
    by_failure = stage(
        "Docs",
        status=StageStatus.SKIPPED,
        error=ErrorDetails(code="CommandFailed", message="action 'Publish' failed: no network"),
    )
    text = shown(ExecutionState(pipeline_name="shop", execution_id="e-1", stages=[by_condition, by_failure]))
    assert "beforeEntry condition failed: rule 'OnlyMain' (VariableCheck): 'dev' EQ 'main': false (result SKIP)" in text
    assert "skipped: its beforeEntry condition failed (result SKIP)" in text
    assert "skipped (onFailure: SKIP) after it failed: action 'Publish' failed: no network" in text


def test_action_attempts_and_stage_attempts_are_shown() -> None:
    earlier = [
        {"attempt": 1, "error": {"code": "CommandFailed", "message": "command 1 ('curl') failed\nlast output"}},
        {"attempt": 2, "error": {"code": "ActionTimeout", "message": "action timed out after 60 s"}},
    ]
    succeeded = action(
        status=ActionStatus.SUCCEEDED, summary="1 commands succeeded", attempt=3, max_attempts=5, attempts=earlier
    )
    failed = ActionState(
        action_name="Smoke",
        provider="Commands",
        category="Test",
        status=ActionStatus.FAILED,
        attempt=2,
        max_attempts=2,
        error=ErrorDetails(code="CommandFailed", message="still broken"),
    )
    retried = stage(
        "Build",
        status=StageStatus.SUCCEEDED,
        attempt=2,
        actions=[succeeded, failed],
        previous_attempts=[
            StageAttempt(
                attempt=1,
                status=StageStatus.FAILED,
                error=ErrorDetails(code="CommandFailed", message="action 'Deploy' failed: boom"),
                retried_by="bob",
                retry_mode="FAILED_ACTIONS",
            )
        ],
    )
    text = shown(ExecutionState(pipeline_name="shop", execution_id="e-1", stages=[retried]))
    assert "succeeded on attempt 3 of 5" in text
    assert "attempt 1 failed: CommandFailed: command 1 ('curl') failed" in text
    assert "attempt 2 failed: ActionTimeout: action timed out after 60 s" in text
    assert "failed on attempt 2 of 2" in text
    assert "Build (attempt 2)" in text
    assert "attempt 1 Failed: action 'Deploy' failed: boom; retried by bob, FAILED_ACTIONS" in text


def test_compensation_steps_are_listed_and_a_failed_one_is_loud_with_its_log() -> None:
    failed = action(
        action_name="Install",
        status=ActionStatus.FAILED,
        error=ErrorDetails(code="CommandFailed", message="disk full"),
        compensation=CompensationState(
            status="Failed", attempt=3, error=ErrorDetails(code="CommandFailed", message="undo failed too")
        ),
    )
    undone = action(
        action_name="Config", status=ActionStatus.SUCCEEDED, compensation=CompensationState(status="Succeeded")
    )
    running = action(
        action_name="Flags",
        status=ActionStatus.SUCCEEDED,
        compensation=CompensationState(status="InProgress", attempt=2),
    )
    state = ExecutionState(
        pipeline_name="shop",
        execution_id="e-1",
        status=ExecutionStatus.FAILED,
        stages=[stage("Production", status=StageStatus.FAILED, actions=[failed, undone, running])],
    )
    output = rendered(execution_table(state))
    text = one_line(output)
    assert "COMPENSATION FAILED after 3 attempts: CommandFailed: undo failed too" in text
    assert "compensated: rollback commands succeeded on attempt 1" in text
    assert "compensating: rollback commands running, attempt 2" in text
    assert "compensation log: conveyor logs shop/e-1 Production Config.rollback" in text
    alarm = (
        "Production may be half-changed: compensation of Install failed after 3 attempts; "
        "read its log with `conveyor logs shop/e-1 Production Install.rollback`"
    )
    assert alarm in output  # on a line of its own, below the table


def test_rollbacks_say_what_they_roll_back_and_which_rollback_a_failure_started() -> None:
    rollback = ExecutionState(
        pipeline_name="shop",
        execution_id="rollback-1",
        execution_type="ROLLBACK",
        rollback_of="good-7",
        rollback_stage="Deploy",
        source_revisions=[
            SourceRevision(action_name="Source", revision_id="0123456789abcdef", revision_summary="v1.2")
        ],
    )
    assert "rolls back Deploy to execution good-7, release 0123456789ab" in shown(rollback)
    failed = ExecutionState(
        pipeline_name="shop",
        execution_id="bad-8",
        status=ExecutionStatus.FAILED,
        rollback_execution="rollback-1",
        stages=[stage("Deploy", status=StageStatus.FAILED)],
    )
    text = shown(failed)
    assert "rollback: execution rollback-1 was started to roll back stage Deploy" in text
    assert "conveyor status shop/rollback-1" in text


def test_an_approval_says_who_decided_and_who_may_still_decide_never_an_excluded_starter() -> None:
    request = ApprovalRequest(
        approvers=["release-managers"],
        quorum=2,
        allowed=["alice", "bob", "carol", "dave"],
        excluded=["carol"],  # she started the execution
        artifacts={"BuildOutput": "sha256:" + "ab" * 32},
        source_revisions=["Source:0123456789ab"],
    )
    first = ApprovalResult(
        action_name="Gate", status="Pending", summary="ok", by="alice", decided_at=WHEN, approvals=1, quorum=2
    )
    waiting = gate(
        status=ActionStatus.IN_PROGRESS,
        token="tok",
        approval_request=request,
        approvals=[first],
        refused_decisions=["approve by carol: 'carol' started this execution (separation of duties)"],
    )
    text = shown(ExecutionState(pipeline_name="shop", execution_id="e-1", stages=[stage(actions=[waiting])]))
    assert "1 of 2 approvals (approved by alice)" in text
    assert "may decide: bob, dave;" in text
    assert "may not decide (separation of duties): carol" in text
    assert "refused decision Prod/Gate (sent as a signal): approve by carol" in text
    assert "decision Prod/Gate: Approved (1/2) by alice via temporal at 2026-11-20 08:00:00 UTC: ok" in text
    assert "approval Prod/Gate is bound to BuildOutput sha256:abababababab..., Source:0123456789ab" in text


def test_state_says_when_a_transition_was_changed() -> None:
    coordinator = CoordinatorState(
        pipeline_name="shop",
        stages=[
            StageLock(
                stage_name="Prod",
                transition=TransitionState(enabled=False, reason="freeze", changed_by="ops", changed_at=WHEN),
            ),
            StageLock(stage_name="Test", transition=TransitionState(enabled=True, changed_by="ops", changed_at=WHEN)),
        ],
    )
    text = one_line(rendered(coordinator_table(coordinator)))
    assert "disabled by ops at 2026-11-20 08:00:00 UTC: freeze" in text
    assert "enabled by ops at 2026-11-20 08:00:00 UTC" in text
