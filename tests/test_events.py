"""State-change events (issue 18): sent by the execution and stage workflows in batches to `deliver_events` on a real
worker, kept in the store's record, appended to the JSON-lines file sink, read back by `conveyor events`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.service import RPCError

from conveyor.client import ConveyorClient
from conveyor.events import event_id
from conveyor.model import ExecutionStatus, StageResult
from conveyor.settings import Settings
from conveyor.stores.event_record import dead_letters, recorded_events, stale_event_documents
from conveyor.stores.records import LocalRecordBackend, record_backend
from conveyor.worker import build_worker
from tests.helpers import pipeline
from tests.test_event_sinks import Receiver, webhook
from tests.test_event_sinks import receiver as receiver  # noqa: F401 - a fixture, used by name


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def two_stages(name: str, build_commands: list[str] | None = None) -> dict[str, Any]:
    commands = json.dumps(build_commands or ["echo built"])
    return pipeline(
        f"""
name: {name}
stages:
  - name: Build
    actions:
      - {{name: Compile, provider: Commands, commands: {commands}}}
      - {{name: Check, provider: Commands, runOrder: 2, commands: ["echo checked"]}}
  - name: Ship
    actions:
      - {{name: Deploy, provider: Commands, commands: ["echo shipped"]}}
"""
    )


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def entity(event: dict[str, Any]) -> tuple[str, ...]:
    detail = event["detail"]
    return (event["detail-type"].split()[1], detail.get("stage", ""), detail.get("action", ""))


def pipeline_ended(events: list[dict[str, Any]]) -> bool:
    return any(entity(e)[0] == "Pipeline" and e["detail"]["state"] == "SUCCEEDED" for e in events)


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def by_entity(events: list[dict[str, Any]]) -> dict[tuple[str, ...], list[str]]:
    found: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for event in events:
        found[entity(event)].append(event["detail"]["state"])
    return dict(found)


WHOLE_RUN = {
    ("Pipeline", "", ""): ["STARTED", "SUCCEEDED"],
    ("Stage", "Build", ""): ["STARTED", "SUCCEEDED"],
    ("Action", "Build", "Compile"): ["STARTED", "SUCCEEDED"],
    ("Action", "Build", "Check"): ["STARTED", "SUCCEEDED"],
    ("Stage", "Ship", ""): ["STARTED", "SUCCEEDED"],
    ("Action", "Ship", "Deploy"): ["STARTED", "SUCCEEDED"],
}


def conveyor_events(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = os.environ | {"CONVEYOR_DATA_DIR": str(settings.data_dir)}
    env.pop("CONVEYOR_ARTIFACT_STORE", None)
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "events", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_a_whole_execution_in_order_per_entity_with_stable_unique_ids(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings, tmp_path: Path
) -> None:
    sink = tmp_path / "events.jsonl"
    name = unique("events-whole")
    async with build_worker(temporal_client, settings.model_copy(update={"events_file": sink})):
        ref, _ = await conveyor.start(two_stages(name))
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
        await wait_for(lambda: pipeline_ended(read_lines(sink)), 30, "the pipeline's SUCCEEDED event at the sink")
    events = read_lines(sink)
    assert by_entity(events) == WHOLE_RUN
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)  # unique
    # Stable: derived from the execution, the producer and its sequence number (the same again on a re-send).
    expected = {event_id(ref.execution_id, "execution", n) for n in range(1, 7)}
    expected |= {event_id(ref.execution_id, "stage/Build/1", n) for n in range(1, 5)}
    expected |= {event_id(ref.execution_id, "stage/Ship/1", n) for n in range(1, 3)}
    assert set(ids) == expected
    first = events[0]
    assert first["source"] == "conveyor" and first["detail-type"] == "CodePipeline Pipeline Execution State Change"
    assert first["detail"]["execution-trigger"]["trigger-type"] == "StartPipelineExecution"
    assert first["detail"]["execution-id"] == ref.execution_id and first["detail"]["version"] == 1
    compile_started = next(e for e in events if entity(e) == ("Action", "Build", "Compile"))
    assert compile_started["detail"]["type"]["provider"] == "Commands"
    # The record in the store holds the same events, each once, in order per execution.
    recorded = recorded_events(record_backend(settings), ref.pipeline_name, ref.execution_id)
    assert sorted(e.id for e in recorded) == sorted(ids)
    assert by_entity([e.wire() for e in recorded]) == WHOLE_RUN
    times = [e.time for e in recorded]
    assert times == sorted(times)

    # `conveyor events` (a separate process) prints the record: the same events, in the record's order.
    printed = conveyor_events(settings, ref.pipeline_name, "--execution", ref.execution_id, "-o", "json")
    out, err = printed.communicate(timeout=60)
    assert printed.returncode == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [e.id for e in recorded]
    table = conveyor_events(settings, ref.pipeline_name)
    out, err = table.communicate(timeout=60)
    assert table.returncode == 0, err
    assert f"{ref.execution_id}  Action  Build/Compile  STARTED" in out


async def test_an_action_started_event_leaves_while_the_action_runs_and_follow_prints_it(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings, tmp_path: Path
) -> None:
    sink = tmp_path / "events.jsonl"
    release = tmp_path / "release"
    name = unique("events-live")
    wait_for_release = f"while [ ! -f {release} ]; do sleep 0.1; done"
    async with build_worker(temporal_client, settings.model_copy(update={"events_file": sink})):
        ref, _ = await conveyor.start(two_stages(name, [wait_for_release]))
        follower = conveyor_events(
            settings, ref.pipeline_name, "--execution", ref.execution_id, "--follow", "-o", "json"
        )
        try:
            started = ("Action", "Build", "Compile")
            await wait_for(
                lambda: any(entity(e) == started for e in read_lines(sink)), 30, "Compile's STARTED at the sink"
            )
            # The action still runs (it waits for the release file): its stage has not ended.
            assert not any(
                entity(e) == ("Stage", "Build", "") and e["detail"]["state"] != "STARTED" for e in read_lines(sink)
            )
            assert (await conveyor.state(ref)).stages[0].actions[0].status == "InProgress"
            release.touch()
            state = await asyncio.wait_for(conveyor.wait(ref), 60)
            assert state.status == ExecutionStatus.SUCCEEDED
            out, err = await asyncio.to_thread(follower.communicate, timeout=60)  # ends by itself at the end
        finally:
            if follower.poll() is None:
                follower.kill()
    assert follower.returncode == 0, err
    assert by_entity([json.loads(line) for line in out.splitlines()]) == WHOLE_RUN


async def test_failing_delivery_never_delays_or_fails_the_pipeline_and_is_dead_lettered(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings, tmp_path: Path
) -> None:
    unwritable = tmp_path / "missing-directory" / "events.jsonl"
    name = unique("events-dead")
    async with build_worker(temporal_client, settings.model_copy(update={"events_file": unwritable})):
        ref, _ = await conveyor.start(two_stages(name))
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
        # The workflow itself completes once its outbox drained (dead letters written, none lost).
        handle = temporal_client.get_workflow_handle(ref.workflow_id)
        await asyncio.wait_for(handle.result(), 60)
    backend = record_backend(settings)
    letters = dead_letters(backend, ref.pipeline_name, ref.execution_id)
    assert letters and {letter.sink for letter in letters} == {"file"}
    assert all("FileNotFoundError" in letter.error for letter in letters)
    dead_ids = sorted(e.id for letter in letters for e in letter.batch.events)
    recorded = recorded_events(backend, ref.pipeline_name, ref.execution_id)
    assert dead_ids == sorted(e.id for e in recorded)  # every event: in the record, and dead-lettered for the sink
    assert by_entity([e.wire() for e in recorded]) == WHOLE_RUN
    assert not unwritable.exists()


def start_worker_process(settings: Settings, events_file: Path, log: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "CONVEYOR_TASK_QUEUE": settings.task_queue,
        "CONVEYOR_DATA_DIR": str(settings.data_dir),
        "CONVEYOR_EVENTS_FILE": str(events_file),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker"], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


@pytest.mark.slow  # two worker processes started, and a lost one's heartbeat timeout: about 35 s on 2 cores
async def test_a_worker_killed_between_a_change_and_its_delivery_loses_nothing(
    conveyor: ConveyorClient, settings: Settings, tmp_path: Path
) -> None:
    # The first worker's sink is a FIFO nobody reads: its delivery blocks after the record is written, before the
    # sink has the events. It is SIGKILLed there; the second worker sends the batches again.
    blocked = tmp_path / "blocked.fifo"
    os.mkfifo(blocked)
    sink = tmp_path / "events.jsonl"
    name = unique("events-kill")
    first = start_worker_process(settings, blocked, tmp_path / "worker1.log")
    try:
        # Compile outlasts the stage's hold, so the stage's own batch starts (Check's events go with its result).
        ref, _ = await conveyor.start(two_stages(name, ["sleep 2"]))
        backend = record_backend(settings)
        await wait_for(
            lambda: any(e.scope == "Action" for e in recorded_events(backend, ref.pipeline_name, ref.execution_id)),
            30,
            "an action's event in the record (its delivery under way)",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert read_lines(sink) == []
    second = start_worker_process(settings, sink, tmp_path / "worker2.log")
    try:
        state = await asyncio.wait_for(conveyor.wait(ref), 90)
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
        await wait_for(lambda: pipeline_ended(read_lines(sink)), 60, "the pipeline's SUCCEEDED event at the sink")
    finally:
        second.terminate()
        second.wait(15)
    events = read_lines(sink)
    counts = Counter(e["id"] for e in events)
    duplicates = sum(n - 1 for n in counts.values())
    unique_events = {e["id"]: e for e in events}
    # Nothing lost: every entity's whole story, each event once after de-duplication by id.
    assert by_entity(sorted(unique_events.values(), key=lambda e: e["time"])) == WHOLE_RUN
    # A duplicate is the same event again (same id, same content), never a new one.
    for event in events:
        assert event == unique_events[event["id"]]
    print(f"events delivered {len(events)}, unique {len(unique_events)}, duplicates {duplicates}")


def test_gc_sweeps_the_record_and_dead_letters_with_their_execution(tmp_path: Path) -> None:
    backend = LocalRecordBackend(tmp_path)
    for path in (
        "events/p/gone/execution/00000001.json",
        "events/p/gone/stage/Build/1/00000001.json",
        "event-dead-letters/p/gone/file/execution/00000001.json",
        "events/p/kept/execution/00000001.json",  # retained execution
        "events/p/fresh/execution/00000001.json",  # written since the cutoff
    ):
        backend.replace(path, b"{}")
    old = time.time() - 7200
    for path in tmp_path.rglob("*.json"):
        if "fresh" not in str(path):
            os.utime(path, (old, old))
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    stale = stale_event_documents(backend, {("p", "kept")}, cutoff)
    assert sorted(d.relative for d in stale) == [
        "event-dead-letters/p/gone/file/execution/00000001.json",
        "events/p/gone/execution/00000001.json",
        "events/p/gone/stage/Build/1/00000001.json",
    ]


def test_conveyor_events_names_a_bad_argument_and_an_empty_record(settings: Settings) -> None:
    wrong = conveyor_events(settings, "some-pipeline/some-execution")
    out, err = wrong.communicate(timeout=60)
    assert wrong.returncode == 2 and "--execution" in err and "Traceback" not in err
    empty = conveyor_events(settings, unique("never-ran"))
    out, err = empty.communicate(timeout=60)
    assert empty.returncode == 0 and out == "" and "no events recorded" in err


async def test_an_abandoning_stop_sends_stopping_abandoned_and_stopped(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings, tmp_path: Path
) -> None:
    sink = tmp_path / "events.jsonl"
    name = unique("events-stop")
    async with build_worker(temporal_client, settings.model_copy(update={"events_file": sink})):
        ref, _ = await conveyor.start(two_stages(name, ["sleep 30"]))
        started = ("Action", "Build", "Compile")
        await wait_for(lambda: any(entity(e) == started for e in read_lines(sink)), 30, "Compile's STARTED")
        await conveyor.stop(ref, reason="enough", abandon=True)
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
        assert state.status == ExecutionStatus.STOPPED
        await wait_for(
            lambda: any(entity(e)[0] == "Pipeline" and e["detail"]["state"] == "STOPPED" for e in read_lines(sink)),
            30,
            "the pipeline's STOPPED event",
        )
    assert by_entity(read_lines(sink)) == {
        ("Pipeline", "", ""): ["STARTED", "STOPPING", "STOPPED"],
        ("Stage", "Build", ""): ["STARTED", "STOPPED"],
        ("Action", "Build", "Compile"): ["STARTED", "ABANDONED"],
    }


async def test_a_pipelines_own_webhook_sink_gets_the_same_events_signed(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings, tmp_path: Path, receiver: Receiver
) -> None:
    sink = tmp_path / "events.jsonl"
    declared = two_stages(unique("events-hook"))
    declared["conveyor"] = {"events": {"sinks": [webhook(receiver.url)]}}
    async with build_worker(temporal_client, settings.model_copy(update={"events_file": sink})):
        ref, _ = await conveyor.start(declared)
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
        await wait_for(lambda: pipeline_ended([e for r in receiver.verified() for e in r]), 30, "the webhook's end")
    received = [event for request in receiver.verified() for event in request]  # signatures checked
    assert by_entity(received) == WHOLE_RUN
    assert sorted(e["id"] for e in received) == sorted(e["id"] for e in read_lines(sink))
    assert len(receiver.requests) < len(received)  # batches, not one request per event


async def test_a_stage_hands_its_undelivered_events_to_the_execution_instead_of_waiting(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings, tmp_path: Path
) -> None:
    sink = tmp_path / "events.jsonl"
    name = unique("events-handoff")
    async with build_worker(temporal_client, settings.model_copy(update={"events_file": sink})):
        ref, _ = await conveyor.start(two_stages(name))
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
        await wait_for(lambda: pipeline_ended(read_lines(sink)), 30, "the pipeline's SUCCEEDED event at the sink")
        handle = temporal_client.get_workflow_handle(ref.stage_workflow_id("Build"), result_type=StageResult)
        result = await handle.result()
        # It left no delivery behind it (one scheduled as it closed kept the time-skipping server from skipping).
        assert not (await handle.describe()).raw_description.pending_activities
    # The stage ended in the step its last action did (no delivery round trip): that action's SUCCEEDED event
    # (the stage's 4th) was not confirmed delivered, and went in its result, with the stage's id for it.
    handed = [e.id for e in result.undelivered_events]
    assert event_id(ref.execution_id, "stage/Build/1", 4) in handed
    # The execution sent it, before the stage's own SUCCEEDED event (the record keeps each id once).
    recorded = [e.wire() for e in recorded_events(record_backend(settings), ref.pipeline_name, ref.execution_id)]
    assert by_entity(recorded) == WHOLE_RUN
    order = [(entity(e), e["detail"]["state"]) for e in recorded]
    check_done = order.index((("Action", "Build", "Check"), "SUCCEEDED"))
    assert check_done < order.index((("Stage", "Build", ""), "SUCCEEDED"))


@pytest.mark.slow  # three 5 s webhook answers in a row for the execution's batches: about 20 s
async def test_a_stage_ending_with_its_batch_in_flight_cancels_it_and_hands_its_events_over(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings, receiver: Receiver
) -> None:
    # Each webhook answer takes 5 s: the stage's own batch (its action outlasts the hold) is still in flight when the
    # action ends a second later.
    receiver.delay = 5
    declared = pipeline(
        f"""
name: {unique("events-inflight")}
stages:
  - name: Build
    actions:
      - {{name: Compile, provider: Commands, commands: ["sleep 1"]}}
"""
    )
    declared["conveyor"] = {"events": {"sinks": [webhook(receiver.url)]}}
    async with build_worker(temporal_client, settings):
        ref, _ = await conveyor.start(declared)
        handle = temporal_client.get_workflow_handle(ref.stage_workflow_id("Build"), result_type=StageResult)

        async def started() -> bool:
            try:
                await handle.describe()
                return True
            except RPCError:  # not started yet
                return False

        deadline = time.monotonic() + 30
        while not await started():
            assert time.monotonic() < deadline, "the stage never started"
            await asyncio.sleep(0.1)
        result = await asyncio.wait_for(handle.result(), 60)
        # Its batch in flight (Compile's STARTED) was cancelled, not waited for (that would take 4 s more) nor left
        # running (its cancel completes at the activity's next heartbeat), and its events were handed over.
        described = await handle.describe()
        assert not described.raw_description.pending_activities
        finished = result.state.actions[0].finished_at
        assert finished is not None and described.close_time is not None
        assert described.close_time - finished < timedelta(seconds=3.5)
        handed = [e.id for e in result.undelivered_events]
        assert handed[:2] == [event_id(ref.execution_id, "stage/Build/1", n) for n in (1, 2)]
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
        await wait_for(lambda: pipeline_ended([e for r in receiver.verified() for e in r]), 60, "the webhook's end")
    received = {e["id"]: e for r in receiver.verified() for e in r}  # a receiver de-duplicates by id
    assert by_entity(sorted(received.values(), key=lambda e: e["time"])) == {
        ("Pipeline", "", ""): ["STARTED", "SUCCEEDED"],
        ("Stage", "Build", ""): ["STARTED", "SUCCEEDED"],
        ("Action", "Build", "Compile"): ["STARTED", "SUCCEEDED"],
    }


async def test_a_failed_stage_hands_its_last_events_over_in_its_failure(
    conveyor: ConveyorClient, temporal_client: Client, settings: Settings
) -> None:
    name = unique("events-failed")
    async with build_worker(temporal_client, settings):
        ref, _ = await conveyor.start(two_stages(name, ["exit 3"]))
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
        assert state.status == ExecutionStatus.FAILED, state.status_summary

        def recorded() -> list[dict[str, Any]]:
            return [e.wire() for e in recorded_events(record_backend(settings), ref.pipeline_name, ref.execution_id)]

        await wait_for(lambda: len(recorded()) == 6, 30, "the execution's 6 events in the record")
    # The stage's failure carried Compile's FAILED event (not confirmed delivered when it ended); the execution
    # sent it before the stage's FAILED event.
    assert by_entity(recorded()) == {
        ("Pipeline", "", ""): ["STARTED", "FAILED"],
        ("Stage", "Build", ""): ["STARTED", "FAILED"],
        ("Action", "Build", "Compile"): ["STARTED", "FAILED"],
    }
    order = [(entity(e), e["detail"]["state"]) for e in recorded()]
    assert order.index((("Action", "Build", "Compile"), "FAILED")) < order.index((("Stage", "Build", ""), "FAILED"))
