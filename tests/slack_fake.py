"""A small fake of the Slack Web API (+ response_url, + a Socket Mode websocket) served by aiohttp on 127.0.0.1.

Tests point real clients at it (`AsyncWebClient(token, base_url=fake.base_url)`, bolt, `SocketModeClient`) and build
what Slack would send back (clicks, modal submissions, signatures) from what the fake stored.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import WSMsgType, web

T = TypeVar("T")

APP_ID = "A0001"
BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"
BOT_SCOPES = "chat:write,commands,users:read,users:read.email,usergroups:read"
JSON_FIELDS = ("blocks", "view", "attachments", "metadata")  # form bodies carry these as JSON strings


@dataclass
class SlackUser:
    """A workspace member as users.info describes it."""

    id: str
    team_id: str
    name: str
    real_name: str
    email: str | None = None
    deleted: bool = False
    is_bot: bool = False

    def info(self) -> dict[str, Any]:
        """The `user` object users.info returns (the email only when there is one, as without the scope)."""
        profile: dict[str, Any] = {"real_name": self.real_name, "display_name": self.name}
        if self.email is not None:
            profile["email"] = self.email
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "real_name": self.real_name,
            "deleted": self.deleted,
            "is_bot": self.is_bot,
            "profile": profile,
        }


@dataclass
class StoredMessage:
    """A message posted with chat.postMessage, changed in place by chat.update."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    updates: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    server_url: str = field(default="", repr=False, compare=False)  # the fake's URL, for default response_urls

    def as_slack(self) -> dict[str, Any]:
        """The message object as Slack returns it and puts it in interaction payloads."""
        message: dict[str, Any] = {
            "type": "message",
            "user": BOT_USER_ID,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "text": self.text,
            "blocks": copy.deepcopy(self.blocks),
            "ts": self.ts,
        }
        if self.thread_ts:
            message["thread_ts"] = self.thread_ts
        return message


def _decode_json_fields(params: dict[str, Any]) -> dict[str, Any]:
    """Decode blocks/view/... sent as JSON strings (form bodies, query strings); leave anything else as sent."""
    for key in JSON_FIELDS:
        value = params.get(key)
        if isinstance(value, str):
            try:
                params[key] = json.loads(value)
            except ValueError:
                pass  # left as a string: the method reports invalid_blocks / invalid_arguments
    return params


def _block_errors(blocks: Any, limit: int = 50) -> list[str]:
    """The limits Slack enforces that an approval message can hit (count, button value/action_id/text, ids)."""
    if not isinstance(blocks, list) or not all(isinstance(b, dict) and "type" in b for b in blocks):
        return ["blocks must be a list of objects with a type"]
    errors = [f"no more than {limit} items allowed [json-pointer:/blocks]"] if len(blocks) > limit else []
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        if "block_id" in block:
            if block["block_id"] in block_ids:
                errors.append(f"duplicate block_id {block['block_id']!r} [json-pointer:/blocks/{i}/block_id]")
            block_ids.add(block["block_id"])
        text = block.get("text")
        if isinstance(text, dict) and len(text.get("text", "")) > 3000:
            errors.append(f"must be less than 3001 characters [json-pointer:/blocks/{i}/text/text]")
        elements = [(f"elements/{j}", e) for j, e in enumerate(block.get("elements") or [])]
        if isinstance(block.get("accessory"), dict):
            elements.append(("accessory", block["accessory"]))
        action_ids: set[str] = set()
        for where, element in elements:
            pointer = f"/blocks/{i}/{where}"
            if not isinstance(element, dict) or element.get("type") != "button":
                continue
            if len(str(element.get("value", ""))) > 2000:
                errors.append(f"must be less than 2001 characters [json-pointer:{pointer}/value]")
            action_id = str(element.get("action_id", ""))
            if len(action_id) > 255:
                errors.append(f"must be less than 256 characters [json-pointer:{pointer}/action_id]")
            if action_id and action_id in action_ids:
                errors.append(f"duplicate action_id {action_id!r} [json-pointer:{pointer}/action_id]")
            action_ids.add(action_id)
            if len(element.get("text", {}).get("text", "")) > 75:
                errors.append(f"must be less than 76 characters [json-pointer:{pointer}/text/text]")
    return errors


def _error(error: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": error, **extra}


class FakeSlack:
    """The Slack Web API methods an approval app calls, a response_url sink and a Socket Mode websocket."""

    def __init__(
        self,
        *,
        users: dict[str, SlackUser] | None = None,
        usergroups: dict[str, list[str]] | None = None,
        bot_token: str = "xoxb-test",
        app_token: str = "xapp-test",
        team_id: str = "T0001",
    ) -> None:
        self.users: dict[str, SlackUser] = dict(users or {})
        self.usergroups: dict[str, list[str]] = {k: list(v) for k, v in (usergroups or {}).items()}
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.url = ""
        self.base_url = ""
        self.messages: list[StoredMessage] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.acks: list[dict[str, Any]] = []  # every message with an envelope_id a socket client sent
        self.socket_connected = asyncio.Event()
        self._micros = itertools.count(1_700_000_000_000_100, 100)  # ts: unique, increasing
        self._ids = itertools.count(1)
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._pending_acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._runner: web.AppRunner | None = None
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "views.open": self._views_open,
            "users.info": self._users_info,
            "usergroups.users.list": self._usergroups_users_list,
            "apps.connections.open": self._apps_connections_open,
        }

    # -- lifecycle ------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind a free port on 127.0.0.1 and serve."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/response/{id}", self._response)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/api/"

    async def stop(self) -> None:
        """Close the websockets and the server."""
        for ws in list(self._sockets):
            await ws.close()
        for future in self._pending_acks.values():
            future.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- helpers for tests ----------------------------------------------------------------------------------------

    def message(self, channel: str, ts: str) -> StoredMessage:
        """The stored message; AssertionError listing what is stored if there is none."""
        for message in self.messages:
            if message.channel == channel and message.ts == ts:
                return message
        stored = [(m.channel, m.ts) for m in self.messages]
        raise AssertionError(f"no message {ts} in {channel}; stored: {stored}")

    async def wait_for(self, predicate: Callable[[], T | None | bool], timeout: float = 20) -> T:
        """Poll `predicate` every 50 ms until it returns something truthy, and return that.

        A LookupError or AssertionError from the predicate counts as "not yet". AssertionError on timeout.
        """
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = predicate()
                if last:
                    return last  # type: ignore[return-value]
            except (LookupError, AssertionError) as e:
                last = e
            if time.monotonic() >= deadline:
                name = getattr(predicate, "__qualname__", repr(predicate))
                recent = [method for method, _ in self.calls[-10:]]
                raise AssertionError(
                    f"condition {name} not met within {timeout}s (last result: {last!r}; last API calls: {recent})"
                )
            await asyncio.sleep(0.05)

    def response_url(self) -> str:
        """A fresh response_url on the fake; what is POSTed to it lands in `responses`."""
        return f"{self.url}/response/{uuid.uuid4().hex}"

    async def send_envelope(
        self, payload: dict[str, Any], type: str = "interactive", timeout: float = 10
    ) -> dict[str, Any]:
        """Send an envelope to the Socket Mode client that connected last and return its ack.

        AssertionError if no client connects within `timeout` or the ack does not come within 3 s (Slack's limit).
        """
        try:
            await asyncio.wait_for(self.socket_connected.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no Socket Mode client connected within {timeout}s") from None
        ws = self._sockets[-1]
        envelope_id = str(uuid.uuid4())
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope_id] = future
        envelope = {"envelope_id": envelope_id, "type": type, "payload": payload, "accepts_response_payload": True}
        try:
            await ws.send_json(envelope)
            return await asyncio.wait_for(future, 3)
        except TimeoutError:
            raise AssertionError(f"no ack for envelope {envelope_id} ({type}) within 3 s") from None
        finally:
            self._pending_acks.pop(envelope_id, None)

    # -- HTTP -----------------------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    return web.json_response(_error("invalid_json"))
                if isinstance(body, dict):
                    params.update(body)
            else:
                params.update(dict(await request.post()))
        params = _decode_json_fields(params)
        self.calls.append((method, params))
        handler = self._methods.get(method)
        if handler is None:
            return web.json_response(_error("unknown_method"))
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if request.headers.get("Authorization", "") != f"Bearer {expected}":
            return web.json_response(_error("invalid_auth"))
        result = await handler(params)
        headers = {"x-oauth-scopes": BOT_SCOPES} if method == "auth.test" else None
        return web.json_response(result, headers=headers)

    async def _response(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        self.responses.append(body)
        return web.Response(text="ok")

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "fake-slack", "build_number": 1, "approximate_connection_time": 3600},
                    "connection_info": {"app_id": APP_ID},
                }
            )
            self.socket_connected.set()
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if isinstance(data, dict) and "envelope_id" in data:
                    self.acks.append(data)
                    future = self._pending_acks.get(data["envelope_id"])
                    if future is not None and not future.done():
                        future.set_result(data)
        finally:
            self._sockets.remove(ws)
            if not self._sockets:
                self.socket_connected.clear()
        return ws

    # -- Web API methods ------------------------------------------------------------------------------------------

    def _next_ts(self) -> str:
        micros = next(self._micros)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    async def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://fake-workspace.slack.com/",
            "team": "Fake Workspace",
            "user": "conveyor",
            "team_id": self.team_id,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    async def _chat_post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return _error("channel_not_found")
        blocks = params.get("blocks", [])
        if errors := _block_errors(blocks):
            return _error("invalid_blocks", errors=errors)
        if not params.get("text") and not blocks:
            return _error("no_text")
        message = StoredMessage(
            channel=params["channel"],
            ts=self._next_ts(),
            text=params.get("text", ""),
            blocks=blocks,
            thread_ts=params.get("thread_ts"),
            server_url=self.url,
        )
        self.messages.append(message)
        return {"ok": True, "channel": message.channel, "ts": message.ts, "message": message.as_slack()}

    async def _chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return _error("channel_not_found")
        try:
            message = self.message(params["channel"], str(params.get("ts")))
        except AssertionError:
            return _error("message_not_found")
        if "blocks" in params and (errors := _block_errors(params["blocks"])):
            return _error("invalid_blocks", errors=errors)
        if "text" in params:
            message.text = params["text"]
        if "blocks" in params:  # absent: Slack keeps the blocks; [] removes them
            message.blocks = params["blocks"]
        message.updates.append(params)
        return {
            "ok": True,
            "channel": message.channel,
            "ts": message.ts,
            "text": message.text,
            "message": message.as_slack(),
        }

    async def _chat_post_ephemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("channel"):
            return _error("channel_not_found")
        if not params.get("user"):
            return _error("user_not_found")
        if errors := _block_errors(params.get("blocks", [])):
            return _error("invalid_blocks", errors=errors)
        self.ephemerals.append(params)
        return {"ok": True, "message_ts": self._next_ts()}

    async def _views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        view = params.get("view")
        if not params.get("trigger_id") or not isinstance(view, dict):
            return _error("invalid_arguments")
        if errors := _block_errors(view.get("blocks", []), limit=100):
            return _error("invalid_arguments", response_metadata={"messages": errors})
        opened = {
            "id": f"V{next(self._ids):010d}",
            "team_id": self.team_id,
            "app_id": APP_ID,
            "bot_id": BOT_ID,
            "private_metadata": "",
            "callback_id": "",
            "state": {"values": {}},
            "hash": uuid.uuid4().hex,
            **view,
        }
        self.views.append({**params, "view": opened})
        return {"ok": True, "view": opened}

    async def _users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user")))
        return {"ok": True, "user": user.info()} if user else _error("user_not_found")

    async def _usergroups_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        members = self.usergroups.get(str(params.get("usergroup")))
        return {"ok": True, "users": list(members)} if members is not None else _error("no_such_subteam")

    async def _apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"ok": True, "url": f"{self.url.replace('http://', 'ws://')}/socket?ticket={ticket}"}


# -- what Slack sends the app ---------------------------------------------------------------------------------------


def sign(signing_secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack sends with a request to the app's request URL: timestamp, v0 signature, content type."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(signing_secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def form_body(payload: dict[str, Any]) -> bytes:
    """An interaction payload as Slack POSTs it: urlencoded `payload=<json>`."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def _trigger_id() -> str:
    return f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}"


def _user(user: SlackUser) -> dict[str, str]:
    return {"id": user.id, "team_id": user.team_id, "username": user.name, "name": user.name}


def _buttons(blocks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(block, button) for every button in the blocks, in actions blocks and as section accessories."""
    found = []
    for block in blocks:
        elements = list(block.get("elements") or [])
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        found += [(block, e) for e in elements if isinstance(e, dict) and e.get("type") == "button"]
    return found


def block_actions_payload(
    message: StoredMessage,
    action_id: str,
    user: SlackUser,
    *,
    response_url: str | None = None,
    trigger_id: str | None = None,
) -> dict[str, Any]:
    """The block_actions payload of `user` clicking the button `action_id` of a stored message.

    `response_url` defaults to a fresh one on the fake that stored the message; `trigger_id` to a unique one.
    """
    buttons = _buttons(message.blocks)
    match = next(((b, e) for b, e in buttons if e.get("action_id") == action_id), None)
    if match is None:
        available = [e.get("action_id") for _, e in buttons]
        raise AssertionError(f"no button {action_id!r} in message {message.ts}; available action_ids: {available}")
    block, button = match
    action = {
        **copy.deepcopy(button),
        "block_id": block.get("block_id", ""),
        "action_ts": f"{time.time():.6f}",
        "type": "button",
    }
    return {
        "type": "block_actions",
        "user": _user(user),
        "api_app_id": APP_ID,
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id or _trigger_id(),
        "team": {"id": user.team_id, "domain": "fake-workspace"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": message.channel, "name": message.channel},
        "message": message.as_slack(),
        "state": {"values": {}},
        "response_url": response_url or f"{message.server_url}/response/{uuid.uuid4().hex}",
        "actions": [action],
    }


def view_submission_payload(view: dict[str, Any], user: SlackUser, values: dict[str, dict[str, dict]]) -> dict:
    """The view_submission payload of `user` submitting an opened view (an entry of `FakeSlack.views`' "view")
    with `values` as state: {block_id: {action_id: {"type": ..., "value": ...}}}."""
    return {
        "type": "view_submission",
        "user": _user(user),
        "team": {"id": user.team_id, "domain": "fake-workspace"},
        "enterprise": None,
        "is_enterprise_install": False,
        "api_app_id": APP_ID,
        "token": "verification-token-unused",
        "trigger_id": _trigger_id(),
        "view": {
            "id": view.get("id") or f"V{uuid.uuid4().hex[:10].upper()}",
            "team_id": view.get("team_id", user.team_id),
            "app_id": APP_ID,
            "type": "modal",
            "callback_id": view.get("callback_id", ""),
            "private_metadata": view.get("private_metadata", ""),
            "title": copy.deepcopy(view.get("title")),
            "blocks": copy.deepcopy(view.get("blocks", [])),
            "state": {"values": copy.deepcopy(values)},
            "hash": view.get("hash", uuid.uuid4().hex),
        },
        "response_urls": [],
    }
