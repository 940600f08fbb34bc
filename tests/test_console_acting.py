"""Acting from the console against a real Temporal server and worker, the real app on loopback: approve (with a
summary, counted once, as the directory's identity) and reject through the approval page, a non-approver
refused in words, stop (abandon), retry, rollback and override through their forms and confirm steps; a
viewer's forged POST and a missing CSRF token refused with nothing changed; approval links into the console."""

from __future__ import annotations

import asyncio
import html
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.console.acting import back_to, decider
from conveyor.console.auth import Via, Viewer
from conveyor.console.config import Role
from conveyor.console.csrf import issue
from conveyor.identities import Identity, IdentityDirectory
from conveyor.interface import ApprovalStatus, NoticeKind
from conveyor.links import approval_link, execution_link
from conveyor.model import ApprovalNotice, ExecutionStatus, TriggerType
from conveyor.slack.messages import approval_blocks
from tests.helpers import pipeline, waiting_token
from tests.test_console_auth import ENV, as_user, console, csrf_token
from tests.test_console_pages import OLGA, OPERATORS, VERA, act, confirm_fields, read_event, registered, run

CONFIG = OPERATORS  # olga operates, vera views (the pages' tests' config)

TWO_APPROVERS = """
name: approvals
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Commands, commands: ["echo built"]}
  - name: Prod
    actions:
      - name: Gate
        provider: Manual
        configuration: {CustomData: "ship <b>it</b>?"}
        conveyor:
          approval: {approvers: [alice, bob], quorum: 2}
"""

ONE_GATE = """
name: gate
stages:
  - name: Prod
    actions:
      - {name: Gate, provider: Manual}
"""


def flash(response: httpx.Response) -> tuple[str, bool]:
    """The outcome a redirect carries to its page: (message, is an error)."""
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return query["flash"][0], query.get("error") == ["1"]


def gate_page(ref: ExecutionRef, stage: str = "Prod", action: str = "Gate") -> str:
    return f"/console/pipelines/{ref.pipeline_name}/executions/{ref.execution_id}/approvals/{stage}/{action}"


async def decide(
    http: httpx.AsyncClient, ref: ExecutionRef, who: dict[str, str], decision: str, summary: str = ""
) -> httpx.Response:
    """Open the approval page as `who`, post its form (with the page's token and form id) and confirm."""
    page = await http.get(gate_page(ref), headers=who)
    assert page.status_code == 200, page.text
    fields = confirm_fields_of_form(page.text) | {"decision": decision, "summary": summary}
    return await act(http, gate_page(ref), fields, who)


def confirm_fields_of_form(page: str) -> dict[str, str]:
    """The hidden fields of the approval page's form (csrf, token, form id, back)."""
    return {
        html.unescape(k): html.unescape(v) for k, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', page)
    }


async def test_approve_with_a_summary_counts_once_and_the_execution_goes_on(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    directory = tmp_path / "identities.yaml"
    directory.write_text("identities:\n  bob:\n    emails: [bob@example.com]\n")
    name = (await registered(conveyor, TWO_APPROVERS))["name"]  # registered: its declaration gives the deadline
    ref = await run(conveyor, name, started_by="dave")
    await waiting_token(conveyor, ref)
    async with console(conveyor, identities=directory, **CONFIG) as http:
        alice = as_user("alice")  # an approver who is no console viewer: the approval page is for her anyway
        page = await http.get(gate_page(ref), headers=alice)
        assert page.status_code == 200
        assert "ship &lt;b&gt;it&lt;/b&gt;?" in page.text and "<b>it</b>" not in page.text  # shown inert
        assert "0 of 2 approvals" in page.text and "alice, bob" in page.text and " · deadline 20" in page.text
        assert "dave" in page.text  # started by, excluded by separation of duties
        fields = confirm_fields_of_form(page.text) | {"decision": "approve", "summary": "tested <on> staging"}
        first = await http.post(gate_page(ref), data=fields, headers=alice)
        assert "This will approve Prod/Gate of execution" in first.text
        assert "as alice, with the summary &#34;tested &lt;on&gt; staging&#34;" in first.text
        assert not (await conveyor.state(ref)).stage("Prod").actions[0].approvals  # nothing before Confirm
        confirmed = confirm_fields(first.text)
        done = await http.post(gate_page(ref), data=confirmed, headers=alice)
        assert done.status_code == 303
        assert flash(done) == (
            "Your approval counted: 1 of 2 approvals of Prod/Gate; another approver is needed.",
            False,
        )
        again = await http.post(gate_page(ref), data=confirmed, headers=alice)  # Confirm clicked twice
        assert again.status_code == 303 and not flash(again)[1]  # the same update: its same answer
        gate = (await conveyor.state(ref)).stage("Prod").actions[0]
        assert [(a.by, a.summary, a.source) for a in gate.approvals] == [("alice", "tested <on> staging", "console")]

        # A fresh form: alice has approved already (one person counts once), refused in words.
        refused = await decide(http, ref, alice, "approve")
        assert flash(refused) == (
            "Your approval did not count: 'alice' has already approved 'Gate'; another approver is needed",
            True,
        )
        # Carol is no approver; Dave started it.
        carol = await decide(http, ref, as_user("carol"), "approve")
        assert flash(carol) == (
            "Your approval did not count: 'carol' may not decide approval 'Gate' (approvers: alice, bob)",
            True,
        )
        shown = await http.get(carol.headers["location"], headers=as_user("carol"))
        assert "did not count: &#39;carol&#39; may not decide" in shown.text
        dave = await decide(http, ref, as_user("dave"), "approve")
        assert flash(dave) == (
            "Your approval did not count: 'dave' may not decide approval 'Gate' (approvers: alice, bob)",
            True,
        )

        # Bob signs in by his email (as oauth2-proxy names users): the directory makes him bob.
        bob = await decide(http, ref, as_user("bob@example.com"), "approve", "lgtm")
        assert flash(bob)[0].startswith("Approved by bob: Prod/Gate succeeded")
        final = await asyncio.wait_for(conveyor.wait(ref), 30)
        assert final.status == ExecutionStatus.SUCCEEDED
        gate = final.stage("Prod").actions[0]
        assert [a.by for a in gate.approvals] == ["alice", "bob"] and gate.approval.status == ApprovalStatus.APPROVED
        closed = await http.get(gate_page(ref), headers=VERA)
        assert "No decision is taken any more: approval &#39;Gate&#39; was already decided" in closed.text
        assert 'name="decision"' not in closed.text and "tested &lt;on&gt; staging" in closed.text


async def test_reject_fails_the_action_and_the_execution(conveyor: ConveyorClient, worker: Worker) -> None:
    policy = ONE_GATE.replace("provider: Manual}", "provider: Manual, conveyor: {approval: {quorum: 1}}}")
    ref, _ = await conveyor.start(pipeline(policy), started_by="olga")
    await waiting_token(conveyor, ref)
    async with console(conveyor, **CONFIG) as http:
        own = await decide(http, ref, OLGA, "approve", "my own change")  # she started it
        assert flash(own) == (
            "Your approval did not count: 'olga' started this execution or wrote its source revision, and may not "
            "decide approval 'Gate' (separation of duties)",
            True,
        )
        done = await decide(http, ref, VERA, "reject", "not during the freeze")
        assert flash(done)[0] == f"Rejected by vera: Prod/Gate failed, and with it execution {ref.execution_id}."
    final = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert final.status == ExecutionStatus.FAILED
    gate = final.stage("Prod").actions[0]
    assert gate.approval.status == ApprovalStatus.REJECTED and gate.approval.by == "vera"
    assert gate.approval.summary == "not during the freeze" and gate.approval.source == "console"


async def test_the_approval_status_follows_a_decision_made_elsewhere(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(pipeline(ONE_GATE))
    token = await waiting_token(conveyor, ref)
    async with console(conveyor, **CONFIG) as http:
        page = await http.get(gate_page(ref), headers=VERA)
        assert f'sse-connect="{gate_page(ref)}/stream"' in page.text and 'sse-swap="approval"' in page.text
        async with http.stream("GET", f"{gate_page(ref)}/stream", headers=VERA) as stream:
            lines = stream.aiter_lines()
            assert "Waiting for a decision" in await asyncio.wait_for(read_event(lines), 10)
            await conveyor.decide(
                ref, "Prod", "Gate", approve=True, summary="<i>via</i> the CLI", token=token, by="cli-user"
            )
            changed = await asyncio.wait_for(read_event(lines), 10)
        assert "No decision is taken any more" in changed and "cli-user" in changed
        assert "&lt;i&gt;via&lt;/i&gt; the CLI" in changed and "<i>" not in changed


async def test_stop_and_abandon(conveyor: ConveyorClient, worker: Worker) -> None:
    slow = pipeline(
        "name: slow\nstages:\n  - name: Build\n    actions:\n"
        '      - {name: Wait, provider: Commands, commands: ["sleep 60"]}\n'
    )
    ref, _ = await conveyor.start(slow)
    path = f"/console/pipelines/{ref.pipeline_name}/executions/{ref.execution_id}/stop"
    async with console(conveyor, **CONFIG) as http:
        form = await http.get(path, headers=OLGA)
        assert form.status_code == 200 and 'value="abandon"' in form.text
        fields = {"csrf": csrf_token(form.text), "mode": "abandon", "reason": "wrong <branch>"}
        first = await http.post(path, data=fields, headers=OLGA)
        assert f"This will stop execution {ref.execution_id}: abandon its running actions at once" in first.text
        assert "(reason: wrong &lt;branch&gt;)" in first.text
        done = await act(http, path, fields, OLGA)
        assert done.headers["location"].startswith(
            f"/console/pipelines/{ref.pipeline_name}/executions/{ref.execution_id}?"
        )
        assert "(stopped by olga)" in flash(done)[0]
    final = await asyncio.wait_for(conveyor.wait(ref), 20)
    assert final.status == ExecutionStatus.STOPPED
    assert "wrong <branch>" in (final.status_summary or "")


async def test_retry_a_failed_stage(conveyor: ConveyorClient, worker: Worker, tmp_path: Path) -> None:
    fixed = tmp_path / "fixed"
    flaky = pipeline(
        f"""
name: flaky
conveyor: {{retryWindowMinutes: 10}}
stages:
  - name: Build
    actions:
      - {{name: Check, provider: Commands, commands: ["test -f {fixed}"]}}
"""
    )
    ref, _ = await conveyor.start(flaky)
    assert (await asyncio.wait_for(conveyor.wait(ref), 30)).status == ExecutionStatus.FAILED
    fixed.touch()
    path = f"/console/pipelines/{ref.pipeline_name}/executions/{ref.execution_id}/stages/Build/retry"
    async with console(conveyor, **CONFIG) as http:
        form = await http.get(path, headers=OLGA)
        fields = {"csrf": csrf_token(form.text), "mode": "failed-actions"}
        first = await http.post(path, data=fields, headers=OLGA)
        assert (
            f"This will retry stage Build of execution {ref.execution_id}, running its failed actions again"
            in first.text
        )
        done = await act(http, path, fields, OLGA)
        assert flash(done)[0].startswith("Stage Build is retried (by olga)")
    final = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert final.status == ExecutionStatus.SUCCEEDED
    assert final.stage("Build").attempt == 2 and final.stage("Build").previous_attempts[0].retried_by == "olga"


async def test_rollback_to_the_last_success_before_the_current(conveyor: ConveyorClient, worker: Worker) -> None:
    name = (
        await registered(
            conveyor,
            "name: rolled\nvariables: [{name: V, defaultValue: '1'}]\nstages:\n  - name: Deploy\n"
            "    actions:\n      - {name: Ship, provider: Commands, commands: ['echo #{variables.V}']}\n",
        )
    )["name"]
    first = await run(conveyor, name)
    assert (await asyncio.wait_for(conveyor.wait(first), 30)).status == ExecutionStatus.SUCCEEDED
    second = await run(conveyor, name, variables={"V": "2"})
    assert (await asyncio.wait_for(conveyor.wait(second), 30)).status == ExecutionStatus.SUCCEEDED
    path = f"/console/pipelines/{name}/stages/Deploy/rollback"
    async with console(conveyor, **CONFIG) as http:
        form = await http.get(path, headers=OLGA)
        assert f"the last successful one before the current ({first.execution_id})" in form.text
        fields = {"csrf": csrf_token(form.text), "to": ""}
        asked = await http.post(path, data=fields, headers=OLGA)
        assert (
            "re-runs stage Deploy with the artifacts, variables and source revisions of execution "
            f"{first.execution_id}, the last successful one before the current" in asked.text
        )
        done = await http.post(path, data=confirm_fields(asked.text), headers=OLGA)
        assert done.status_code == 303 and done.headers["location"].startswith(f"/console/pipelines/{name}?")
        message = flash(done)[0]
        assert message.startswith("Started rollback execution ") and first.execution_id in message
    rollback = ExecutionRef(name, message.split()[3].rstrip(":"))
    rolled = await asyncio.wait_for(conveyor.wait(rollback), 30)
    assert rolled.status == ExecutionStatus.SUCCEEDED and rolled.rollback_of == first.execution_id
    assert rolled.trigger.trigger_type == TriggerType.MANUAL_ROLLBACK


async def test_override_a_failed_before_entry_condition(conveyor: ConveyorClient, worker: Worker) -> None:
    gated = """
name: conditioned
conveyor: {retryWindowMinutes: 10}
stages:
  - name: Build
    actions:
      - {name: Make, provider: Commands, commands: ["echo made"]}
  - name: Deploy
    beforeEntry:
      conditions:
        - result: FAIL
          rules:
            - name: Check
              ruleTypeId: {provider: VariableCheck}
              configuration: {Variable: "a", Operator: EQ, Value: "b"}
    actions:
      - {name: Ship, provider: Commands, commands: ["echo shipped"]}
"""
    ref = await run(conveyor, (await registered(conveyor, gated))["name"])
    assert (await asyncio.wait_for(conveyor.wait(ref), 30)).status == ExecutionStatus.FAILED
    path = f"/console/pipelines/{ref.pipeline_name}/executions/{ref.execution_id}/stages/Deploy/override"
    async with console(conveyor, **CONFIG) as http:
        pipeline_page = (await http.get(f"/console/pipelines/{ref.pipeline_name}", headers=OLGA)).text
        assert f'href="{path}?back=' in pipeline_page  # the failed condition's Override link
        form = await http.get(path, headers=OLGA)
        assert "BEFORE_ENTRY" in form.text and "Check: Failed" in form.text
        fields = {"csrf": csrf_token(form.text), "condition": "before-entry", "reason": "hotfix 12"}
        done = await act(http, path, fields, OLGA)
        assert flash(done)[0].startswith("The before-entry condition of Deploy is overridden (by olga)")
    final = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert final.status == ExecutionStatus.SUCCEEDED
    condition = final.stage("Deploy").conditions[-1]
    assert (
        condition.status == "Overridden"
        and condition.overridden_by == "olga"
        and condition.override_reason == "hotfix 12"
    )


async def test_a_viewers_forged_post_and_a_missing_csrf_token_are_refused(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    ref, _ = await conveyor.start(pipeline(ONE_GATE))
    token = await waiting_token(conveyor, ref)
    stop = f"/console/pipelines/{ref.pipeline_name}/executions/{ref.execution_id}/stop"
    async with console(conveyor, **CONFIG) as http:
        assert (await http.get(stop, headers=VERA)).status_code == 403  # no form for her either
        forged = {"csrf": issue(ENV["CONSOLE_CSRF"].encode(), "vera"), "mode": "abandon", "confirmed": "yes"}
        refused = await http.post(stop, data=forged, headers=VERA)
        assert refused.status_code == 403 and "needs the operator role" in refused.text
        retry = f"/console/pipelines/{ref.pipeline_name}/executions/{ref.execution_id}/stages/Prod/retry"
        assert (await http.post(retry, data=forged, headers=VERA)).status_code == 403
        # An operator's form without its token, and an approval without one: refused before anything is done.
        no_token = await http.post(stop, data={"mode": "abandon", "confirmed": "yes"}, headers=OLGA)
        assert no_token.status_code == 403 and "security token is missing" in no_token.text
        decision = {"decision": "approve", "confirmed": "yes", "token": token}
        unsigned = await http.post(gate_page(ref), data=decision, headers=VERA)
        assert unsigned.status_code == 403 and "security token is missing" in unsigned.text
        # Anonymous viewers read the approval page but cannot decide.
    async with console(conveyor, anonymous="viewer") as http:
        page = await http.get(gate_page(ref))
        assert page.status_code == 200 and "Sign in to decide" in page.text and 'name="decision"' not in page.text
    state = await conveyor.state(ref)
    assert state.status == ExecutionStatus.IN_PROGRESS and state.stage("Prod").actions[0].token == token
    assert not state.stage("Prod").actions[0].approvals
    await conveyor.stop(ref, abandon=True)


async def test_the_pipeline_page_links_to_the_approval_and_the_actions(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    name = (await registered(conveyor, ONE_GATE))["name"]
    ref = await run(conveyor, name)
    await waiting_token(conveyor, ref)
    async with console(conveyor, **CONFIG) as http:
        page = (await http.get(f"/console/pipelines/{name}", headers=OLGA)).text
        back = f"back=%2Fconsole%2Fpipelines%2F{name}"
        assert f'href="{gate_page(ref)}?{back}">Review</a>' in page
        assert f'href="/console/pipelines/{name}/executions/{ref.execution_id}/stop?{back}">Stop</a>' in page
        assert f'href="/console/pipelines/{name}/stages/Prod/rollback?{back}">Roll back</a>' in page
        not_an_approval = await http.get(gate_page(ref, "Prod", "Nope"), headers=VERA)
        assert (
            not_an_approval.status_code == 404
            and "stage &#39;Prod&#39; has no action &#39;Nope&#39;" in not_an_approval.text
        )
        viewer_page = (await http.get(f"/console/pipelines/{name}", headers=VERA)).text
        assert ">Review</a>" in viewer_page and ">Stop</a>" not in viewer_page  # anyone may open the approval
        # The link a Slack message or notification carries is this console's approval page.
        link = approval_link(
            name,
            ref.execution_id,
            "Prod",
            "Gate",
            {"CONVEYOR_PUBLIC_URL": f"{str(http.base_url).rstrip('/')}/console/"},
        )
        assert link is not None
        opened = await http.get(link, headers=VERA)
        assert opened.status_code == 200 and "Waiting for a decision" in opened.text
    await conveyor.stop(ref, abandon=True)


# --- pure: the pieces the forms rely on ----------------------------------------------------------------------


def test_back_goes_only_to_console_pages() -> None:
    default = "/console/pipelines/p"
    assert back_to("/console/pipelines/p/executions/e", default) == "/console/pipelines/p/executions/e"
    for foreign in [
        "https://evil.example/",
        "//evil.example/console/",
        "/console//evil",
        "/console\\@evil",
        "/console/../x",
        "",
        None,
    ]:
        assert back_to(foreign, default) == default


def test_the_decider_is_the_directorys_identity() -> None:
    directory = IdentityDirectory(identities={"bob": Identity(emails=["bob@example.com"], slack=["T1/U2"])})

    def viewer(user: str, email: str | None = None) -> Viewer:
        return Viewer(user=user, roles=frozenset({Role.VIEWER}), via=Via.PROXY, email=email)

    assert decider(viewer("bob"), directory) == ("bob", ["email:bob@example.com", "slack:T1/U2"])
    assert decider(viewer("bob@example.com"), directory) == ("bob", ["email:bob@example.com", "slack:T1/U2"])
    assert decider(viewer("rob", "Bob@Example.com"), directory)[0] == "bob"  # by the proxy's email header
    assert decider(viewer("carol", "carol@example.com"), directory) == ("carol", ["email:carol@example.com"])


def test_approval_links_are_built_from_the_public_url() -> None:
    env = {"CONVEYOR_PUBLIC_URL": "https://conveyor.example.com/console/"}
    assert execution_link("web", "e1", env) == "https://conveyor.example.com/console/pipelines/web/executions/e1"
    assert (
        approval_link("web", "e1", "Prod 1", "Sign/off", env)
        == "https://conveyor.example.com/console/pipelines/web/executions/e1/approvals/Prod%201/Sign%2Foff"
    )
    assert approval_link("web", "e1", "Prod", "Gate", {}) is None
    notice = ApprovalNotice(
        kind=NoticeKind.OPENED,
        pipeline_name="web",
        execution_id="e1",
        stage_name="Prod",
        action_name="Gate",
        token="t",
        expires="2026-01-01T00:00:00Z",
    )
    texts = str(approval_blocks(notice, "https://c.example/console/pipelines/web/executions/e1/approvals/Prod/Gate"))
    assert (
        "<https://c.example/console/pipelines/web/executions/e1/approvals/Prod/Gate|Open the approval in the console>"
        in texts
    )
    assert "Open the approval" not in str(approval_blocks(notice))
