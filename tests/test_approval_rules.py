"""The approval rules (workflows/approvals.py) as tables, without a server: which approval a decision is
for, the token, sources, approvers, separation of duties, one person counting once, quorum, rejection."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conveyor.interface import Activity, ApprovalStatus, NoticeKind
from conveyor.model import (
    ActionOutcome,
    ActionState,
    ApprovalDecision,
    ApprovalRequest,
    ApprovalResult,
    ApproverSnapshot,
    ArtifactRef,
    ErrorDetails,
    SourceRevision,
    StageInput,
)
from conveyor.spec.declaration import ApprovalPolicy
from workflows.approvals import (
    ApprovalBook,
    ApprovalRefused,
    apply_snapshot,
    approval_request,
    notice_channels,
    outcome_of,
    refusal_text,
    stopped,
    timed_out,
)

NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
TOKEN = "tok-1"


def manual(name: str = "Approve", *, token: str | None = TOKEN, request: ApprovalRequest | None = None) -> ActionState:
    return ActionState(action_name=name, provider="Manual", category="Approval", token=token, approval_request=request)


def build(name: str = "Build") -> ActionState:
    return ActionState(action_name=name, provider="Commands", category="Build")


def book(*actions: ActionState) -> ApprovalBook:
    return ApprovalBook("Prod", list(actions))


def decision(by: str | None = "alice", **fields: object) -> ApprovalDecision:
    return ApprovalDecision.model_validate({"token": TOKEN, "by": by, **fields})


def policy_request(**fields: object) -> ApprovalRequest:
    return ApprovalRequest.model_validate({"approvers": ["alice", "bob", "carol"], **fields})


def decided(status: ApprovalStatus, by: str | None) -> ApprovalResult:
    return ApprovalResult(action_name="Approve", status=status, summary="", by=by, decided_at=NOW)


# --- every refusal ---------------------------------------------------------------------------------

REFUSALS = [
    pytest.param(
        [manual(token=None)],
        decision(),
        "stage 'Prod' has 0 approvals waiting (none); name one with actionName",
        id="none-waiting-unnamed",
    ),
    pytest.param(
        [manual("A"), manual("B")],
        decision(),
        "stage 'Prod' has 2 approvals waiting (A, B); name one with actionName",
        id="two-waiting-unnamed",
    ),
    pytest.param(
        [manual()],
        decision(actionName="Nope"),
        "stage 'Prod' has no approval action 'Nope'",
        id="unknown-action",
    ),
    pytest.param(
        [manual(), build()],
        decision(actionName="Build"),
        "stage 'Prod' has no approval action 'Build'",
        id="not-an-approval",
    ),
    pytest.param(
        [manual(token=None).model_copy(update={"approval": decided(ApprovalStatus.APPROVED, "alice")})],
        decision(actionName="Approve"),
        "approval 'Approve' was already decided: Approved by alice",
        id="already-decided",
    ),
    pytest.param(
        [manual(token=None).model_copy(update={"approval": decided(ApprovalStatus.REJECTED, None)})],
        decision(actionName="Approve"),
        "approval 'Approve' was already decided: Rejected by unknown",
        id="already-decided-by-nobody-named",
    ),
    pytest.param(
        [manual(token=None)],
        decision(actionName="Approve"),
        "approval 'Approve' is not waiting for a decision",
        id="not-waiting",
    ),
    pytest.param(
        [manual()],
        decision(token="stale"),
        "the token does not match approval 'Approve' (stale or mistyped); "
        "read the current token with `conveyor status`",
        id="token-mismatch",
    ),
    pytest.param(
        [manual(request=policy_request(sources=["slack", "cli"]))],
        decision(source="temporal"),
        "approval 'Approve' does not take decisions from 'temporal' (allowed: slack, cli)",
        id="source-not-allowed",
    ),
    pytest.param(
        [manual(request=policy_request())],
        decision("mallory"),
        "'mallory' may not decide approval 'Approve' (approvers: alice, bob, carol)",
        id="not-an-approver",
    ),
    pytest.param(
        [manual(request=policy_request())],
        decision(None),
        "'an unnamed caller' may not decide approval 'Approve' (approvers: alice, bob, carol)",
        id="unnamed-caller",
    ),
    pytest.param(
        [manual(request=policy_request(allowed=["slack:T1/U2"]))],
        decision("alice"),
        "'alice' may not decide approval 'Approve' (approvers: alice, bob, carol)",
        id="not-in-the-snapshot",
    ),
    pytest.param(
        [manual(request=policy_request(excluded=["carol"]))],
        decision("carol"),
        "'carol' started this execution or wrote its source revision, and may not decide approval "
        "'Approve' (separation of duties)",
        id="separation-of-duties",
    ),
    pytest.param(
        [manual(request=policy_request(excluded=["email:Bob@Example.com"]))],
        decision("bob", principals=["email:bob@example.com"]),
        "'bob' started this execution or wrote its source revision, and may not decide approval "
        "'Approve' (separation of duties)",
        id="separation-of-duties-by-another-name",
    ),
    pytest.param(
        [
            manual(request=policy_request(quorum=2)).model_copy(
                update={"approvals": [decided(ApprovalStatus.PENDING, "alice")]}
            )
        ],
        decision("alice"),
        "'alice' has already approved 'Approve'; another approver is needed",
        id="approved-already",
    ),
]


@pytest.mark.parametrize(("actions", "refused", "message"), REFUSALS)
def test_refusals(actions: list[ActionState], refused: ApprovalDecision, message: str) -> None:
    approvals = book(*actions)
    with pytest.raises(ApprovalRefused) as checked:
        approvals.check(refused)
    assert checked.value.message == message
    with pytest.raises(ApprovalRefused) as deciding:
        approvals.decide(refused, ApprovalStatus.APPROVED, NOW)
    assert deciding.value.message == message
    assert approvals.decisions == {}


# --- which approval ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "named", "expected"),
    [
        pytest.param([manual("A", token=None), manual("B")], None, "B", id="the-one-waiting"),
        pytest.param([manual("A"), manual("B")], "A", "A", id="named-of-two"),
        pytest.param([build(), manual("B")], "B", "B", id="named-beside-a-build"),
    ],
)
def test_the_approval_a_decision_is_for(actions: list[ActionState], named: str | None, expected: str) -> None:
    assert book(*actions).pending(decision(actionName=named)).action_name == expected


def test_without_a_policy_anyone_with_the_token_decides() -> None:
    action = manual()
    approvals = book(action)
    result = approvals.decide(decision("anyone", summary="ok"), ApprovalStatus.APPROVED, NOW)
    assert (result.status, result.approvals, result.quorum, result.decided_at) == (ApprovalStatus.APPROVED, 1, 1, NOW)
    assert action.token is None and action.approval == result and approvals.decisions == {"Approve": result}


# --- quorum, one person once, rejection --------------------------------------------------------------


def test_quorum_two_of_three_counts_one_person_once_under_two_names() -> None:
    # The snapshot taken when it opened knows alice's email (the identity directory).
    allowed = ["alice", "email:alice@example.com", "bob", "carol"]
    action = manual(request=policy_request(quorum=2, allowed=allowed))
    approvals = book(action)
    first = approvals.decide(
        decision("alice", principals=["email:Alice@Example.com"], source="slack"), ApprovalStatus.APPROVED, NOW
    )
    assert (first.status, first.approvals, first.quorum) == (ApprovalStatus.PENDING, 1, 2)
    assert first.principals == ["email:alice@example.com"]
    assert action.token == TOKEN and action.approval is None and approvals.decisions == {}
    with pytest.raises(ApprovalRefused, match="'ALICE@example.com' has already approved 'Approve'"):
        approvals.decide(decision("ALICE@example.com"), ApprovalStatus.APPROVED, NOW)
    second = approvals.decide(decision("bob"), ApprovalStatus.APPROVED, NOW)
    assert (second.status, second.approvals, second.quorum) == (ApprovalStatus.APPROVED, 2, 2)
    assert action.approvals == [first, second] and action.approval == second and action.token is None
    assert approvals.decisions == {"Approve": second}


def test_any_rejection_rejects_after_an_approval() -> None:
    action = manual(request=policy_request(quorum=2))
    approvals = book(action)
    approvals.decide(decision("alice"), ApprovalStatus.APPROVED, NOW)
    rejected = approvals.decide(decision("bob", summary="not today"), ApprovalStatus.REJECTED, NOW)
    assert (rejected.status, rejected.approvals, rejected.quorum) == (ApprovalStatus.REJECTED, 1, 2)
    assert action.token is None and approvals.decisions == {"Approve": rejected}
    assert outcome_of(rejected) == ErrorDetails(code="ApprovalRejected", message="rejected by bob: not today")


def test_deciding_twice_is_refused() -> None:
    approvals = book(manual())
    approvals.decide(decision("alice"), ApprovalStatus.APPROVED, NOW)
    with pytest.raises(ApprovalRefused, match="was already decided: Approved by alice"):
        approvals.decide(decision("bob", actionName="Approve"), ApprovalStatus.REJECTED, NOW)
    with pytest.raises(ApprovalRefused, match=r"has 0 approvals waiting \(none\)"):
        approvals.decide(decision("bob"), ApprovalStatus.REJECTED, NOW)


def test_the_snapshot_decides_who_may_decide() -> None:
    request = policy_request(approvers=["slack-group:S1"])
    problem = apply_snapshot(request, ApproverSnapshot(allowed=["slack:T1/U1"], excluded=["carol"]))
    assert problem is None and request.allowed == ["slack:T1/U1"] and request.excluded == ["carol"]
    result = book(manual(request=request)).decide(
        decision("bob", principals=["slack:T1/U1"]), ApprovalStatus.APPROVED, NOW
    )
    assert result.status == ApprovalStatus.APPROVED


def test_a_snapshot_with_nobody_fails_the_approval() -> None:
    request = policy_request(approvers=["slack-group:S1"])
    problem = apply_snapshot(request, ApproverSnapshot(problems=["slack-group:S1: empty group"]))
    assert problem == ErrorDetails(code="ApproversUnresolved", message="nobody may decide: slack-group:S1: empty group")
    assert request.problems == ["slack-group:S1: empty group"]


# --- the request an approval opens with ---------------------------------------------------------------

STAGE_INPUT = StageInput(
    pipeline_name="web",
    execution_id="e-1",
    stage={},
    started_by="carol",
    source_authors=["dave@example.com", "carol"],
    source_revisions_seen=[SourceRevision(action_name="Source", revision_id="abc123")],
    artifact_digests={"src": "sha256:old"},
)
ARTIFACTS = {"build": ArtifactRef(name="build", digest="sha256:b", location="file:///b", size=1)}


@pytest.mark.parametrize(
    ("policy", "approvers", "quorum", "excluded", "sources"),
    [
        pytest.param(None, [], 1, [], None, id="no-policy-anyone"),
        pytest.param(
            ApprovalPolicy(approvers=["alice", "carol"], quorum=2),
            ["alice", "carol"],
            2,
            ["carol", "dave@example.com"],
            None,
            id="starter-and-authors-excluded",
        ),
        pytest.param(
            ApprovalPolicy(approvers=["carol"], allow_starter=True, sources=["cli"]),
            ["carol"],
            1,
            ["carol", "dave@example.com"],
            ["cli"],
            id="starter-allowed-but-also-an-author",
        ),
        pytest.param(
            ApprovalPolicy(approvers=["dave@example.com"], allow_author=True),
            ["dave@example.com"],
            1,
            ["carol"],
            None,
            id="authors-allowed",
        ),
        pytest.param(
            ApprovalPolicy(approvers=["x"], allow_starter=True, allow_author=True),
            ["x"],
            1,
            [],
            None,
            id="both-allowed",
        ),
    ],
)
def test_approval_request(
    policy: ApprovalPolicy | None, approvers: list[str], quorum: int, excluded: list[str], sources: list[str] | None
) -> None:
    request = approval_request(policy, STAGE_INPUT, ARTIFACTS, "please look")
    assert (request.approvers, request.quorum, request.excluded, request.sources) == (
        approvers,
        quorum,
        excluded,
        sources,
    )
    assert request.artifacts == {"src": "sha256:old", "build": "sha256:b"}
    assert request.source_revisions == ["Source:abc123"]
    assert request.custom_data == "please look"


@pytest.mark.parametrize(
    ("policy", "decider", "allowed"),
    [
        pytest.param(ApprovalPolicy(approvers=["carol", "dave"]), decision("carol"), False, id="starter"),
        pytest.param(
            ApprovalPolicy(approvers=["carol", "dave"]),
            decision("dave", principals=["email:dave@example.com"]),
            False,
            id="author-by-email",
        ),
        pytest.param(
            ApprovalPolicy(approvers=["dave"], allow_author=True),
            decision("dave", principals=["email:dave@example.com"]),
            True,
            id="author-allowed",
        ),
        pytest.param(
            ApprovalPolicy(approvers=["erin"], allow_starter=True, allow_author=True),
            decision("carol"),
            False,
            id="allowed-but-not-an-approver",
        ),
        pytest.param(
            ApprovalPolicy(approvers=[], allow_starter=True, allow_author=True),
            decision("carol"),
            True,
            id="no-approvers-listed-everyone-allowed",
        ),
    ],
)
def test_separation_of_duties_follows_the_policy_flags(
    policy: ApprovalPolicy, decider: ApprovalDecision, allowed: bool
) -> None:
    action = manual(request=approval_request(policy, STAGE_INPUT, {}, None))
    if allowed:
        book(action).check(decider)
    else:
        with pytest.raises(ApprovalRefused):
            book(action).check(decider)


# --- what a signal's refusal leaves in `status` ------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "refused", "status", "on", "text"),
    [
        pytest.param(
            [manual("A"), manual("B")],
            decision("bob", actionName="B"),
            ApprovalStatus.APPROVED,
            "B",
            "approve by bob: why",
            id="on-the-named",
        ),
        pytest.param(
            [build(), manual("A")],
            decision(None, actionName="Nope"),
            ApprovalStatus.REJECTED,
            "A",
            "reject by unknown: why",  # was "rejecte": the verb was cut from the status
            id="unknown-name-on-the-first-approval",
        ),
        pytest.param(
            [build(), manual("A"), manual("B")],
            decision("bob"),
            ApprovalStatus.APPROVED,
            "A",
            "approve by bob: why",
            id="unnamed-on-the-first-approval",
        ),
    ],
)
def test_a_refused_signal_is_recorded(
    actions: list[ActionState], refused: ApprovalDecision, status: ApprovalStatus, on: str, text: str
) -> None:
    book(*actions).record_refusal(refused, status, ApprovalRefused("why"))
    assert {a.action_name: a.refused_decisions for a in actions if a.refused_decisions} == {on: [text]}
    assert refusal_text(refused, status, ApprovalRefused("why")) == text


def test_a_refused_signal_in_a_stage_without_approvals_is_only_logged() -> None:
    action = build()
    book(action).record_refusal(decision(), ApprovalStatus.APPROVED, ApprovalRefused("why"))
    assert action.refused_decisions == []


# --- how an approval ends, and whom it tells ---------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        pytest.param(
            decided(ApprovalStatus.APPROVED, "alice"), ActionOutcome(summary="approved by alice"), id="approved"
        ),
        pytest.param(
            decided(ApprovalStatus.APPROVED, None).model_copy(update={"summary": "ship it"}),
            ActionOutcome(summary="ship it"),
            id="approved-with-summary",
        ),
        pytest.param(
            decided(ApprovalStatus.REJECTED, None),
            ErrorDetails(code="ApprovalRejected", message="rejected by unknown: "),
            id="rejected",
        ),
    ],
)
def test_outcome_of_a_decision(result: ApprovalResult, expected: ActionOutcome | ErrorDetails) -> None:
    assert outcome_of(result) == expected


@pytest.mark.parametrize(
    ("minutes", "text"),
    [
        (7 * 24 * 60, "no decision within 7 days"),
        (24 * 60, "no decision within 1 day"),
        (90, "no decision within 90 minutes"),
    ],
)
def test_timed_out(minutes: int, text: str) -> None:
    assert timed_out(minutes) == ErrorDetails(code="ApprovalTimedOut", message=text)


def test_stopped() -> None:
    assert stopped() == ErrorDetails(
        code="ApprovalCancelled", message="the execution was stopped while the approval waited"
    )


@pytest.mark.parametrize(
    ("kind", "arn", "webhook", "slack", "channels"),
    [
        (NoticeKind.OPENED, "arn:sns", None, None, [Activity.NOTIFY_APPROVAL]),
        (NoticeKind.REMINDER, None, "https://hook", "C1", [Activity.NOTIFY_APPROVAL, Activity.NOTIFY_SLACK]),
        (NoticeKind.PROGRESS, "arn:sns", "https://hook", None, []),
        (NoticeKind.PROGRESS, None, None, "C1", [Activity.NOTIFY_SLACK]),
        (NoticeKind.CLOSED, "arn:sns", None, "C1", [Activity.NOTIFY_SLACK]),
    ],
)
def test_notice_channels(
    kind: NoticeKind, arn: str | None, webhook: str | None, slack: str | None, channels: list[Activity]
) -> None:
    policy = ApprovalPolicy(notify_webhook=webhook, slack_channel=slack)
    state = manual(request=approval_request(policy, STAGE_INPUT, {}, None))
    configuration = {"NotificationArn": arn} if arn else {}
    notice = book(state).notice(STAGE_INPUT, policy, state, configuration, NOW)
    assert notice is not None
    assert notice_channels(notice.model_copy(update={"kind": kind})) == channels


def test_an_approval_that_notifies_nobody_has_no_notice() -> None:
    state = manual(request=approval_request(None, STAGE_INPUT, {}, None))
    assert book(state).notice(STAGE_INPUT, None, state, {}, NOW) is None


def test_the_rules_are_pure() -> None:
    """No temporalio: the rules run (and are tested) without a server or a workflow sandbox."""
    probe = "import sys, workflows.approvals; print(sorted(m for m in sys.modules if m.split('.')[0] == 'temporalio'))"
    root = Path(__file__).resolve().parents[1]  # `python -c` imports from its working directory
    found = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
