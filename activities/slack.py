"""`notify_slack`: post the approval request to its Slack channel, and keep that message up to date.

`opened` posts the Block Kit message (the stage workflow keeps its channel and ts); `reminder` replies in
its thread; `progress` and `closed` update it for everyone (a closed message has no buttons left).
Failures are raised as retryable errors; the stage workflow never lets them fail the approval wait.
"""

from __future__ import annotations

import structlog
from slack_sdk.errors import SlackApiError, SlackClientError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from conveyor.interface import (
    Activity,
    NoticeKind,
)
from conveyor.links import approval_link
from conveyor.model import ApprovalNotice, SlackMessageRef
from conveyor.slack.messages import approval_blocks, fallback_text, reminder_text
from conveyor.slack.web import BOT_TOKEN_ENV, web_client

log = structlog.get_logger("conveyor.slack")


@activity.defn(name=Activity.NOTIFY_SLACK)
async def notify_slack(notice: ApprovalNotice) -> SlackMessageRef | None:
    slack = web_client()
    if slack is None:
        raise ApplicationError(f"the worker has no {BOT_TOKEN_ENV} to post to Slack with", type="NotificationFailed")
    bound = log.bind(pipeline=notice.pipeline_name, execution=notice.execution_id, action=notice.action_name)
    message = notice.slack_message
    link = approval_link(notice.pipeline_name, notice.execution_id, notice.stage_name, notice.action_name)
    try:
        if notice.kind == NoticeKind.OPENED or message is None:
            if notice.kind == NoticeKind.REMINDER:
                return None  # nothing to remind of: the request itself was never posted
            posted = await slack.chat_postMessage(
                channel=notice.slack_channel or "", text=fallback_text(notice), blocks=approval_blocks(notice, link)
            )
            message = SlackMessageRef(channel=str(posted["channel"]), ts=str(posted["ts"]))
        elif notice.kind == NoticeKind.REMINDER:
            await slack.chat_postMessage(channel=message.channel, thread_ts=message.ts, text=reminder_text(notice))
        else:
            await slack.chat_update(
                channel=message.channel, ts=message.ts, text=fallback_text(notice), blocks=approval_blocks(notice, link)
            )
    except SlackApiError as err:
        raise ApplicationError(
            f"Slack refused the {notice.kind} message: {err.response.get('error')}", type="NotificationFailed"
        ) from None
    except (SlackClientError, OSError) as err:
        raise ApplicationError(f"Slack is unreachable: {err}", type="NotificationFailed") from None
    bound.info("approval.notified", channel="slack", kind=notice.kind, ts=message.ts)
    return message
