"""The console's execution page against a real Temporal server and worker, the real app on loopback: after a run
the page shows what the run implies (actions on the timeline, artifacts with their digests, variables, the
approval's who and when, output variables); a running action's log streamed over SSE to its end; the live
fragment pushed when the state changes; and what actions and people wrote (output, summaries, variables) shown as
literal text."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from temporalio.worker import Worker

from conveyor.client import ConveyorClient
from conveyor.console.auth import Via, Viewer
from conveyor.console.config import Role
from conveyor.console.execution import WIDTH, log_messages, row_views, seconds_text, view_context
from conveyor.console.pages import templates
from conveyor.console.timeline import RowKind, Segment, SegmentKind, Timeline, TimelineRow, build_timeline
from conveyor.model import (
    ActionStatus,
    CompensationState,
    CompensationStatus,
    ConditionStatus,
    ExecutionState,
    ExecutionStatus,
    StageStatus,
)
from conveyor.text import utc_time
from tests.helpers import pipeline, waiting_token
from tests.test_console_auth import as_user, console
from tests.test_console_timeline import T0, at, failed_then_waiting

VIEWERS = {"trustedProxies": ["127.0.0.1/32"], "viewers": ["vera"], "operators": ["olga"]}
VERA, OLGA = as_user("vera"), as_user("olga")
MARKUP = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"

RUN = """
name: exec-page
variables:
  - name: GREETING
    defaultValue: hello
stages:
  - name: Build
    actions:
      - name: Make
        provider: Commands
        namespace: Made
        commands:
          - mkdir -p out && printf 'payload' > out/app.txt
          - echo '<b>bold</b> <script>alert(3)</script>'
          - export VERSION='<i>1.2</i>'
        outputVariables: [VERSION]
        outputArtifacts: [{name: App, files: ["out/**/*"]}]
  - name: Prod
    actions:
      - {name: Gate, provider: Manual}
"""

EMITTING = """
name: exec-log
stages:
  - name: Build
    actions:
      - name: Emit
        provider: Commands
        commands:
          - for i in $(seq 1 5); do echo "line-$i <img src=x onerror=alert($i)>"; done
          - for i in $(seq 600); do test -e {gate} && break; sleep 0.05; done
          - for i in $(seq 6 10); do echo "line-$i"; done
"""


async def events(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """(event, data) of each SSE message of a streaming response (data lines joined)."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            yield event, "\n".join(data)
            event, data = "message", []


async def test_the_page_after_a_run_shows_what_ran(conveyor: ConveyorClient, worker: Worker) -> None:
    data = pipeline(RUN)
    name = data["name"]
    ref, _ = await conveyor.start(data, variables={"GREETING": MARKUP})
    token = await waiting_token(conveyor, ref)
    await conveyor.decide(ref, "Prod", "Gate", approve=True, summary=f"{IMG} ship it", token=token, by="lead")
    final = await asyncio.wait_for(conveyor.wait(ref, interval=0.2), 30)
    assert final.status == ExecutionStatus.SUCCEEDED
    [artifact] = final.stage("Build").actions[0].output_artifacts  # type: ignore[union-attr]
    decision = final.stage("Prod").actions[0].approval  # type: ignore[union-attr]
    assert decision is not None and decision.decided_at is not None
    page_path = f"/console/pipelines/{name}/executions/{ref.execution_id}"
    async with console(conveyor, **VIEWERS) as http:
        response = await http.get(page_path, headers=VERA)
        assert response.status_code == 200, response.text
        text = response.text
        # The timeline: a bar per stage and action, each with its accessible title.
        bars = re.findall(r'<rect class="bar bar-(\w+)"[^>]*><title>([^<]*)</title>', text)
        titles = [html.unescape(title) for _, title in bars]
        assert [status for status, _ in bars] == ["Succeeded"] * 4
        assert any(t.startswith("action Make (Build): Succeeded, started 20") for t in titles), titles
        assert any(t.startswith("action Gate (Prod): Succeeded") for t in titles)
        assert 'class="seg seg-approvalWait"' in text  # the approval's wait drawn inside its bar
        assert text.index(">Make</span>") < text.index(">Gate</span>")
        # The artifact with its digest and size, the variables, the output variable, the approval's who and when.
        assert artifact.digest in text and f"{artifact.size} bytes" in text and ">App</td>" in text
        assert f'<code>GREETING</code></td><td><code class="value">{html.escape(MARKUP, quote=False)}</code>' in text
        assert "&lt;i&gt;1.2&lt;/i&gt;" in text  # the output variable VERSION
        approvals = text[text.index('<table class="approvals">') :].split("</table>")[0]
        assert "lead" in approvals and utc_time(decision.decided_at) in approvals and "Approved" in approvals
        assert "&lt;img src=x onerror=alert(2)&gt; ship it" in approvals
        assert "StartPipelineExecution" in text and "Pipeline version</dt><dd>1<" in text
        as_operator = (await http.get(page_path, headers=OLGA)).text
        assert f'class="act rollback" href="/console/pipelines/{name}/stages/Prod/rollback"' in as_operator
        assert "Stop…" not in as_operator and "retry…" not in as_operator  # it succeeded: nothing to stop or retry
        # Nothing a pipeline or a person wrote became markup.
        assert MARKUP not in text and IMG not in text and "<i>1.2" not in text
        log_link = f"{page_path}/logs/Build/Make"
        assert f'href="{log_link}"' in text and "/logs/Prod/Gate" not in text  # an approval writes no log

        # The finished action's log: streamed whole, escaped, then the end.
        async with http.stream("GET", f"{log_link}/stream", headers=VERA) as stream:
            got = [message async for message in events(stream)]  # the stream ends by itself
        assert [event for event, _ in got][-1] == "end" and "whole log" in got[-1][1]
        lines = "".join(d for e, d in got if e == "lines")
        assert '<span class="line">&lt;b&gt;bold&lt;/b&gt; &lt;script&gt;alert(3)&lt;/script&gt;</span>' in lines
        assert "<script>" not in lines
        # A browser reconnecting after a dropped stream says what it has (Last-Event-ID): only the rest comes.
        first = next(d for e, d in got if e == "lines").split("</span>")[:3]
        again = {**VERA, "Last-Event-ID": "3"}
        async with http.stream("GET", f"{log_link}/stream", headers=again) as stream:
            rest = "".join([d async for e, d in events(stream) if e == "lines"])
        assert rest and not any(line + "</span>" in rest for line in first)
        assert rest in lines and lines.endswith(rest)
        log_page = await http.get(log_link, headers=VERA)
        assert log_page.status_code == 200
        assert f'sse-connect="{log_link}/stream" sse-close="end"' in log_page.text

        # The pipeline page links to it.
        pipeline_page = await http.get(f"/console/pipelines/{name}", headers=VERA)
        assert f'href="{page_path}"' in pipeline_page.text
        # Unknown things are named, and a path that is not an execution id is refused.
        missing = await http.get(f"/console/pipelines/{name}/executions/nope", headers=VERA)
        assert missing.status_code == 404 and "was not found" in missing.text
        no_action = await http.get(f"{page_path}/logs/Build/Nope", headers=VERA)
        assert no_action.status_code == 404 and "stage &#39;Build&#39; has no action &#39;Nope&#39;" in no_action.text
        bad = await http.get(f"/console/pipelines/{name}/executions/%3Cb%3E", headers=VERA)
        assert bad.status_code == 400 and "<b>" not in bad.text


async def test_a_running_actions_log_is_streamed(conveyor: ConveyorClient, worker: Worker, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    data = pipeline(EMITTING.format(gate=gate))
    ref, _ = await conveyor.start(data)
    path = f"/console/pipelines/{data['name']}/executions/{ref.execution_id}/logs/Build/Emit/stream"
    async with console(conveyor, **VIEWERS) as http:

        async def follow() -> list[tuple[str, str]]:
            got: list[tuple[str, str]] = []
            async with http.stream("GET", path, headers=VERA) as stream:
                async for event, data in events(stream):
                    got.append((event, data))
                    if "line-5" in data and not gate.exists():
                        _, running = await conveyor.action_state(ref, "Build", "Emit")
                        assert running.status == ActionStatus.IN_PROGRESS  # read live, not after the end
                        gate.touch()
            return got

        got = await asyncio.wait_for(follow(), 30)
    assert gate.exists()
    assert await asyncio.wait_for(keepalive_while_quiet(conveyor, tmp_path), 30)
    shown = re.findall(r'<span class="line">([^<]*)</span>', "".join(d for e, d in got if e == "lines"))
    lines = [line for line in shown if line.startswith("line-")]  # without Conveyor's own "[conveyor] ..." lines
    assert lines == [f"line-{i} &lt;img src=x onerror=alert({i})&gt;" for i in range(1, 6)] + [
        f"line-{i}" for i in range(6, 11)
    ]
    assert sum(1 for e, _ in got if e == "lines") > 1  # in batches, as it ran
    assert got[-1][0] == "end"


async def keepalive_while_quiet(conveyor: ConveyorClient, tmp_path: Path) -> bool:
    """A quiet action's log stream sends comment lines (keepalives) until more lines come, then the end."""
    gate = tmp_path / "quiet-gate"
    data = pipeline(EMITTING.format(gate=gate))
    ref, _ = await conveyor.start(data)
    seen: list[str] = []
    async for message in log_messages(conveyor, ref, "Build", "Emit", keepalive=0.2):
        seen.append(message)
        if message.startswith(": keepalive") and "line-5" in "".join(seen):
            gate.touch()  # quiet after line-5 until the gate opens: keepalives came meanwhile
    assert seen[-1].startswith("event: end") and "line-10" in "".join(seen)
    return gate.exists()


LIVE = """
name: exec-live
stages:
  - name: Prod
    actions:
      - {name: Gate, provider: Manual}
"""


async def test_the_live_fragment_follows_the_state(conveyor: ConveyorClient, worker: Worker) -> None:
    data = pipeline(LIVE)
    ref, _ = await conveyor.start(data)
    token = await waiting_token(conveyor, ref)
    path = f"/console/pipelines/{data['name']}/executions/{ref.execution_id}"
    async with console(conveyor, **VIEWERS) as http:
        page = (await http.get(path, headers=VERA)).text
        assert f'sse-connect="{path}/stream"' in page and 'sse-swap="timeline"' in page
        assert "may decide" in page and 'class="bar bar-InProgress running"' in page
        assert f'class="act approve" href="{path}/approvals/Prod/Gate"' in page  # to console/acting.py's page
        assert "Stop…" not in page  # a viewer is offered no operator's link
        as_operator = (await http.get(path, headers=OLGA)).text
        assert f'class="act stop" href="{path}/stop"' in as_operator
        async with http.stream("GET", f"{path}/stream", headers=VERA) as stream:
            messages = events(stream)
            event, first = await asyncio.wait_for(anext(messages), 10)
            assert event == "timeline" and 'id="execution-status">InProgress' in first
            await conveyor.decide(ref, "Prod", "Gate", approve=True, summary=MARKUP, token=token, by="lead")

            async def until_succeeded() -> str:
                async for _, fragment in messages:
                    if 'id="execution-status">Succeeded' in fragment:
                        return fragment
                raise AssertionError("the stream ended")

            done = await asyncio.wait_for(until_succeeded(), 15)
        assert "Approved by lead" in done and html.escape(MARKUP, quote=False) in done and MARKUP not in done


def test_bars_scale_to_the_chart_and_say_what_they_are() -> None:
    """Offsets become x/width in the SVG's viewBox; a moment is still visible; titles carry status and duration."""
    now = datetime(2026, 11, 20, 8, 1, 40, tzinfo=UTC)  # started at 08:00:00
    rows = [
        TimelineRow(kind=RowKind.STAGE, stage_name="Build", status="Succeeded", start=0, end=100),
        TimelineRow(
            kind=RowKind.ACTION,
            stage_name="Build",
            action_name="Make",
            status="InProgress",
            start=50,
            end=100,
            running=True,
            attempt=2,
            segments=[Segment(kind=SegmentKind.RETRY_WAIT, label="retry back-off", start=50, end=50)],
        ),
        TimelineRow(kind=RowKind.ACTION, stage_name="Build", action_name="Later"),
    ]
    timeline = build_timeline_like(now, rows)
    stage, make, later = row_views(timeline)
    assert stage.bar is not None and (stage.bar.x, stage.bar.width) == (0.0, WIDTH)
    assert make.bar is not None and (make.bar.x, make.bar.width) == (WIDTH / 2, WIDTH / 2)
    assert make.bar.css == "bar bar-InProgress running"
    assert make.bar.title == (
        "action Make (Build): InProgress, attempt 2, started 2026-11-20 08:00:50 UTC, 50.0s, still running"
    )
    [back_off] = make.segments
    assert back_off.width == 2.0 and back_off.css == "seg seg-retryWait"  # zero length, still drawn
    assert later.bar is None
    assert seconds_text(187) == "3m07s"


def build_timeline_like(now: datetime, rows: list[TimelineRow]) -> Timeline:
    """A finished 100-second execution's timeline with these rows."""
    start = now - timedelta(seconds=100)
    base = build_timeline(
        ExecutionState(
            pipeline_name="p",
            execution_id="e",
            status=ExecutionStatus.SUCCEEDED,
            started_at=start,
            finished_at=now,
        ),
        now,
    )
    return base.model_copy(update={"rows": rows})


def test_conditions_compensations_rollback_links_and_links_drawn_from_a_state() -> None:
    """What a short run does not show, from a state as the recorder fills it: a deployment window's wait and its
    condition's rules, a bake, a stage retried, a compensation with its log, an approval still waiting (who may
    decide), the rollback links both ways, and external links only when http(s)."""
    state = failed_then_waiting()
    gate, deploy = state.stages[1].actions
    gate.external_url = "javascript:alert(document.domain)"
    deploy.external_url = "https://deploy.example.com/runs/7?a=1&b=2"
    deploy.compensation = CompensationState(
        status=CompensationStatus.SUCCEEDED, attempt=1, started_at=at(36), finished_at=at(38)
    )
    state.rollback_execution = "e-2"
    text = templates.get_template("execution_live.html").render(viewer=None, **view_context(state, at(50)))
    for kind in ("windowWait", "condition", "bake", "approvalWait", "attempt", "retryWait", "compensation"):
        assert f'class="seg seg-{kind}' in text, kind
    assert 'Hours <span class="provider">DeploymentWindow</span>' in text  # the condition's rule
    compensations = text[text.index('<table class="compensations">') :].split("</table>")[0]
    assert 'href="/console/pipelines/shop/executions/e-1/logs/Prod/Deploy.rollback"' in compensations
    assert "may decide: bob, cy" in text and "ann" in text and "1 of 2" in text
    assert 'class="rolled-back-by" href="/console/pipelines/shop/executions/e-2"' in text
    assert 'href="https://deploy.example.com/runs/7?a=1&amp;b=2"' in text
    assert 'href="javascript:' not in text and "javascript:alert(document.domain)" in text  # shown, not a link
    assert "0123456789abcdef" in text  # the source revision
    state.stages[0].status = StageStatus.FAILED
    window = state.stages[1].conditions[0]
    window.status, window.finished_at = ConditionStatus.IN_PROGRESS, None
    olga = Viewer(user="olga", roles=frozenset({Role.VIEWER, Role.OPERATOR}), via=Via.PROXY)
    acts = templates.get_template("execution_live.html").render(viewer=olga, **view_context(state, at(50)))
    assert 'class="act retry" href="/console/pipelines/shop/executions/e-1/stages/Build/retry"' in acts
    assert 'class="act override" href="/console/pipelines/shop/executions/e-1/stages/Prod/override"' in acts
    assert 'class="act stop" href="/console/pipelines/shop/executions/e-1/stop"' in acts
    assert 'class="act ' not in text.replace('class="act approve"', "")  # no viewer: only the approval's link
    rollback = ExecutionState(
        pipeline_name="shop", execution_id="e-2", execution_type="ROLLBACK", rollback_of="e-1", rollback_stage="Prod"
    )
    shown = templates.get_template("execution_live.html").render(viewer=None, **view_context(rollback, T0))
    assert 'stage Prod to the inputs of <a class="rollback-of" href="/console/pipelines/shop/executions/e-1">' in shown
