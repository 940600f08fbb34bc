"""The console's pipeline pages against a real Temporal server and worker, the real app on loopback: statuses
after a run, transitions and release change through their forms (confirm + CSRF), a version diff, escaping of
what pipelines and people wrote, and the live stage fragment over server-sent events."""

from __future__ import annotations

import asyncio
import html
import re
from typing import Any

import httpx
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.console.csrf import issue
from conveyor.model import ExecutionStatus
from tests.helpers import pipeline, waiting_for_stage, waiting_token
from tests.test_console_auth import ENV, as_user, console, csrf_token

OPERATORS = {
    "trustedProxies": ["127.0.0.1/32"],
    "viewers": ["vera"],
    "operators": ["olga"],
    "csrfSecretEnv": "CONSOLE_CSRF",
}
OLGA, VERA = as_user("olga"), as_user("vera")

TWO_STAGES = """
name: console
variables:
  - name: GREETING
    defaultValue: hello
stages:
  - name: Build
    actions:
      - name: Compile
        provider: Commands
        commands: ["echo compiled"]
  - name: Prod
    actions:
      - name: Deploy
        provider: Commands
        commands: ["echo deployed"]
"""

GATED = """
name: gated
stages:
  - name: Build
    actions:
      - name: Compile
        provider: Commands
        commands: ["echo built"]
  - name: Prod
    actions:
      - name: Gate
        provider: Manual
        configuration:
          ExternalEntityLink: "javascript:alert(document.domain)"
"""


async def registered(conveyor: ConveyorClient, text: str) -> dict[str, Any]:
    data = pipeline(text)
    await conveyor.apply(data, by="tester")
    return data


async def run(conveyor: ConveyorClient, name: str, **options: Any) -> ExecutionRef:
    _, declaration = await conveyor.registered(name)
    ref, _ = await conveyor.start(declaration, **options)
    return ref


def confirm_fields(page: str) -> dict[str, str]:
    """The hidden fields of the confirm page's form (what its Confirm button posts)."""
    assert "This will " in page
    return {html.unescape(k): html.unescape(v) for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', page)}


async def act(http: httpx.AsyncClient, path: str, fields: dict[str, str], headers: dict[str, str]) -> httpx.Response:
    """A form through its confirm step: post it, then post the confirm page's form; the final redirect."""
    first = await http.post(path, data=fields, headers=headers)
    assert first.status_code == 200, first.text
    second = await http.post(path, data=confirm_fields(first.text), headers=headers)
    assert second.status_code == 303, second.text
    return second


async def test_list_and_pipeline_pages_show_the_latest_run(conveyor: ConveyorClient, worker: Worker) -> None:
    data = await registered(conveyor, TWO_STAGES)
    name = data["name"]
    final = await conveyor.wait(await run(conveyor, name))
    assert final.status == ExecutionStatus.SUCCEEDED
    async with console(conveyor, **OPERATORS) as http:
        listed = await http.get("/console/pipelines", headers=VERA)
        assert listed.status_code == 200
        row = listed.text[listed.text.index(f">{name}</a>") :].split("</tr>")[0]
        assert 'Build</span> <span class="status status-Succeeded">Succeeded' in row
        assert 'Prod</span> <span class="status status-Succeeded">Succeeded' in row
        assert final.execution_id in row
        page = await http.get(f"/console/pipelines/{name}", headers=VERA)
        assert page.status_code == 200
        text = page.text
        assert text.index(">Build</span>") < text.index(">Prod</span>")  # stages in order
        assert "1 commands succeeded" in text and "Compile" in text and "Deploy" in text
        assert "Transition in: enabled" in text
        assert "Release change" not in text and "Disable</button>" not in text  # a viewer sees no forms
        assert 'sse-connect="/console/pipelines/' in text and 'hx-ext="sse"' in text


async def test_transition_toggle_through_the_form(conveyor: ConveyorClient, worker: Worker) -> None:
    name = (await registered(conveyor, TWO_STAGES))["name"]
    path = f"/console/pipelines/{name}/transition"
    async with console(conveyor, **OPERATORS) as http:
        page = await http.get(f"/console/pipelines/{name}", headers=OLGA)
        fields = {"csrf": csrf_token(page.text), "stage": "Prod", "enabled": "false", "reason": "release freeze"}
        first = await http.post(path, data=fields, headers=OLGA)
        assert "This will disable the transition into stage Prod (reason: release freeze) on pipeline" in first.text
        assert (
            f'action="/console/pipelines/{name}/transition"' in first.text
            and 'name="confirmed" value="yes"' in first.text
        )
        assert (await conveyor.pipeline_state(name)).stage("Prod").transition.enabled  # not before Confirm
        done = await act(http, path, fields, OLGA)
        assert "flash=" in done.headers["location"]
        transition = (await conveyor.pipeline_state(name)).stage("Prod").transition
        assert not transition.enabled and transition.changed_by == "olga" and transition.reason == "release freeze"
        shown = await http.get(done.headers["location"], headers=OLGA)
        assert "The transition into Prod is disabled (by olga)." in shown.text
        assert "Transition in: disabled</span> by olga" in shown.text and "release freeze" in shown.text

        # A viewer's forged POST (with her own valid token) is refused, and nothing changes.
        vera_token = issue(ENV["CONSOLE_CSRF"].encode(), "vera")  # her pages have no form: as if she had one
        forged = {"csrf": vera_token, "stage": "Prod", "enabled": "true", "confirmed": "yes"}
        refused = await http.post(path, data=forged, headers=VERA)
        assert refused.status_code == 403 and "needs the operator role" in refused.text
        assert not (await conveyor.pipeline_state(name)).stage("Prod").transition.enabled

        await act(http, path, {"csrf": fields["csrf"], "stage": "Prod", "enabled": "true"}, OLGA)
        assert (await conveyor.pipeline_state(name)).stage("Prod").transition.enabled


async def test_release_change_starts_an_execution_with_the_variables(conveyor: ConveyorClient, worker: Worker) -> None:
    name = (await registered(conveyor, TWO_STAGES))["name"]
    path = f"/console/pipelines/{name}/release"
    markup = "<script>alert('x')</script>"
    async with console(conveyor, **OPERATORS) as http:
        page = await http.get(f"/console/pipelines/{name}", headers=OLGA)
        token = csrf_token(page.text)
        wrong = await http.post(path, data={"csrf": token, "variables": "NOPE=1"}, headers=OLGA)
        assert wrong.status_code == 303 and "declares+no+variable+NOPE" in wrong.headers["location"]
        release_token = re.search(r'name="token" value="([^"]+)"', page.text)
        assert release_token
        fields = {"csrf": token, "token": release_token.group(1), "variables": f"GREETING={markup}"}
        done = await act(http, path, fields, OLGA)
        started = await http.get(done.headers["location"], headers=OLGA)
        execution = re.search(rf"Started: execution {re.escape(name)}/([0-9a-f-]+)\.", started.text)
        assert execution, started.text
        final = await conveyor.wait(ExecutionRef(name, execution.group(1)))
        assert final.variables == {"GREETING": markup} and final.started_by == "olga"
        assert final.status == ExecutionStatus.SUCCEEDED
        again = await http.post(
            path, data=confirm_fields((await http.post(path, data=fields, headers=OLGA)).text), headers=OLGA
        )
        assert "Already started" in (await http.get(again.headers["location"], headers=OLGA)).text  # same form token
        shown = (await http.get(f"/console/pipelines/{name}", headers=OLGA)).text
        assert "GREETING=&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in shown
        assert "<script>alert" not in shown


async def test_diff_between_two_versions(conveyor: ConveyorClient, worker: Worker) -> None:
    data = await registered(conveyor, TWO_STAGES)
    changed = data | {"stages": [data["stages"][0], {**data["stages"][1], "name": "Production"}]}
    changed["stages"][1]["actions"][0]["commands"] = ["echo <b>shipped</b>"]
    await conveyor.apply(changed, by="tester")
    async with console(conveyor, **OPERATORS) as http:
        page = await http.get(f"/console/pipelines/{data['name']}/diff", params={"from": 1, "to": 2}, headers=VERA)
        assert page.status_code == 200
        assert '<span class="diff-removed">-  name: Prod</span>' in page.text
        assert '<span class="diff-added">+  name: Production</span>' in page.text
        assert "echo &lt;b&gt;shipped&lt;/b&gt;" in page.text and "<b>shipped" not in page.text
        missing = await http.get(f"/console/pipelines/{data['name']}/diff?from=1&to=9", headers=VERA)
        assert missing.status_code == 404 and "has no version 9" in missing.text


async def test_markup_in_a_pipeline_name_is_shown_inert(conveyor: ConveyorClient) -> None:
    async with console(conveyor, **OPERATORS) as http:
        page = await http.get("/console/pipelines/%3Cimg%20src=x%20onerror=alert(1)%3E", headers=VERA)
        assert page.status_code == 400 and "String should match pattern" in page.text and "<img" not in page.text
        bad = await http.get("/console/pipelines/x/diff?from=%3Cb%3E&to=2", headers=VERA)
        assert bad.status_code == 400 and "from" in bad.text and "<b>" not in bad.text


async def read_event(lines: Any) -> str:
    """The data of the next SSE message (its lines joined)."""
    data: list[str] = []
    async for line in lines:
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            return "\n".join(data)
    raise AssertionError("the stream ended")


async def test_live_stage_fragment_and_approval_summary_escaped(conveyor: ConveyorClient, worker: Worker) -> None:
    name = (await registered(conveyor, GATED))["name"]
    ref = await run(conveyor, name)
    token = await waiting_token(conveyor, ref)
    async with console(conveyor, **OPERATORS) as http:
        async with http.stream("GET", f"/console/pipelines/{name}/stream", headers=OLGA) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            first = await asyncio.wait_for(read_event(lines), 10)
            assert "waiting for approval" in first
            assert 'name="csrf" value="' in first and "Disable</button>" in first  # an operator's forms, live too
            assert f'<span class="holder">{ref.execution_id}</span>' in first  # who holds Prod
            assert 'href="javascript:' not in first and "javascript:alert(document.domain)" in first  # text only
            summary = "<img src=x onerror=alert(1)> looks good"
            await conveyor.decide(ref, "Prod", "Gate", approve=True, summary=summary, token=token, by="olga")

            async def until_succeeded() -> str:
                while True:
                    fragment = await read_event(lines)
                    if "Approved by olga" in fragment:
                        return fragment

            changed = await asyncio.wait_for(until_succeeded(), 15)
        assert "&lt;img src=x onerror=alert(1)&gt; looks good" in changed and "<img" not in changed
        assert 'status-Succeeded">Succeeded' in changed


async def test_who_waits_for_a_stage_is_shown(conveyor: ConveyorClient, worker: Worker) -> None:
    name = (await registered(conveyor, TWO_STAGES))["name"]
    await conveyor.set_transition(name, "Prod", enabled=False, reason="<i>freeze</i>", by="ops")
    ref = await run(conveyor, name)
    await waiting_for_stage(conveyor, ref, "Prod")
    async with console(conveyor, **OPERATORS) as http:
        page = (await http.get(f"/console/pipelines/{name}", headers=VERA)).text
        assert f'<span class="waiting">{ref.execution_id}</span>' in page
        assert "&lt;i&gt;freeze&lt;/i&gt;" in page and "<i>freeze" not in page
        assert "Waiting for stage Prod: the transition into Prod was disabled by ops" in page
    await conveyor.set_transition(name, "Prod", enabled=True, by="ops")
    assert (await conveyor.wait(ref)).status == ExecutionStatus.SUCCEEDED
