"""Cron schedules and polling as Temporal Schedules (dev server: the time-skipping server has none)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest
from temporalio.service import RPCError
from temporalio.worker import Worker

from conveyor.client import ConveyorClient
from conveyor.devserver import EmbeddedServer
from conveyor.model import ExecutionStatus, TriggerType
from conveyor.settings import Settings
from tests.helpers import pipeline
from tests.test_cli import cli_env
from tests.test_cli import conveyor as cli
from tests.test_webhooks import git, repository


async def executions(conveyor: ConveyorClient, name: str, count: int) -> list:
    async def enough() -> list:
        while len(rows := await conveyor.list(name)) < count:
            await asyncio.sleep(0.2)
        return rows

    rows = await asyncio.wait_for(enough(), 30)
    await asyncio.sleep(1.5)  # anything more would have shown up by now
    rows = await conveyor.list(name)
    assert len(rows) == count, [r.execution for r in rows]
    return rows


async def test_schedules_follow_the_declaration_pause_and_poll_new_commits(
    conveyor: ConveyorClient, worker: Worker, server: EmbeddedServer, settings: Settings, tmp_path: Path
) -> None:
    repo = repository(tmp_path / "repo", {"file.txt": "one\n"}, "one")
    declaration = pipeline(
        f"""
name: scheduled
conveyor:
  schedule: {{cron: "0 9 * * 1-5", timeZone: Europe/Paris}}
  poll: {{intervalSeconds: 3600}}
stages:
  - name: Source
    actions:
      - name: Checkout
        provider: Git
        configuration: {{RepositoryUrl: "{repo}", BranchName: main}}
        outputArtifacts: [{{name: Code}}]
  - name: Build
    actions:
      - {{name: Check, provider: Commands, inputArtifacts: [{{name: Code}}], commands: ["test -f file.txt"]}}
"""
    )
    name = declaration["name"]
    await conveyor.apply(declaration)
    temporal = conveyor.temporal
    cron = await temporal.get_schedule_handle(f"{name}/schedule").describe()
    calendar = cron.schedule.spec.calendars[0]  # the server keeps a cron as a calendar
    assert [(r.start, r.end) for r in calendar.hour] == [(9, 9)]
    assert [(r.start, r.end) for r in calendar.day_of_week] == [(1, 5)]
    assert cron.schedule.spec.time_zone_name == "Europe/Paris"
    poll = await temporal.get_schedule_handle(f"{name}/poll").describe()
    assert poll.schedule.spec.intervals[0].every.total_seconds() == 3600

    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    paused = await cli("schedule", "pause", name, "--note", "release freeze", env=env)
    assert paused.code == 0, str(paused)
    assert (await temporal.get_schedule_handle(f"{name}/schedule").describe()).schedule.state.paused
    listing = await cli("schedule", "list", name, "--output", "json", env=env)
    assert listing.code == 0, str(listing)
    listed = json.loads(listing.out)
    assert {(r["kind"], r["paused"]) for r in listed} == {("schedule", True), ("poll", True)}
    assert {r["kind"]: r["spec"] for r in listed} == {
        "schedule": "0 9 1-31 1-12 1-5 (Europe/Paris)",
        "poll": "every 1:00:00",
    }
    resumed = await cli("schedule", "unpause", name, "--kind", "poll", env=env)
    assert resumed.code == 0, str(resumed)
    assert not (await temporal.get_schedule_handle(f"{name}/poll").describe()).schedule.state.paused
    assert (await temporal.get_schedule_handle(f"{name}/schedule").describe()).schedule.state.paused

    poller = temporal.get_schedule_handle(f"{name}/poll")
    await poller.trigger()  # a poll now: the branch has a commit never built
    first = (await executions(conveyor, name, 1))[0]
    state = await asyncio.wait_for(conveyor.wait(first.ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert state.trigger.trigger_type == TriggerType.POLL_FOR_SOURCE_CHANGES
    assert state.source_revisions[0].revision_id == git(repo, "rev-parse", "HEAD")
    await poller.trigger()  # no new commit: nothing starts
    await executions(conveyor, name, 1)
    (repo / "file.txt").write_text("two\n")
    git(repo, "commit", "-q", "-am", "two")
    await poller.trigger()
    await executions(conveyor, name, 2)

    unscheduled = dict(declaration)
    unscheduled["conveyor"] = {}
    await conveyor.apply(unscheduled)
    for kind in ("schedule", "poll"):
        with pytest.raises(RPCError):
            await temporal.get_schedule_handle(f"{name}/{kind}").describe()


def test_git_helper_is_real() -> None:
    assert subprocess.run(["git", "--version"], capture_output=True).returncode == 0
