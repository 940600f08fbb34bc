"""The Slack approval app end to end: the real bolt app over real HTTP (and Socket Mode), a fake Slack Web
API on loopback that stores what the worker posts, the real Temporal server and worker.

Every click is built from the message the fake stored and signed per Slack's scheme.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from temporalio.client import WorkflowFailureError
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.devserver import EmbeddedServer, free_port
from conveyor.identities import load_directory
from conveyor.model import ActionState, ExecutionStatus
from conveyor.service.app import create_app
from conveyor.settings import Settings
from conveyor.slack.app import SlackOptions
from conveyor.slack.messages import APPROVE_ACTION, REASON_BLOCK, REASON_INPUT, REJECT_ACTION
from conveyor.worker import build_worker
from tests.helpers import pipeline, serving, waiting_token
from tests.slack_fake import (
    FakeSlack,
    SlackUser,
    StoredMessage,
    block_actions_payload,
    form_body,
    sign,
    view_submission_payload,
)
from tests.test_cli import Background, cli_env
from tests.test_cli import conveyor as conveyor_cli
from tests.test_webhooks import repository

SIGNING_SECRET = "slack-signing-secret-for-tests"
TEAM = "T0001"
CHANNEL = "C0RELEASE"
ALICE = SlackUser(id="U0001", team_id=TEAM, name="alice", real_name="Alice", email="alice@example.com")
BOB = SlackUser(id="U0002", team_id=TEAM, name="bob", real_name="Bob", email="bob@example.com")
CAROL = SlackUser(id="U0003", team_id=TEAM, name="carol", real_name="Carol", email="carol@example.com")
DAVE = SlackUser(id="U0004", team_id=TEAM, name="dave", real_name="Dave", email="dave@example.com")
# Mallory's display name says "alice": display names are never trusted.
MALLORY = SlackUser(id="U0666", team_id=TEAM, name="alice", real_name="Alice", email="mallory@example.com")
RELEASERS = "S0RELEASE"  # a Slack user group: Bob and Carol
DIRECTORY = f"""
identities:
  alice: {{slack: [{TEAM}/U0001]}}
  bob: {{slack: [{TEAM}/U0002]}}
  dave: {{slack: [{TEAM}/U0004], emails: [dave@example.com]}}
"""

GATED = """
name: slack-gate
stages:
  - name: Build
    actions:
      - {{name: Compile, provider: Noop}}
  - name: Prod
    actions:
      - name: Gate
        provider: Manual
        configuration: {{CustomData: "Release 1.4 to production", ExternalEntityLink: "https://ci.example.com/r/14"}}
        conveyor:
          timeoutMinutes: {timeout}
          approval: {{approvers: [alice, "slack-group:{group}", dave], quorum: {quorum}, slackChannel: {channel}}}
  - name: After
    actions:
      - {{name: Done, provider: Noop}}
"""


def gated(
    quorum: int = 1, timeout: int = 60, retry_window: bool = False, reminder: int | None = None
) -> dict[str, Any]:
    data = pipeline(GATED.format(quorum=quorum, timeout=timeout, group=RELEASERS, channel=CHANNEL))
    if reminder:
        data["stages"][1]["actions"][0]["conveyor"]["approval"]["reminderMinutes"] = reminder
    data["conveyor"] = {"retryWindowMinutes": 30 if retry_window else 0}  # 0: a failure closes the workflow
    return data


@pytest_asyncio.fixture
async def slack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeSlack]:
    """The fake Slack, and the worker's environment pointing at it (the in-process worker reads it)."""
    fake = FakeSlack(
        users={u.id: u for u in (ALICE, BOB, CAROL, DAVE, MALLORY)},
        usergroups={RELEASERS: [BOB.id, CAROL.id]},
        team_id=TEAM,
    )
    await fake.start()
    directory = tmp_path / "identities.yaml"
    directory.write_text(DIRECTORY)
    monkeypatch.setenv("SLACK_BOT_TOKEN", fake.bot_token)
    monkeypatch.setenv("SLACK_API_URL", fake.base_url)
    monkeypatch.setenv("CONVEYOR_IDENTITIES", str(directory))
    yield fake
    await fake.stop()


async def serve(conveyor: ConveyorClient, fake: FakeSlack, *, socket_mode: bool = False) -> tuple[str, Callable]:
    """`conveyor serve`'s ASGI app with the Slack app, on a real loopback port; returns (url, stop)."""

    async def client() -> ConveyorClient:
        return conveyor

    options = SlackOptions(
        bot_token=fake.bot_token,
        signing_secret=SIGNING_SECRET,
        app_token=fake.app_token if socket_mode else None,
        api_url=fake.base_url,
        directory=load_directory(),
    )
    stack = AsyncExitStack()
    url = await stack.enter_async_context(serving(create_app(client, slack=options)))
    return url, stack.aclose


@pytest_asyncio.fixture
async def app(conveyor: ConveyorClient, slack: FakeSlack) -> AsyncIterator[str]:
    url, stop = await serve(conveyor, slack)
    yield url
    await stop()


async def request_message(fake: FakeSlack, ref: ExecutionRef, after: int = 0) -> StoredMessage:
    """The approval request the worker posted for this execution (the `after`-th one: a retry posts again)."""

    def found() -> StoredMessage | None:
        mine = [m for m in fake.messages if ref.execution_id in json.dumps(m.blocks) and m.thread_ts is None]
        return mine[after] if len(mine) > after else None

    return await fake.wait_for(found)


async def click(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    tamper: Callable[[bytes], bytes] | None = None,
) -> httpx.Response:
    body = form_body(payload)
    headers = sign(secret, body, timestamp)
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{url}/slack/events", content=tamper(body) if tamper else body, headers=headers)


async def answer_for(fake: FakeSlack, user: SlackUser, count: int = 1) -> str:
    """The `count`-th ephemeral answer the clicker got."""
    answers = await fake.wait_for(
        lambda: (e := [x for x in fake.ephemerals if x["user"] == user.id])[count - 1 :] and e
    )
    return str(answers[count - 1]["text"])


def status_text(message: StoredMessage) -> str:
    return next(b["text"]["text"] for b in message.blocks if b.get("block_id") == "conveyor_status")


def has_buttons(message: StoredMessage) -> bool:
    return any(b.get("type") == "actions" for b in message.blocks)


async def gate_state(conveyor: ConveyorClient, ref: ExecutionRef) -> ActionState:
    _, action = await conveyor.action_state(ref, "Prod", "Gate")
    return action


# --- the request message and the happy paths ---------------------------------------------------------


async def test_request_message_shows_and_binds_what_is_approved(
    conveyor: ConveyorClient,
    worker: Worker,
    slack: FakeSlack,
    app: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONVEYOR_PUBLIC_URL", "https://conveyor.example.com/console")  # the in-process worker's
    repo = repository(tmp_path / "repo", {"app.txt": "v1.4"}, "Release 1.4: faster checkout")
    data = gated()
    data["stages"][0]["actions"] = [
        {
            "name": "Source",
            "provider": "Git",
            "configuration": {"RepositoryUrl": str(repo), "BranchName": "main"},
            "outputArtifacts": [{"name": "Src"}],
        }
    ]
    ref, _ = await conveyor.start(data, started_by="erin")
    message = await request_message(slack, ref)
    text = json.dumps(message.blocks)
    for shown in (
        data["name"],
        ref.execution_id,
        "Prod",
        "Gate",
        "erin",
        "Release 1.4 to production",
        "https://ci.example.com/r/14",
        "faster checkout",
        "dev@example.com",
        "quorum 1",
        "<!date^",
        "`alice`",
        f"`slack-group:{RELEASERS}`",
        "Bound to `Src` sha256:",
        f"<https://conveyor.example.com/console/pipelines/{data['name']}/executions/{ref.execution_id}"
        "/approvals/Prod/Gate|Open the approval in the console>",
    ):
        assert shown in text, f"{shown!r} missing from the request message"
    request = (await gate_state(conveyor, ref)).approval_request
    assert request is not None and request.slack_message is not None and request.slack_message.ts == message.ts
    # The snapshot: alice and dave by the directory, Bob and Carol through the group (Carol is unmapped).
    assert request.allowed is not None
    assert {"alice", "bob", "dave", f"slack:{TEAM}/U0001", f"slack:{TEAM}/U0003"} <= set(request.allowed)
    assert {"erin", "email:dev@example.com"} <= set(request.excluded)

    began = time.monotonic()
    response = await click(app, block_actions_payload(message, APPROVE_ACTION, ALICE))
    assert response.status_code == 200 and time.monotonic() - began < 3
    assert "counted" in await answer_for(slack, ALICE)
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED
    gate = final.stages[1].actions[0]
    assert gate.approval is not None and gate.approval.by == "alice" and gate.approval.source == "slack"
    assert f"slack:{TEAM}/U0001" in gate.approval.principals
    updated = slack.message(message.channel, message.ts)
    assert not has_buttons(updated) and "Approved* by alice" in status_text(updated)


async def test_reject_with_a_reason_through_the_modal(
    conveyor: ConveyorClient, worker: Worker, slack: FakeSlack, app: str
) -> None:
    ref, _ = await conveyor.start(gated())
    message = await request_message(slack, ref)
    assert (await click(app, block_actions_payload(message, REJECT_ACTION, BOB))).status_code == 200
    opened = await slack.wait_for(lambda: slack.views[-1:] and slack.views[-1])
    values = {REASON_BLOCK: {REASON_INPUT: {"type": "plain_text_input", "value": "the error budget is spent"}}}
    submitted = await click(app, view_submission_payload(opened["view"], BOB, values))
    assert submitted.status_code == 200
    assert "rejection counted" in await answer_for(slack, BOB)
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.FAILED
    gate = final.stages[1].actions[0]
    assert gate.error is not None and gate.error.code == "ApprovalRejected"
    assert gate.approval is not None and gate.approval.summary == "the error budget is spent"
    updated = await slack.wait_for(lambda: not has_buttons(m := slack.message(message.channel, message.ts)) and m)
    assert "Rejected* by bob: the error budget is spent" in status_text(updated)


async def test_quorum_of_two_double_click_and_an_unmapped_group_member(
    conveyor: ConveyorClient, worker: Worker, slack: FakeSlack, app: str
) -> None:
    ref, _ = await conveyor.start(gated(quorum=2))
    message = await request_message(slack, ref)
    await click(app, block_actions_payload(message, APPROVE_ACTION, ALICE))
    assert "1 of 2 approvals" in await answer_for(slack, ALICE)
    # The double click: the same person again counts once.
    await click(app, block_actions_payload(message, APPROVE_ACTION, ALICE))
    assert "did not count: 'alice' has already approved" in await answer_for(slack, ALICE, 2)
    progress = await slack.wait_for(
        lambda: "1 of 2" in status_text(m := slack.message(message.channel, message.ts)) and m
    )
    assert has_buttons(progress) and "(alice)" in status_text(progress)
    # Carol is in the releasers group and not in the directory: her Slack id is her identity.
    await click(app, block_actions_payload(message, APPROVE_ACTION, CAROL))
    assert "approved, the pipeline moves on" in await answer_for(slack, CAROL)
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED
    assert [a.by for a in final.stages[1].actions[0].approvals] == ["alice", f"slack:{TEAM}/U0003"]


async def test_unauthorized_user_and_the_starter_are_refused(
    conveyor: ConveyorClient, worker: Worker, slack: FakeSlack, app: str
) -> None:
    ref, _ = await conveyor.start(gated(), started_by="dave")
    message = await request_message(slack, ref)
    await click(app, block_actions_payload(message, APPROVE_ACTION, MALLORY))
    assert "did not count" in (answer := await answer_for(slack, MALLORY)) and "may not decide" in answer
    await click(app, block_actions_payload(message, APPROVE_ACTION, DAVE))
    assert "separation of duties" in await answer_for(slack, DAVE)
    gate = await gate_state(conveyor, ref)
    assert gate.approvals == [] and gate.token is not None  # nothing counted; still waiting
    await conveyor.stop(ref, reason="test over", abandon=True)
    stopped = await slack.wait_for(lambda: not has_buttons(m := slack.message(message.channel, message.ts)) and m)
    assert "Stopped" in status_text(stopped)


async def test_two_approvers_clicking_at_the_same_moment_count_once(
    conveyor: ConveyorClient, worker: Worker, slack: FakeSlack, app: str
) -> None:
    ref, _ = await conveyor.start(gated())
    message = await request_message(slack, ref)
    await asyncio.gather(
        click(app, block_actions_payload(message, APPROVE_ACTION, ALICE)),
        click(app, block_actions_payload(message, APPROVE_ACTION, BOB)),
    )
    answers = [await answer_for(slack, ALICE), await answer_for(slack, BOB)]
    assert sum("counted:" in a and "did not" not in a for a in answers) == 1, answers
    assert sum("did not count" in a for a in answers) == 1, answers
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED and len(final.stages[1].actions[0].approvals) == 1


async def test_stale_token_after_a_stage_retry(
    conveyor: ConveyorClient, worker: Worker, slack: FakeSlack, app: str
) -> None:
    ref, _ = await conveyor.start(gated(retry_window=True))
    first = copy.deepcopy(await request_message(slack, ref))  # as a stale Slack client still shows it
    token = await waiting_token(conveyor, ref)
    await conveyor.decide(ref, "Prod", "Gate", approve=False, token=token, by="alice", summary="not yet")
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.FAILED
    await conveyor.retry(ref, "Prod", mode="FAILED_ACTIONS")
    second = await request_message(slack, ref, after=1)
    await click(app, block_actions_payload(first, APPROVE_ACTION, BOB))  # the old message's button
    assert "did not count" in (answer := await answer_for(slack, BOB)) and "token does not match" in answer
    await click(app, block_actions_payload(second, APPROVE_ACTION, BOB))
    assert "approved, the pipeline moves on" in await answer_for(slack, BOB, 2)
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.SUCCEEDED


# --- signatures ----------------------------------------------------------------------------------------


async def test_bad_stale_and_tampered_requests_are_refused_with_401(
    conveyor: ConveyorClient, worker: Worker, slack: FakeSlack, app: str
) -> None:
    ref, _ = await conveyor.start(gated())
    message = await request_message(slack, ref)
    payload = block_actions_payload(message, APPROVE_ACTION, ALICE)
    assert (await click(app, payload, secret="not-the-secret")).status_code == 401
    assert (await click(app, payload, timestamp=int(time.time()) - 301)).status_code == 401
    tampered = await click(app, payload, tamper=lambda body: body.replace(b"U0001", b"U0002"))
    assert tampered.status_code == 401
    async with httpx.AsyncClient() as http:
        unsigned = await http.post(f"{app}/slack/events", content=form_body(payload))
    assert unsigned.status_code == 401
    await asyncio.sleep(1)
    assert slack.ephemerals == [] and (await gate_state(conveyor, ref)).approvals == []
    assert (await click(app, payload)).status_code == 200  # the same click, signed right, counts
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.SUCCEEDED


# --- Temporal slow, Socket Mode, after the timeout --------------------------------------------------------


async def test_ack_within_three_seconds_while_temporal_is_slow(
    conveyor: ConveyorClient, slack: FakeSlack, app: str
) -> None:
    async with build_worker(conveyor.temporal, conveyor.settings):
        ref, _ = await conveyor.start(gated())
        message = await request_message(slack, ref)
        await waiting_token(conveyor, ref)
    # No worker now: the decision's update waits until one comes back.
    began = time.monotonic()
    response = await click(app, block_actions_payload(message, APPROVE_ACTION, ALICE))
    assert response.status_code == 200 and time.monotonic() - began < 3
    await asyncio.sleep(2)
    assert slack.ephemerals == []  # not answered yet: Temporal has not taken the decision
    async with build_worker(conveyor.temporal, conveyor.settings):
        assert "counted" in await answer_for(slack, ALICE)
        assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.SUCCEEDED


async def test_a_click_no_worker_takes_in_time_is_not_counted_yet_and_counts_when_one_runs(
    conveyor: ConveyorClient, slack: FakeSlack, app: str
) -> None:
    async with build_worker(conveyor.temporal, conveyor.settings):
        ref, _ = await conveyor.start(gated())
        message = await request_message(slack, ref)
        await waiting_token(conveyor, ref)
    # The worker polled moments ago, so the click is sent; nobody accepts it within the deadline.
    response = await click(app, block_actions_payload(message, APPROVE_ACTION, ALICE))
    assert response.status_code == 200
    pending = await answer_for(slack, ALICE)
    assert "is not counted yet" in pending and "sent, not yet applied" in pending, pending
    assert "did not count" not in pending
    async with build_worker(conveyor.temporal, conveyor.settings):  # as the answer said: it applies now
        final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED and final.stages[1].actions[0].approval.by == "alice"


async def test_socket_mode_delivers_the_same_click(conveyor: ConveyorClient, worker: Worker, slack: FakeSlack) -> None:
    _, stop = await serve(conveyor, slack, socket_mode=True)
    try:
        await asyncio.wait_for(slack.socket_connected.wait(), 10)
        ref, _ = await conveyor.start(gated())
        message = await request_message(slack, ref)
        ack = await slack.send_envelope(block_actions_payload(message, APPROVE_ACTION, ALICE))
        assert ack["envelope_id"]
        assert "counted" in await answer_for(slack, ALICE)
        final = await asyncio.wait_for(conveyor.wait(ref), 60)
        assert final.status == ExecutionStatus.SUCCEEDED and final.stages[1].actions[0].approval.source == "slack"
    finally:
        await stop()


async def test_click_after_the_approval_timed_out(time_skipping: Any, slack: FakeSlack) -> None:
    env, conveyor = time_skipping
    url, stop = await serve(conveyor, slack)
    try:
        async with build_worker(env.client, conveyor.settings):
            ref, _ = await conveyor.start(gated(timeout=60 * 24, reminder=600))
            message = await request_message(slack, ref)
            shown = copy.deepcopy(message)  # what an approver's Slack still shows when they come back
            await waiting_token(conveyor, ref)
            for hours in (10, 10, 5):  # skipped, not waited; each reminder's activity runs before going on
                await env.sleep(timedelta(hours=hours, minutes=1))
                await asyncio.sleep(0.5)
            with pytest.raises(WorkflowFailureError):
                await env.client.get_workflow_handle(ref.workflow_id).result()
            final = await conveyor.state(ref)
            assert final.status == ExecutionStatus.FAILED
            assert final.stages[1].actions[0].error.code == "ApprovalTimedOut"
            closed = slack.message(message.channel, message.ts)
            assert not has_buttons(closed) and "Timed out" in status_text(closed)
            reminders = [m for m in slack.messages if m.thread_ts == message.ts]
            assert len(reminders) == 2 and all(m.text.startswith("Reminder: approval needed") for m in reminders)
            await click(url, block_actions_payload(shown, APPROVE_ACTION, ALICE))
            assert "did not count: approval 'Gate' timed out" in await answer_for(slack, ALICE)
    finally:
        await stop()


# --- membership that resolves to nobody, a broken directory --------------------------------------------

NOBODY = """
name: slack-nobody
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Noop}
  - name: Prod
    actions:
      - name: Gate
        provider: Manual
        conveyor: {approval: {approvers: ["slack-group:S0GONE"], slackChannel: C0RELEASE}}
"""


async def test_approvers_resolving_to_nobody_fail_the_action_at_once(
    conveyor: ConveyorClient, worker: Worker, slack: FakeSlack
) -> None:
    ref, _ = await conveyor.start(pipeline(NOBODY))
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    gate = final.stages[1].actions[0]
    assert gate.error is not None and gate.error.code == "ApproversUnresolved"
    assert gate.error.message == "nobody may decide: slack-group:S0GONE: Slack says no_such_subteam"
    assert slack.messages == []  # nothing to approve: no request posted


async def test_a_broken_identity_directory_is_named_in_the_failure(
    conveyor: ConveyorClient, worker: Worker, slack: FakeSlack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken-identities.yaml"
    broken.write_text("identities:\n  alice: {slack: [alice]}\n")
    monkeypatch.setenv("CONVEYOR_IDENTITIES", str(broken))
    ref, _ = await conveyor.start(gated())
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    gate = final.stages[1].actions[0]
    assert gate.error is not None and gate.error.code == "ConfigurationError"
    assert str(broken) in gate.error.message and "identities.alice.slack[0]" in gate.error.message


async def test_serve_names_what_the_slack_app_is_missing(tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env(tmp_path, "127.0.0.1:1").items() if not k.startswith("SLACK_")}
    missing_token = await conveyor_cli("serve", "--slack", env=env)
    assert missing_token.code == 1
    assert "SLACK_BOT_TOKEN is not set" in missing_token.err and "slack.botTokenEnv" in missing_token.err
    env["SLACK_BOT_TOKEN"] = "xoxb-test"
    no_secret = await conveyor_cli("serve", "--slack", env=env)
    assert no_secret.code == 1 and "SLACK_SIGNING_SECRET is not set" in no_secret.err
    config = tmp_path / "service.yaml"
    config.write_text("slack: {socketMode: true}\nidentities: people.yaml\n")
    env["SLACK_APP_TOKEN"] = "xapp-test"
    no_directory = await conveyor_cli("serve", "--config", str(config), env=env)
    assert no_directory.code == 1 and f"{tmp_path / 'people.yaml'}: identity directory not found" in no_directory.err


async def test_conveyor_serve_slack_as_a_process(
    conveyor: ConveyorClient,
    worker: Worker,
    slack: FakeSlack,
    server: EmbeddedServer,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """The whole path a user runs: `conveyor serve --slack` as a process, clicks over HTTP to it."""
    port = free_port()
    config = tmp_path / "service.yaml"
    config.write_text(f"port: {port}\nslack: {{apiUrl: '{slack.base_url}'}}\n")
    env = cli_env(settings.data_dir, server.address, settings.task_queue) | {
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "CONVEYOR_IDENTITIES": os.environ["CONVEYOR_IDENTITIES"],
    }
    service = Background.conveyor("serve", "--slack", "--config", str(config), env=env, log=tmp_path / "serve.log")
    try:
        await service.wait_for_text("Serving on")
        url = f"http://127.0.0.1:{port}"
        ref, _ = await conveyor.start(gated())
        message = await request_message(slack, ref)
        payload = block_actions_payload(message, APPROVE_ACTION, ALICE)
        for _ in range(50):
            try:
                refused = await click(url, payload, secret="wrong")
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.1)
        assert refused.status_code == 401
        assert (await click(url, payload)).status_code == 200
        assert "counted" in await answer_for(slack, ALICE)
        assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.SUCCEEDED
    finally:
        await service.stop()
    log = service.text()
    assert "slack.decision" in log and SIGNING_SECRET not in log and slack.bot_token not in log
