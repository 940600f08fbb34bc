"""The Slack app: Approve and Reject clicks on an approval request become Temporal updates.

Built on slack_bolt (async). Over HTTP (`conveyor serve`, path `/slack/events`) bolt verifies every
request's signature (signing secret, raw body, 5-minute window) and answers 401 otherwise; in Socket
Mode (no public URL) the websocket is the authentication. Each listener acknowledges first and works
after (bolt runs it after the ack), so Slack has its answer within 3 seconds however slow Temporal is.

The clicker is identified by workspace and user id (never a display name), mapped to a named identity
by the identity directory; the update's validator in the stage workflow decides whether the click
counts. The clicker gets an ephemeral answer saying whether it counted and, if not, why; the request
message itself is updated for everyone by the worker, from the stage workflow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from conveyor.client import ConveyorClient, ConveyorError, ExecutionRef, UpdateNotApplied
from conveyor.identities import IdentityDirectory, load_directory
from conveyor.interface import ApprovalStatus
from conveyor.model import ApprovalResult
from conveyor.slack.messages import (
    APPROVE_ACTION,
    REASON_BLOCK,
    REASON_INPUT,
    REJECT_ACTION,
    REJECT_VIEW,
    ApprovalButton,
    not_counted_text,
    reject_modal,
)
from conveyor.slack.web import api_url
from conveyor.slack.web import client as slack_client
from conveyor.spec.validation import DeclarationError

if TYPE_CHECKING:
    from conveyor.service.config import SlackConfig

log = structlog.get_logger("conveyor.slack")
ClientGetter = Callable[[], ConveyorClient]


def create_slack_app(
    conveyor: ClientGetter, web: AsyncWebClient, directory: IdentityDirectory, signing_secret: str | None
) -> AsyncApp:
    """The bolt app; `signing_secret` None serves Socket Mode only (HTTP requests would all be refused)."""
    app = AsyncApp(
        client=web,
        signing_secret=signing_secret or "",
        request_verification_enabled=True,
        process_before_response=False,  # ack first, then the listener runs: Slack's 3 seconds hold
    )
    deciding = _Decider(conveyor, web, directory)

    @app.action(APPROVE_ACTION)
    async def approve(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        button = _button(body)
        channel, _ = _message_of(body)
        if button is not None:
            await deciding.decide(body["user"], body.get("team"), channel, button, approve=True, reason="")

    @app.action(REJECT_ACTION)
    async def reject(ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        button = _button(body)
        if button is None:
            return
        channel, ts = _message_of(body)
        # The reason comes first: the decision is sent when the modal is submitted.
        await web.views_open(trigger_id=body["trigger_id"], view=reject_modal(button, channel, ts))

    @app.view(REJECT_VIEW)
    async def reject_reason(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        await ack()  # closes the modal
        metadata = json.loads(view.get("private_metadata") or "{}")
        button = ApprovalButton.model_validate(metadata["button"])
        reason = (view["state"]["values"][REASON_BLOCK][REASON_INPUT].get("value") or "").strip()
        await deciding.decide(
            body["user"], body.get("team"), metadata.get("channel"), button, approve=False, reason=reason
        )

    return app


class _Decider:
    def __init__(self, conveyor: ClientGetter, web: AsyncWebClient, directory: IdentityDirectory) -> None:
        self.conveyor = conveyor
        self.web = web
        self.directory = directory

    async def decide(
        self,
        user: dict[str, Any],
        team: dict[str, Any] | None,
        channel: str | None,
        button: ApprovalButton,
        *,
        approve: bool,
        reason: str,
    ) -> None:
        team_id = user.get("team_id") or (team or {}).get("id") or ""
        principal = f"slack:{team_id}/{user['id']}"
        names = self.directory.closure(principal) | await self._email_names(user["id"])
        identity = self.directory.identity_for(principal) or principal
        bound = log.bind(
            pipeline=button.p, execution=button.e, stage=button.s, action=button.a, slack_user=principal, by=identity
        )
        try:
            result = await self.conveyor().decide(
                ExecutionRef(button.p, button.e),
                button.s,
                button.a,
                approve=approve,
                summary=reason,
                token=button.t,
                by=identity,
                source="slack",
                principals=sorted(names - {identity}),
            )
        except UpdateNotApplied as pending:  # sent: it may still count, so "did not count" would be false
            bound.warning("slack.decision_pending", approve=approve, reason=str(pending))
            await self._answer(channel, user["id"], f":hourglass: Your {_verb(approve)} is not counted yet: {pending}")
            return
        except ConveyorError as refused:
            bound.warning("slack.decision_refused", approve=approve, reason=str(refused))
            await self._answer(channel, user["id"], not_counted_text(approve=approve, reason=str(refused)))
            return
        except Exception as err:  # noqa: BLE001 - the clicker must hear something; the error is logged
            bound.error("slack.decision_failed", approve=approve, error=type(err).__name__)
            await self._answer(
                channel, user["id"], f":warning: Conveyor could not record your {_verb(approve)}; try again."
            )
            return
        bound.info("slack.decision", status=result.status, approvals=result.approvals, quorum=result.quorum)
        await self._answer(channel, user["id"], _counted(result))

    async def _email_names(self, user_id: str) -> set[str]:
        """The clicker's Slack profile email (Slack-verified), as a principal, with the directory's names."""
        try:
            response = await self.web.users_info(user=user_id)
        except (SlackApiError, SlackClientError, OSError):
            return set()
        email = (response.get("user") or {}).get("profile", {}).get("email")
        return self.directory.closure(f"email:{email}") if email else set()

    async def _answer(self, channel: str | None, user: str, text: str) -> None:
        try:
            if channel:
                await self.web.chat_postEphemeral(channel=channel, user=user, text=text)
            else:  # no channel (a modal opened elsewhere): a direct message
                await self.web.chat_postMessage(channel=user, text=text)
        except (SlackApiError, SlackClientError, OSError) as err:
            log.warning("slack.answer_failed", error=str(err))


def _button(body: dict[str, Any]) -> ApprovalButton | None:
    actions = body.get("actions") or []
    button = ApprovalButton.decode(actions[0].get("value", "")) if actions else None
    if button is None:
        log.warning("slack.unreadable_button", action_id=actions[0].get("action_id") if actions else None)
    return button


def _message_of(body: dict[str, Any]) -> tuple[str | None, str | None]:
    container = body.get("container") or {}
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
    return channel, container.get("message_ts")


def _verb(approve: bool) -> str:
    return "approval" if approve else "rejection"


def _counted(result: ApprovalResult) -> str:
    if result.status == ApprovalStatus.PENDING:
        return f":ballot_box_with_check: Your approval counted: {result.approvals} of {result.quorum} approvals."
    if result.status == ApprovalStatus.APPROVED:
        return ":white_check_mark: Your approval counted: approved, the pipeline moves on."
    return ":x: Your rejection counted: the approval is rejected."


@dataclass(frozen=True)
class SlackOptions:
    """What the Slack app runs with, read from the environment variables the service config names."""

    bot_token: str
    signing_secret: str | None  # None: no HTTP mode
    app_token: str | None  # set: Socket Mode
    api_url: str
    directory: IdentityDirectory

    def web_client(self) -> AsyncWebClient:
        return slack_client(self.bot_token, self.api_url)


def slack_options(config: SlackConfig, identities: Path | None) -> SlackOptions:
    """Options from the environment; a missing variable is a ConveyorError naming it and the setting."""
    env = os.environ

    def required(variable: str, setting: str, why: str) -> str:
        value = env.get(variable)
        if not value:
            raise ConveyorError(f"{variable} is not set ({why}; the variable's name is slack.{setting})")
        return value

    bot_token = required(config.bot_token_env, "botTokenEnv", "the Slack app's bot token, xoxb-...")
    app_token = (
        required(config.app_token_env, "appTokenEnv", "Socket Mode needs an app-level token, xapp-...")
        if config.socket_mode
        else None
    )
    signing_secret = env.get(config.signing_secret_env) or None
    if signing_secret is None and not config.socket_mode:
        required(config.signing_secret_env, "signingSecretEnv", "HTTP mode verifies every request with it")
    try:
        directory = load_directory(identities)
    except DeclarationError as err:
        raise ConveyorError(str(err)) from None
    return SlackOptions(
        bot_token=bot_token,
        signing_secret=signing_secret,
        app_token=app_token,
        api_url=api_url(config.api_url),
        directory=directory,
    )
