"""Approval notifications: an SNS topic (CodePipeline's approval JSON) and an HMAC-signed JSON webhook.

Failures are raised as retryable errors; the stage workflow never lets them fail the approval wait.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from typing import Any

import boto3
import httpx
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from conveyor.interface import (
    Activity,
)
from conveyor.links import approval_link
from conveyor.model import ApprovalNotice

log = structlog.get_logger("conveyor.notifications")


def approval_message(notice: ApprovalNotice) -> dict[str, Any]:
    """The shape CodePipeline publishes for a manual approval, with Conveyor's additions beside it."""
    region = notice.notification_arn.split(":")[3] if notice.notification_arn else None
    return {
        "region": region,
        "approval": {
            "pipelineName": notice.pipeline_name,
            "stageName": notice.stage_name,
            "actionName": notice.action_name,
            "token": notice.token,
            "expires": notice.expires.isoformat(),
            "externalEntityLink": notice.external_entity_link,
            # CodePipeline's link to its console's approval page: ours, when CONVEYOR_PUBLIC_URL says where it is.
            "approvalReviewLink": approval_link(
                notice.pipeline_name, notice.execution_id, notice.stage_name, notice.action_name
            ),
            "customData": notice.custom_data,
        },
        "conveyor": {
            "kind": notice.kind,
            "executionId": notice.execution_id,
            "approvers": notice.approvers,
            "quorum": notice.quorum,
            "startedBy": notice.started_by,
            "sourceRevisions": notice.source_revisions,
            "reviews": notice.reviews,
            "artifacts": notice.artifacts,
        },
    }


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@activity.defn(name=Activity.NOTIFY_APPROVAL)
async def notify_approval(notice: ApprovalNotice) -> None:
    message = approval_message(notice)
    bound = log.bind(pipeline=notice.pipeline_name, execution=notice.execution_id, action=notice.action_name)
    if notice.notification_arn:
        await asyncio.to_thread(_publish_sns, notice.notification_arn, message)
        bound.info("approval.notified", channel="sns", kind=notice.kind)
    if notice.webhook_url:
        await _post_webhook(notice, message)
        bound.info("approval.notified", channel="webhook", kind=notice.kind)


def _publish_sns(topic_arn: str, message: dict[str, Any]) -> None:
    region = topic_arn.split(":")[3]
    client = boto3.client("sns", region_name=region)  # AWS_ENDPOINT_URL and credentials from the environment
    subject = f"APPROVAL NEEDED: {message['approval']['pipelineName']} {message['approval']['stageName']}"[:100]
    try:
        client.publish(TopicArn=topic_arn, Message=json.dumps(message), Subject=subject)
    except Exception as err:  # noqa: BLE001 - retried by Temporal; the approval keeps waiting
        raise ApplicationError(f"SNS publish to {topic_arn} failed: {err}", type="NotificationFailed") from None


async def _post_webhook(notice: ApprovalNotice, message: dict[str, Any]) -> None:
    body = json.dumps(message, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "X-Conveyor-Event": f"approval.{notice.kind}"}
    if notice.webhook_secret_env:
        secret = os.environ.get(notice.webhook_secret_env)
        if not secret:
            raise ApplicationError(
                f"the worker has no {notice.webhook_secret_env} to sign the approval webhook with",
                type="NotificationFailed",
            )
        headers["X-Conveyor-Signature-256"] = sign(secret, body)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(notice.webhook_url or "", content=body, headers=headers)
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise ApplicationError(f"approval webhook failed: {err}", type="NotificationFailed") from None
