"""The Slack fake behaves as slack_sdk and bolt expect: real clients, real HTTP and websockets, no mocks."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.slack_fake import (
    FakeSlack,
    SlackUser,
    block_actions_payload,
    form_body,
    sign,
    view_submission_payload,
)

ALICE = SlackUser(id="U0ALICE", team_id="T0001", name="alice", real_name="Alice A", email="alice@example.com")
BOB = SlackUser(id="U0BOB", team_id="T0001", name="bob", real_name="Bob B")
GONE = SlackUser(id="U0GONE", team_id="T0001", name="gone", real_name="Gone G", deleted=True)
SECRET = "signing-secret"


def approval_blocks(value: str = "token-123") -> list[dict[str, Any]]:
    """An approval message: a section and an actions block with two buttons."""
    return [
        {"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": "*Deploy* to Prod?"}},
        {
            "type": "actions",
            "block_id": "decision",
            "elements": [
                {
                    "type": "button",
                    "action_id": "approve",
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": "reject",
                    "text": {"type": "plain_text", "text": "Reject"},
                    "style": "danger",
                    "value": value,
                },
            ],
        },
    ]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    slack = FakeSlack(users={u.id: u for u in (ALICE, BOB, GONE)}, usergroups={"S0DEPLOYERS": [ALICE.id, BOB.id]})
    await slack.start()
    try:
        yield slack
    finally:
        await slack.stop()


@pytest.fixture
def web(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)


async def test_urls_and_auth_test(fake: FakeSlack, web: AsyncWebClient) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", fake.url)
    assert fake.base_url == f"{fake.url}/api/"
    response = await web.auth_test()
    assert (response["team_id"], response["user_id"], response["bot_id"]) == ("T0001", "UBOT", "BBOT")
    assert "chat:write" in response.headers["x-oauth-scopes"]
    assert fake.calls == [("auth.test", {})]


async def test_post_message_with_blocks_then_update(fake: FakeSlack, web: AsyncWebClient) -> None:
    posted = await web.chat_postMessage(channel="C0DEPLOY", text="Deploy to Prod?", blocks=approval_blocks())
    assert re.fullmatch(r"\d{10}\.\d{6}", posted["ts"])
    assert posted["channel"] == "C0DEPLOY"
    assert posted["message"]["blocks"] == approval_blocks()
    stored = fake.message("C0DEPLOY", posted["ts"])
    assert fake.messages == [stored]
    assert (stored.text, stored.blocks, stored.updates, stored.thread_ts) == (
        "Deploy to Prod?",
        approval_blocks(),
        [],
        None,
    )

    reply = await web.chat_postMessage(channel="C0DEPLOY", text="details", thread_ts=posted["ts"])
    assert float(reply["ts"]) > float(posted["ts"])
    assert fake.message("C0DEPLOY", reply["ts"]).thread_ts == posted["ts"]

    updated = await web.chat_update(channel="C0DEPLOY", ts=posted["ts"], text="Approved by alice", blocks=[])
    assert updated["ts"] == posted["ts"]
    assert (stored.text, stored.blocks) == ("Approved by alice", [])
    assert stored.updates == [{"channel": "C0DEPLOY", "ts": posted["ts"], "text": "Approved by alice", "blocks": []}]

    await web.chat_update(channel="C0DEPLOY", ts=posted["ts"], text="text only")
    assert (stored.text, stored.blocks, len(stored.updates)) == ("text only", [], 2)  # absent blocks are kept

    with pytest.raises(SlackApiError) as refused:
        await web.chat_update(channel="C0DEPLOY", ts="1.000001", text="nope")
    assert refused.value.response["error"] == "message_not_found"


async def test_form_and_query_parameters_are_decoded(fake: FakeSlack, web: AsyncWebClient) -> None:
    posted = await web.api_call(
        "chat.postMessage", data={"channel": "C0DEPLOY", "text": "form", "blocks": json.dumps(approval_blocks())}
    )
    assert fake.message("C0DEPLOY", posted["ts"]).blocks == approval_blocks()
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{fake.base_url}users.info", params={"user": BOB.id}, headers={"Authorization": f"Bearer {fake.bot_token}"}
        ) as response:
            assert (await response.json())["user"]["name"] == "bob"


async def test_slack_limits_are_enforced(web: AsyncWebClient) -> None:
    with pytest.raises(SlackApiError) as refused:
        await web.chat_postMessage(channel="C0DEPLOY", text="big", blocks=approval_blocks("x" * 2001))
    assert refused.value.response["error"] == "invalid_blocks"
    assert any("/blocks/1/elements/0/value" in e for e in refused.value.response["errors"])
    with pytest.raises(SlackApiError) as refused, pytest.warns(UserWarning, match="`text` argument is missing"):
        await web.chat_postMessage(channel="C0DEPLOY")
    assert refused.value.response["error"] == "no_text"


async def test_post_ephemeral(fake: FakeSlack, web: AsyncWebClient) -> None:
    response = await web.chat_postEphemeral(channel="C0DEPLOY", user=BOB.id, text="Not allowed", blocks=[])
    assert re.fullmatch(r"\d{10}\.\d{6}", response["message_ts"])
    assert fake.ephemerals == [{"channel": "C0DEPLOY", "user": BOB.id, "text": "Not allowed", "blocks": []}]


async def test_views_open(fake: FakeSlack, web: AsyncWebClient) -> None:
    view = {
        "type": "modal",
        "callback_id": "reject_reason",
        "private_metadata": "token-123",
        "title": {"type": "plain_text", "text": "Reject"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "blocks": [
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why?"},
                "element": {"type": "plain_text_input", "action_id": "text"},
            }
        ],
    }
    response = await web.views_open(trigger_id="123.456.abc", view=view)
    assert response["view"]["id"].startswith("V")
    assert response["view"]["callback_id"] == "reject_reason"
    assert fake.views == [{"trigger_id": "123.456.abc", "view": response["view"]}]

    submission = view_submission_payload(
        fake.views[0]["view"], ALICE, {"reason": {"text": {"type": "plain_text_input", "value": "flaky"}}}
    )
    assert submission["type"] == "view_submission"
    assert submission["view"]["id"] == response["view"]["id"]
    assert (submission["view"]["callback_id"], submission["view"]["private_metadata"]) == ("reject_reason", "token-123")
    assert submission["view"]["state"]["values"]["reason"]["text"]["value"] == "flaky"
    assert (submission["user"]["id"], submission["team"]["id"]) == (ALICE.id, "T0001")

    with pytest.raises(SlackApiError) as refused:
        await web.views_open(view=view)  # no trigger_id
    assert refused.value.response["error"] == "invalid_arguments"


async def test_users_info_is_a_get(fake: FakeSlack, web: AsyncWebClient) -> None:
    alice = (await web.users_info(user=ALICE.id))["user"]
    assert alice["profile"]["email"] == "alice@example.com"
    assert (alice["id"], alice["team_id"], alice["deleted"], alice["is_bot"]) == (ALICE.id, "T0001", False, False)
    assert "email" not in (await web.users_info(user=BOB.id))["user"]["profile"]
    assert (await web.users_info(user=GONE.id))["user"]["deleted"] is True
    assert fake.calls[0] == ("users.info", {"user": ALICE.id})
    with pytest.raises(SlackApiError) as refused:
        await web.users_info(user="U0NOBODY")
    assert refused.value.response["error"] == "user_not_found"


async def test_usergroups_users_list(web: AsyncWebClient) -> None:
    assert (await web.usergroups_users_list(usergroup="S0DEPLOYERS"))["users"] == [ALICE.id, BOB.id]
    with pytest.raises(SlackApiError) as refused:
        await web.usergroups_users_list(usergroup="S0NONE")
    assert refused.value.response["error"] == "no_such_subteam"


async def test_tokens_are_checked(fake: FakeSlack) -> None:
    for client in (AsyncWebClient(token="xoxb-wrong", base_url=fake.base_url), AsyncWebClient(base_url=fake.base_url)):
        with pytest.raises(SlackApiError) as refused:
            await client.chat_postMessage(channel="C0DEPLOY", text="hi")
        assert refused.value.response["error"] == "invalid_auth"
    bot = AsyncWebClient(token=fake.bot_token, base_url=fake.base_url)
    with pytest.raises(SlackApiError) as refused:
        await bot.apps_connections_open(app_token=fake.bot_token)
    assert refused.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as refused:
        await AsyncWebClient(token=fake.app_token, base_url=fake.base_url).auth_test()
    assert refused.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as refused:
        await bot.api_call("chat.delete", json={"channel": "C0DEPLOY", "ts": "1.1"})
    assert refused.value.response["error"] == "unknown_method"
    assert fake.messages == []


async def test_response_url_records_posts(fake: FakeSlack) -> None:
    url = fake.response_url()
    assert url.startswith(f"{fake.url}/response/") and url != fake.response_url()
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"replace_original": True, "text": "Approved"}) as response:
            assert (response.status, await response.text()) == (200, "ok")
    assert fake.responses == [{"replace_original": True, "text": "Approved"}]


async def test_wait_for(fake: FakeSlack, web: AsyncWebClient) -> None:
    async def post_later() -> str:
        await asyncio.sleep(0.1)
        return (await web.chat_postMessage(channel="C0DEPLOY", text="later"))["ts"]

    task = asyncio.create_task(post_later())
    stored = await fake.wait_for(lambda: fake.messages[0], timeout=2)  # IndexError means "not yet"
    assert stored.ts == await task
    with pytest.raises(AssertionError, match=r"not met within 0\.1s.*chat\.postMessage"):
        await fake.wait_for(lambda: len(fake.messages) == 2, timeout=0.1)


async def test_socket_mode_envelope_and_ack(fake: FakeSlack) -> None:
    client = SocketModeClient(
        app_token=fake.app_token, web_client=AsyncWebClient(token=fake.app_token, base_url=fake.base_url)
    )
    received: list[SocketModeRequest] = []

    async def listener(client: SocketModeClient, request: SocketModeRequest) -> None:
        received.append(request)
        await client.send_socket_mode_response(SocketModeResponse(envelope_id=request.envelope_id, payload={"n": 1}))

    client.socket_mode_request_listeners.append(listener)  # type: ignore[arg-type]
    try:
        await client.connect()
        await asyncio.wait_for(fake.socket_connected.wait(), 2)
        ack = await fake.send_envelope({"type": "block_actions", "actions": []})
    finally:
        await client.close()
    assert [(r.type, r.payload) for r in received] == [("interactive", {"type": "block_actions", "actions": []})]
    assert ack == {"envelope_id": received[0].envelope_id, "payload": {"n": 1}}
    assert fake.calls == [("apps.connections.open", {})]
    await fake.wait_for(lambda: not fake.socket_connected.is_set(), timeout=2)


async def test_send_envelope_without_client_fails_clearly(fake: FakeSlack) -> None:
    with pytest.raises(AssertionError, match="no Socket Mode client connected within 0.1s"):
        await fake.send_envelope({"type": "block_actions"}, timeout=0.1)


async def test_socket_without_ticket_is_refused(fake: FakeSlack) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(f"{fake.url}/socket?ticket=made-up")


def test_sign_is_what_slack_sdk_verifies() -> None:
    body = form_body({"type": "block_actions", "actions": [{"action_id": "approve"}]})
    headers = sign(SECRET, body)
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid_request(body, headers)
    assert (
        verifier.generate_signature(timestamp=headers["X-Slack-Request-Timestamp"], body=body)
        == headers["X-Slack-Signature"]
    )
    assert not verifier.is_valid_request(body + b"x", headers)
    assert not SignatureVerifier("other-secret").is_valid_request(body, headers)
    assert not verifier.is_valid_request(body, sign(SECRET, body, int(time.time()) - 301))


async def test_block_actions_payload_from_a_posted_message(fake: FakeSlack, web: AsyncWebClient) -> None:
    posted = await web.chat_postMessage(channel="C0DEPLOY", text="Deploy?", blocks=approval_blocks())
    message = fake.message("C0DEPLOY", posted["ts"])
    payload = block_actions_payload(message, "reject", BOB)
    (action,) = payload["actions"]
    assert (action["action_id"], action["value"], action["style"]) == ("reject", "token-123", "danger")
    assert (action["block_id"], action["type"]) == ("decision", "button")
    assert payload["container"] == {
        "type": "message",
        "message_ts": posted["ts"],
        "channel_id": "C0DEPLOY",
        "is_ephemeral": False,
    }
    assert (payload["user"]["id"], payload["team"]["id"], payload["channel"]["id"]) == (BOB.id, "T0001", "C0DEPLOY")
    assert payload["message"]["blocks"] == approval_blocks()
    assert payload["response_url"].startswith(f"{fake.url}/response/")
    assert payload["trigger_id"] != block_actions_payload(message, "reject", BOB)["trigger_id"]
    assert (
        block_actions_payload(message, "approve", BOB, response_url="http://x/r", trigger_id="t")["trigger_id"] == "t"
    )
    with pytest.raises(AssertionError, match=r"'deploy'.*\['approve', 'reject'\]"):
        block_actions_payload(message, "deploy", BOB)


async def test_bolt_handles_a_signed_click_against_the_fake(fake: FakeSlack, web: AsyncWebClient) -> None:
    """The helpers fit bolt: a signed click reaches the handler, which updates the message and responds."""
    app = AsyncApp(signing_secret=SECRET, client=web)

    @app.action("approve")
    async def approve(ack: Any, body: dict[str, Any], client: AsyncWebClient, respond: Any) -> None:
        await ack()
        container = body["container"]
        await client.chat_update(channel=container["channel_id"], ts=container["message_ts"], text="ok", blocks=[])
        await respond(text=f"approved by {body['user']['id']}", replace_original=False)

    posted = await web.chat_postMessage(channel="C0DEPLOY", text="Deploy?", blocks=approval_blocks())
    message = fake.message("C0DEPLOY", posted["ts"])
    body = form_body(block_actions_payload(message, "approve", ALICE, response_url=fake.response_url()))
    response = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=sign(SECRET, body)))
    assert response.status == 200
    await fake.wait_for(lambda: fake.responses, timeout=3)
    assert fake.responses == [{"text": f"approved by {ALICE.id}", "replace_original": False}]
    assert message.blocks == [] and message.text == "ok"
    assert [m for m, _ in fake.calls] == ["chat.postMessage", "auth.test", "chat.update"]

    forged = await app.async_dispatch(AsyncBoltRequest(body=body.decode(), headers=sign("wrong", body)))
    assert forged.status == 401


async def test_bolt_socket_mode_against_the_fake(fake: FakeSlack, web: AsyncWebClient) -> None:
    app = AsyncApp(client=web)
    clicked: list[str] = []

    @app.action("approve")
    async def approve(ack: Any, body: dict[str, Any]) -> None:
        await ack()
        clicked.append(body["user"]["id"])

    posted = await web.chat_postMessage(channel="C0DEPLOY", text="Deploy?", blocks=approval_blocks())
    handler = AsyncSocketModeHandler(app, app_token=fake.app_token)
    await handler.connect_async()
    try:
        payload = block_actions_payload(fake.message("C0DEPLOY", posted["ts"]), "approve", ALICE)
        ack = await fake.send_envelope(payload)
    finally:
        await handler.close_async()
    assert clicked == [ALICE.id]
    assert set(ack) == {"envelope_id"}
