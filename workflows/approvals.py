"""The approval rules of a stage: which approval a decision is for, who may decide it, when it is decided.

Pure (no temporalio): the stage workflow keeps the update/signal handlers, the durable wait and the
notification activities, and applies what `ApprovalBook` answers; `now` and new tokens come from it
(`workflow.now()`, `workflow.uuid4()`). The rules:
- a decision names its approval (`actionName`), or the stage has exactly one waiting;
- it carries the approval's current token;
- with a policy: it comes from an allowed source, from an allowed approver, from nobody separation of
  duties keeps out (the starter, the source revision's authors, unless the policy allows them), and from
  someone who has not approved already (one person counts once, under any of their names);
- any rejection rejects; approvals decide once they reach the quorum.
"""

from __future__ import annotations

from datetime import datetime

from conveyor.identities import allowed_deciders, decider_names, excluded_deciders
from conveyor.interface import Activity, ApprovalOutcome, ApprovalStatus, NoticeKind
from conveyor.model import (
    ActionOutcome,
    ActionState,
    ApprovalDecision,
    ApprovalNotice,
    ApprovalRequest,
    ApprovalResult,
    ApproverSnapshot,
    ArtifactRef,
    ErrorDetails,
    StageInput,
)
from conveyor.providers.manual import MANUAL
from conveyor.spec.declaration import ApprovalPolicy

MANUAL_PROVIDER = MANUAL.name


class ApprovalRefused(Exception):
    """A decision the rules do not accept; the message says why (and is what the decider sees)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApprovalBook:
    """The approvals of one stage attempt: their state lives in the stage's `ActionState`s (what `status`
    shows), the final decisions in `decisions` (what the approval waits for)."""

    def __init__(self, stage_name: str, actions: list[ActionState]) -> None:
        self.stage_name = stage_name
        self._actions = actions  # the stage state's own list: shared, never copied
        self.decisions: dict[str, ApprovalResult] = {}

    # --- who may decide which approval ----------------------------------------------------------

    def pending(self, decision: ApprovalDecision) -> ActionState:
        """The approval the decision is for, or ApprovalRefused saying why there is none."""
        waiting = [a for a in self._actions if a.token is not None]
        if decision.action_name is None:
            if len(waiting) != 1:
                names = ", ".join(a.action_name for a in waiting) or "none"
                raise ApprovalRefused(
                    f"stage '{self.stage_name}' has {len(waiting)} approvals waiting ({names}); "
                    "name one with actionName"
                )
            return waiting[0]
        action = self._named(decision.action_name)
        if action is None or action.provider != MANUAL_PROVIDER:
            raise ApprovalRefused(f"stage '{self.stage_name}' has no approval action '{decision.action_name}'")
        if action.approval is not None:
            raise ApprovalRefused(
                f"approval '{action.action_name}' was already decided: {action.approval.status} "
                f"by {action.approval.by or 'unknown'}"
            )
        if action.token is None:
            raise ApprovalRefused(f"approval '{action.action_name}' is not waiting for a decision")
        return action

    def check(self, decision: ApprovalDecision) -> ActionState:
        """The approval the decision is for, if its policy allows this decider; else ApprovalRefused."""
        action = self.pending(decision)
        if decision.token != action.token:
            raise ApprovalRefused(
                f"the token does not match approval '{action.action_name}' (stale or mistyped); "
                "read the current token with `conveyor status`"
            )
        request = action.approval_request
        if request is None:
            return action
        who = decision.by or ""
        names = decider_names(decision.by, decision.principals)
        if request.sources is not None and decision.source not in request.sources:
            raise ApprovalRefused(
                f"approval '{action.action_name}' does not take decisions from '{decision.source}' "
                f"(allowed: {', '.join(request.sources)})"
            )
        if request.approvers and not names & set(allowed_deciders(request)):
            raise ApprovalRefused(
                f"'{who or 'an unnamed caller'}' may not decide approval '{action.action_name}' "
                f"(approvers: {', '.join(request.approvers)})"
            )
        if names & excluded_deciders(request):
            raise ApprovalRefused(
                f"'{who}' started this execution or wrote its source revision, and may not decide approval "
                f"'{action.action_name}' (separation of duties)"
            )
        if any(names & decider_names(a.by, a.principals) for a in action.approvals):
            raise ApprovalRefused(f"'{who}' has already approved '{action.action_name}'; another approver is needed")
        return action

    # --- deciding ---------------------------------------------------------------------------------

    def decide(self, decision: ApprovalDecision, status: ApprovalStatus, now: datetime) -> ApprovalResult:
        """Check the decision and record it. Any rejection rejects; approvals decide once they reach the
        quorum (the result is Pending before). A final decision closes the approval (its token is gone)."""
        action = self.check(decision)
        quorum = action.approval_request.quorum if action.approval_request else 1
        approvals = len(action.approvals) + (1 if status == ApprovalStatus.APPROVED else 0)
        final = status == ApprovalStatus.REJECTED or approvals >= quorum
        result = ApprovalResult(
            action_name=action.action_name,
            status=status if final else ApprovalStatus.PENDING,
            summary=decision.summary,
            by=decision.by,
            decided_at=now,
            source=decision.source,
            approvals=approvals,
            quorum=quorum,
            principals=sorted(decider_names(decision.by, decision.principals) - {decision.by or ""}),
        )
        action.approvals.append(result)
        if final:
            action.approval = result
            action.token = None
            self.decisions[action.action_name] = result
        return result

    def record_refusal(self, decision: ApprovalDecision, status: ApprovalStatus, refused: ApprovalRefused) -> None:
        """A signal cannot be refused to its sender: the refusal is recorded on the approval it named (or
        the stage's first approval), where `status` shows it."""
        target = self._named(decision.action_name) or next(
            (a for a in self._actions if a.provider == MANUAL_PROVIDER), None
        )
        if target is not None:
            target.refused_decisions.append(refusal_text(decision, status, refused))

    def _named(self, action_name: str | None) -> ActionState | None:
        return next((a for a in self._actions if a.action_name == action_name), None)

    # --- opening and closing ----------------------------------------------------------------------

    def notice(
        self,
        input: StageInput,
        policy: ApprovalPolicy | None,
        state: ActionState,
        configuration: dict[str, str],
        expires: datetime,
    ) -> ApprovalNotice | None:
        """What every notification of this approval says; None when it notifies nobody."""
        request = state.approval_request
        assert state.token is not None and request is not None
        notice = ApprovalNotice(
            kind=NoticeKind.OPENED,
            pipeline_name=input.pipeline_name,
            execution_id=input.execution_id,
            stage_name=self.stage_name,
            action_name=state.action_name,
            token=state.token,
            expires=expires,
            custom_data=configuration.get("CustomData"),
            external_entity_link=configuration.get("ExternalEntityLink"),
            approvers=request.approvers,
            quorum=request.quorum,
            started_by=input.started_by,
            source_revisions=request.source_revisions,
            artifacts=request.artifacts,
            notification_arn=configuration.get("NotificationArn"),
            webhook_url=policy.notify_webhook if policy else None,
            webhook_secret_env=policy.notify_webhook_secret_env if policy else None,
            slack_channel=policy.slack_channel if policy else None,
            revisions=list(input.source_revisions_seen),
            authors=list(input.source_authors),
            reviews=list(request.reviews),
        )
        return notice if notice.notification_arn or notice.webhook_url or notice.slack_channel else None


def refusal_text(decision: ApprovalDecision, status: ApprovalStatus, refused: ApprovalRefused) -> str:
    """How `status` shows a refused signal: `approve by bob: <why>`."""
    verb = {ApprovalStatus.APPROVED: "approve", ApprovalStatus.REJECTED: "reject"}[status]
    return f"{verb} by {decision.by or 'unknown'}: {refused}"


def approval_request(
    policy: ApprovalPolicy | None,
    input: StageInput,
    artifacts: dict[str, ArtifactRef],
    custom_data: str | None,
) -> ApprovalRequest:
    """What an approval is bound to (artifacts, revisions) and, with a policy, who may decide it."""
    excluded = []
    if policy is None or not policy.allow_starter:
        excluded += [input.started_by] if input.started_by else []
    if policy is None or not policy.allow_author:
        excluded += input.source_authors
    return ApprovalRequest(
        approvers=list(policy.approvers) if policy else [],
        quorum=policy.quorum if policy else 1,
        # Separation of duties applies once a policy names its approvers; without one, anyone may decide.
        excluded=sorted(set(excluded)) if policy else [],
        sources=policy.sources if policy else None,
        artifacts=input.artifact_digests | {name: ref.digest for name, ref in artifacts.items()},
        source_revisions=[f"{r.action_name}:{r.revision_id}" for r in input.source_revisions_seen],
        custom_data=custom_data,
    )


def apply_snapshot(request: ApprovalRequest, snapshot: ApproverSnapshot) -> ErrorDetails | None:
    """Bind the request to who may decide, resolved when it opened; the error when that is nobody."""
    request.allowed, request.excluded, request.problems = snapshot.allowed, snapshot.excluded, snapshot.problems
    if request.approvers and not snapshot.allowed:
        return ErrorDetails(code="ApproversUnresolved", message="nobody may decide: " + "; ".join(snapshot.problems))
    return None


def outcome_of(decision: ApprovalResult) -> ActionOutcome | ErrorDetails:
    """What a final decision makes of the approval action: its outcome, or (rejected) its failure."""
    if decision.status == ApprovalStatus.REJECTED:
        return ErrorDetails(
            code="ApprovalRejected", message=f"rejected by {decision.by or 'unknown'}: {decision.summary}"
        )
    return ActionOutcome(summary=decision.summary or f"approved by {decision.by or 'unknown'}")


def timed_out(timeout_minutes: int) -> ErrorDetails:
    return ErrorDetails(code="ApprovalTimedOut", message=f"no decision within {_minutes_text(timeout_minutes)}")


def stopped() -> ErrorDetails:
    return ErrorDetails(code="ApprovalCancelled", message="the execution was stopped while the approval waited")


def progress_notice(
    base: ApprovalNotice, kind: NoticeKind, state: ActionState, outcome: ApprovalOutcome | None
) -> ApprovalNotice:
    """The approval's notice at this point: what it opened with, the approvals so far, how it closed."""
    return base.model_copy(update={"kind": kind, "approvals": list(state.approvals), "outcome": outcome})


def notice_channels(notice: ApprovalNotice) -> list[Activity]:
    """The notification activities a notice goes out through, in order: SNS and the webhook only when it
    opens or reminds; Slack at every step (its message follows the approval)."""
    channels = []
    if notice.kind in (NoticeKind.OPENED, NoticeKind.REMINDER) and (notice.notification_arn or notice.webhook_url):
        channels.append(Activity.NOTIFY_APPROVAL)
    if notice.slack_channel:
        channels.append(Activity.NOTIFY_SLACK)
    return channels


def _minutes_text(minutes: int) -> str:
    if minutes % (24 * 60) == 0:
        days = minutes // (24 * 60)
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{minutes} minutes"
