"""The approval request as a Slack Block Kit message, and what its buttons carry.

One renderer for every state of the message (waiting, progress toward a quorum, decided, timed out,
stopped): the worker posts and updates it from the stage workflow's notices, so the message follows
decisions from any channel (Slack, `conveyor approve`, `temporal workflow update`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from conveyor.interface import ApprovalOutcome, ApprovalStatus
from conveyor.model import ApprovalNotice

APPROVE_ACTION = "conveyor_approve"
REJECT_ACTION = "conveyor_reject"
REJECT_VIEW = "conveyor_reject_reason"
REASON_BLOCK = "reason"
REASON_INPUT = "reason_input"
Blocks = list[dict[str, Any]]


class ApprovalButton(BaseModel):
    """A button's `value`: which approval, and the token the decision is bound to (at most 2,000 chars)."""

    model_config = ConfigDict(extra="forbid")

    p: str  # pipeline
    e: str  # execution id
    s: str  # stage
    a: str  # action
    t: str  # token

    def encode(self) -> str:
        return json.dumps(self.model_dump(), separators=(",", ":"))

    @classmethod
    def decode(cls, value: str) -> ApprovalButton | None:
        try:
            return cls.model_validate_json(value)
        except ValidationError:
            return None


def escape(text: str) -> str:
    """Slack's `& < >`, escaped in every piece of text we did not write: nothing a pipeline, a person or a
    command says becomes a link, a mention (`<@U...>`, `<!here>`) or broken markup."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def title(notice: ApprovalNotice) -> str:
    """The message's header (plain text: Slack shows it as written)."""
    return f"Approval needed: {notice.pipeline_name} {notice.stage_name}/{notice.action_name}"


def fallback_text(notice: ApprovalNotice) -> str:
    """The message's `text` (notifications, clients without blocks), which Slack reads as mrkdwn."""
    return escape(title(notice))


def not_counted_text(*, approve: bool, reason: str) -> str:
    """The clicker's answer when Conveyor refused the decision (the reason may quote names and summaries)."""
    return f":no_entry: Your {'approval' if approve else 'rejection'} did not count: {escape(reason)}"


def approval_blocks(notice: ApprovalNotice, console_link: str | None = None) -> Blocks:
    """The whole message; its buttons are gone once the approval is closed. `console_link`: the approval's
    page in the console (conveyor.links.approval_link), where it can also be decided."""
    expires = int(notice.expires.timestamp())
    expiry = f"<!date^{expires}^{{date_short_pretty}} {{time}}|{notice.expires.isoformat()}>"
    who = ", ".join(f"`{escape(a)}`" for a in notice.approvers) or "anyone with access"
    fields = [
        f"*Execution*\n`{escape(notice.execution_id)}`",
        f"*Stage / action*\n{escape(notice.stage_name)} / {escape(notice.action_name)}",
        f"*Started by*\n{escape(notice.started_by or 'unknown')}",
        f"*Approvers* (quorum {notice.quorum})\n{who}",
        f"*Expires*\n{expiry}",
    ]
    blocks: Blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": title(notice)[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f[:2000]} for f in fields]},
    ]
    revisions = [_revision_line(r.action_name, r.revision_id, r.revision_summary) for r in notice.revisions]
    if revisions or notice.authors:
        authors = f"\nAuthor: {escape(', '.join(notice.authors))}" if notice.authors else ""
        blocks.append(_section("*Source revision*\n" + "\n".join(revisions) + authors))
    if notice.custom_data:
        blocks.append(_section(f"*Details*\n{escape(notice.custom_data)}"))
    if notice.reviews:
        blocks.append(_section("*Changes to review*\n" + "\n".join(escape(r) for r in notice.reviews)))
    if notice.external_entity_link:
        link = escape(notice.external_entity_link)
        blocks.append(_section(f"*Review*\n<{link}|{link}>"))
    if notice.artifacts:
        bound = ", ".join(f"`{escape(name)}` {digest[:19]}" for name, digest in sorted(notice.artifacts.items()))
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"Bound to {bound}"[:2000]}]})
    if console_link:
        blocks.append(_section(f"<{escape(console_link)}|Open the approval in the console>"))
    blocks.append({"type": "section", "block_id": "conveyor_status", "text": _mrkdwn(status_line(notice))})
    if notice.outcome is None:
        blocks.append({"type": "actions", "block_id": "conveyor_actions", "elements": _buttons(notice)})
    return blocks


def status_line(notice: ApprovalNotice) -> str:
    approved = [a for a in notice.approvals if a.status in (ApprovalStatus.APPROVED, ApprovalStatus.PENDING)]
    names = ", ".join(escape(a.by or "unknown") for a in approved)
    if notice.outcome == ApprovalOutcome.APPROVED:
        return f":white_check_mark: *Approved* by {names}"
    if notice.outcome == ApprovalOutcome.REJECTED:
        rejection = next((a for a in notice.approvals if a.status == ApprovalStatus.REJECTED), None)
        reason = f": {escape(rejection.summary)}" if rejection and rejection.summary else ""
        return f":x: *Rejected* by {escape(rejection.by or 'unknown') if rejection else 'unknown'}{reason}"
    if notice.outcome == ApprovalOutcome.TIMED_OUT:
        return ":hourglass: *Timed out*: nobody decided before the approval expired"
    if notice.outcome == ApprovalOutcome.STOPPED:
        return ":octagonal_sign: *Stopped*: the execution was stopped while the approval waited"
    progress = f"{len(approved)} of {notice.quorum} approvals"
    return f":hourglass_flowing_sand: Waiting: {progress}" + (f" ({names})" if names else "")


def reminder_text(notice: ApprovalNotice) -> str:
    return f"Reminder: {fallback_text(notice).lower()} ({status_line(notice)})"


def reject_modal(button: ApprovalButton, channel: str | None, message_ts: str | None) -> dict[str, Any]:
    """The modal asking for a reason; the button and the message ride along in `private_metadata`."""
    metadata = json.dumps({"button": button.model_dump(), "channel": channel, "ts": message_ts})
    return {
        "type": "modal",
        "callback_id": REJECT_VIEW,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": "Reject approval"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            _section(f"Reject *{escape(button.s)} / {escape(button.a)}* of `{escape(button.e)}`?"),
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_INPUT,
                    "multiline": True,
                    "max_length": 500,
                },
            },
        ],
    }


def _buttons(notice: ApprovalNotice) -> Blocks:
    value = ApprovalButton(
        p=notice.pipeline_name, e=notice.execution_id, s=notice.stage_name, a=notice.action_name, t=notice.token
    ).encode()
    return [
        {
            "type": "button",
            "action_id": APPROVE_ACTION,
            "style": "primary",
            "text": {"type": "plain_text", "text": "Approve"},
            "value": value,
        },
        {
            "type": "button",
            "action_id": REJECT_ACTION,
            "style": "danger",
            "text": {"type": "plain_text", "text": "Reject"},
            "value": value,
        },
    ]


def _revision_line(action: str, revision: str, summary: str | None) -> str:
    first_line = (summary or "").splitlines()[0] if summary else ""
    return f"{escape(action)}: `{escape(revision[:12])}`" + (f" {escape(first_line[:200])}" if first_line else "")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text[:3000]}
