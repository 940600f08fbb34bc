"""The benchmark scenarios: each runs Conveyor and the baseline on the same server and worker settings.

Each scenario is an async function taking a `BenchContext` and returning
`{"cases": {name: summarize_case(...)}, "ratio": ..., "notes": [...]}` (see `bench.report`).
Conveyor's actions use the documented `Noop` provider, the baseline's the empty `baseline_noop`
activity, so both sides do the same work and the ratio is Conveyor's orchestration cost.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType, TaskQueueType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowHandle

from bench.baseline import BaselineApproval, baseline_input
from bench.codebuild import codebuild
from bench.console import console
from bench.events import events
from bench.handoff import handoff
from bench.invoke import invoke
from bench.report import geometric_mean, summarize_case
from bench.worker import build_bench_worker
from conveyor.client import ConveyorClient
from conveyor.interface import execution_workflow_id, stage_workflow_id
from conveyor.model import ApprovalDecision, ApprovalResult, ExecutionState, ExecutionStatus, StageState
from conveyor.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
Raw = dict[str, dict[str, list[float]]]


@dataclass
class BenchContext:
    """What every scenario needs: the server, a client on it, and the run's knobs."""

    client: Client
    address: str
    data_dir: Path
    server_pid: int | None
    repeat: int | None = None  # None: the scenario's own default
    scale: float = 1.0
    tiny: bool = False
    approval_rate: float = 5.0  # approvals per second in the approvals scenario
    log: Callable[[str], None] = field(default=lambda _msg: None)

    def settings(self, label: str) -> Settings:
        """A unique task queue per scenario run: no run ever picks up another's tasks."""
        return Settings(
            data_dir=self.data_dir, temporal_address=self.address, task_queue=f"bench-{label}-{uuid.uuid4().hex[:8]}"
        )

    def repeats(self, default: int) -> int:
        return 1 if self.tiny else (self.repeat or default)

    def scaled(self, default: int, tiny: int) -> int:
        return tiny if self.tiny else max(1, round(default * self.scale))


# --- declarations -----------------------------------------------------------------------------


def noop_pipeline(
    name: str, stages: int, actions: int, *, run_orders: int = 1, mode: str | None = None
) -> dict[str, Any]:
    """`stages` x `actions` Noop actions; the actions of a stage are spread over `run_orders` groups
    (runOrder 1..run_orders, in order), so run_orders == actions makes a stage fully sequential."""
    per_group = max(1, -(-actions // run_orders))
    declaration: dict[str, Any] = {
        "name": name,
        "stages": [
            {
                "name": f"S{s + 1}",
                "actions": [
                    {"name": f"A{a + 1}", "provider": "Noop", "runOrder": a // per_group + 1} for a in range(actions)
                ],
            }
            for s in range(stages)
        ],
    }
    if mode:
        declaration["executionMode"] = mode
    return declaration


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# --- measuring one execution ------------------------------------------------------------------


class CpuMeter:
    """CPU seconds of this process (client and in-process worker) and of the Temporal server."""

    def __init__(self, server_pid: int | None) -> None:
        self.me = psutil.Process()
        self.server = psutil.Process(server_pid) if server_pid else None

    def snapshot(self) -> tuple[float, float]:
        mine = self.me.cpu_times()
        theirs = self.server.cpu_times() if self.server else None
        return mine.user + mine.system, (theirs.user + theirs.system) if theirs else 0.0


async def _start_conveyor(conveyor: ConveyorClient, declaration: dict[str, Any]) -> WorkflowHandle[Any, Any]:
    ref, _ = await conveyor.start(declaration)
    return conveyor.temporal.get_workflow_handle(ref.workflow_id, result_type=ExecutionState)


async def _start_baseline(client: Client, settings: Settings, declaration: dict[str, Any]) -> WorkflowHandle[Any, Any]:
    input = baseline_input(declaration, str(uuid.uuid4()))
    return await client.start_workflow(
        "BaselineExecution",
        input,
        id=execution_workflow_id(input.pipeline_name, input.execution_id),
        task_queue=settings.task_queue,
        result_type=int,
    )


async def timed_conveyor(ctx: BenchContext, conveyor: ConveyorClient, declaration: dict[str, Any]) -> dict[str, Any]:
    """Start an execution and wait for its workflow to close (it closes when PipelineStatus turns
    terminal: the retry window is 0); `result()` long-polls, so the wall time carries no poll delay."""
    meter = CpuMeter(ctx.server_pid)
    cpu0 = meter.snapshot()
    start = time.perf_counter()
    ref, _ = await conveyor.start(declaration)
    handle = ctx.client.get_workflow_handle(ref.workflow_id, result_type=ExecutionState)
    state = await handle.result()
    wall = time.perf_counter() - start
    cpu1 = meter.snapshot()
    if state.status != ExecutionStatus.SUCCEEDED:
        raise RuntimeError(f"Conveyor execution {ref} ended {state.status}: {state.status_summary}")
    stage_ids = [stage_workflow_id(ref.pipeline_name, ref.execution_id, s["name"]) for s in declaration["stages"]]
    return await _sample(handle, wall, cpu0, cpu1, [ref.workflow_id, *stage_ids])


async def timed_baseline(ctx: BenchContext, settings: Settings, declaration: dict[str, Any]) -> dict[str, Any]:
    """The same shape through `BaselineExecution`, measured the same way."""
    meter = CpuMeter(ctx.server_pid)
    cpu0 = meter.snapshot()
    start = time.perf_counter()
    handle = await _start_baseline(ctx.client, settings, declaration)
    ran = await handle.result()
    wall = time.perf_counter() - start
    cpu1 = meter.snapshot()
    expected = sum(len(s["actions"]) for s in declaration["stages"])
    if ran != expected:
        raise RuntimeError(f"baseline ran {ran} actions, expected {expected}")
    stage_ids = [f"{handle.id}/{s['name']}" for s in declaration["stages"]]
    return await _sample(handle, wall, cpu0, cpu1, [handle.id, *stage_ids])


async def _sample(
    handle: WorkflowHandle[Any, Any], wall: float, cpu0: tuple[float, float], cpu1: tuple[float, float], ids: list[str]
) -> dict[str, Any]:
    description = await handle.describe()
    server_s = None
    if description.close_time and description.start_time:
        server_s = (description.close_time - description.start_time).total_seconds()
    return {
        "wall_s": wall,
        "server_s": server_s,
        "worker_cpu_s": cpu1[0] - cpu0[0],
        "server_cpu_s": cpu1[1] - cpu0[1],
        "workflow_ids": ids,
    }


# --- histories --------------------------------------------------------------------------------


def payload_bytes(message: Message) -> int:
    """Bytes of every Payload (data and metadata) inside a protobuf message: inputs, results, memo,
    search attributes, signal and update arguments."""
    if isinstance(message, Payload):
        return message.ByteSize()
    total = 0
    for descriptor, value in message.ListFields():
        if descriptor.type != descriptor.TYPE_MESSAGE:
            continue
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            values = value.values()
        elif isinstance(value, Message):
            values = [value]
        else:  # a repeated field
            values = value
        for item in values:
            if isinstance(item, Message):
                total += payload_bytes(item)
    return total


async def history_stats(client: Client, workflow_ids: list[str]) -> dict[str, float]:
    """Events, serialized bytes and payload bytes of an execution (first id) and its stage children,
    and where its time went: workflow-task dispatch and processing, gaps between stages."""
    histories = [await client.get_workflow_handle(w).fetch_history() for w in workflow_ids]
    events = [e for h in histories for e in h.events]
    return {
        "history_events": len(events),
        "history_bytes": sum(e.ByteSize() for e in events),
        "payload_bytes": sum(payload_bytes(e) for e in events),
        "largest_workflow_events": max(len(h.events) for h in histories),
        "workflows": len(histories),
        **workflow_task_times(events),
        **stage_gaps(histories[0].events),
    }


def _ms(event: HistoryEvent) -> float:
    return event.event_time.ToMilliseconds()


def workflow_task_times(events: Sequence[HistoryEvent]) -> dict[str, float]:
    """Workflow tasks: how many, total ms waiting to be picked up, total ms being processed (the
    worker running workflow code, local activities included, and reporting back)."""
    scheduled: float | None = None
    started: float | None = None
    count, waiting, processing = 0, 0.0, 0.0
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            scheduled = _ms(event)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED and scheduled is not None:
            started = _ms(event)
            waiting += started - scheduled
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and started is not None:
            count += 1
            processing += _ms(event) - started
            scheduled = started = None
    return {"workflow_tasks": count, "workflow_task_wait_ms": waiting, "workflow_task_processing_ms": processing}


def stage_gaps(events: Sequence[HistoryEvent]) -> dict[str, float]:
    """From the execution's own history: ms from its start (or the previous stage's end) to the next
    stage child being initiated, summed over stages; ms inside stage children; ms from the last
    stage's end to the close."""
    mark = _ms(events[0])
    between = inside = 0.0
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            between += _ms(event) - mark
            mark = _ms(event)
        elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
            inside += _ms(event) - mark
            mark = _ms(event)
    return {"between_stages_ms": between, "in_stages_ms": inside, "after_last_stage_ms": _ms(events[-1]) - mark}


# --- scenario 1: overhead ---------------------------------------------------------------------

SIDES = ("conveyor", "baseline")


async def _interleaved(
    ctx: BenchContext, run: Mapping[str, Callable[[], Awaitable[dict[str, Any]]]], repeats: int, warmup: bool
) -> Raw:
    """Run each side `repeats` times, alternating which goes first, after one unrecorded warm-up each
    (first-run costs: the coordinator's start, the sandbox's first imports). Every recorded sample
    also carries its history's size and timeline, read after the clock stopped."""
    raw: Raw = {side: {} for side in SIDES}
    if warmup:
        for side in SIDES:
            await run[side]()
    for rep in range(repeats):
        for side in SIDES if rep % 2 == 0 else tuple(reversed(SIDES)):
            sample = await run[side]()
            stats = await history_stats(ctx.client, sample["workflow_ids"])
            for metric, value in [*sample.items(), *stats.items()]:
                if isinstance(value, int | float) and not isinstance(value, bool):
                    raw[side].setdefault(metric, []).append(float(value))
    return raw


async def overhead(ctx: BenchContext) -> dict[str, Any]:
    """One execution at a time, so the wall time is latency: Conveyor's orchestration vs bare Temporal."""
    shapes = {"2x2-sequential": (2, 2, 2)} if ctx.tiny else {"5x4-sequential": (5, 4, 4), "3x1": (3, 1, 1)}
    repeats = ctx.repeats(5)
    settings = ctx.settings("overhead")
    conveyor = ConveyorClient(ctx.client, settings)
    cases: dict[str, Any] = {}
    notes: list[str] = []
    async with build_bench_worker(ctx.client, settings):
        for shape, (stages, actions, run_orders) in shapes.items():
            for mode in ("PARALLEL", "SUPERSEDED"):
                name = f"{shape}/{mode}"
                ctx.log(f"overhead {name}: {repeats} repetitions per side")
                declaration = noop_pipeline(
                    unique(f"bench-{shape}-{mode.lower()}"), stages, actions, run_orders=run_orders, mode=mode
                )
                raw = await _interleaved(
                    ctx,
                    {
                        "conveyor": functools.partial(timed_conveyor, ctx, conveyor, declaration),
                        "baseline": functools.partial(timed_baseline, ctx, settings, declaration),
                    },
                    repeats,
                    warmup=not ctx.tiny,
                )
                coordinator = await _coordinator_events(ctx.client, declaration["name"], repeats + (not ctx.tiny))
                cases[name] = summarize_case(raw, "wall_s", coordinator_events_per_execution=coordinator)
                notes.append(_history_note(name, cases[name]))
    return {
        "cases": cases,
        "ratio": geometric_mean([c["ratio"] for c in cases.values() if c["ratio"]]),
        "ratio_is": "geometric mean of the cases' wall-time ratios",
        "repeat": repeats,
        "notes": notes,
    }


async def _coordinator_events(client: Client, pipeline_name: str, executions: int) -> float | None:
    """The coordinator's events per execution (it is shared by a pipeline's executions)."""
    try:
        history = await client.get_workflow_handle(pipeline_name).fetch_history()
    except Exception:  # noqa: BLE001 - informational
        return None
    return len(history.events) / executions


def _history_note(name: str, case: dict[str, Any]) -> str:
    def both(metric: str) -> str:
        c, b = case["conveyor"].get(metric, {}), case["baseline"].get(metric, {})
        return f"{c.get('median', 0):.0f} vs {b.get('median', 0):.0f}"

    return (
        f"{name}: history events {both('history_events')} "
        f"(+{case.get('coordinator_events_per_execution') or 0:.0f} in the coordinator), "
        f"payload bytes {both('payload_bytes')}, workflow tasks {both('workflow_tasks')}, "
        f"ms between stages {both('between_stages_ms')}, ms in stages {both('in_stages_ms')}"
    )


# --- scenario 4: one big pipeline -------------------------------------------------------------


async def big(ctx: BenchContext) -> dict[str, Any]:
    """50 stages x 10 actions (two runOrder groups of 5) in one execution, default mode (SUPERSEDED):
    time, and how long and large the histories get."""
    stages = ctx.scaled(50, tiny=3)
    actions = 2 if ctx.tiny else 10
    repeats = ctx.repeats(1)
    settings = ctx.settings("big")
    conveyor = ConveyorClient(ctx.client, settings)
    declaration = noop_pipeline(unique("bench-big"), stages, actions, run_orders=2)
    ctx.log(f"big: {stages} stages x {actions} actions, {repeats} repetition(s) per side")
    run = {
        "conveyor": functools.partial(timed_conveyor, ctx, conveyor, declaration),
        "baseline": functools.partial(timed_baseline, ctx, settings, declaration),
    }
    async with build_bench_worker(ctx.client, settings):
        raw = await _interleaved(ctx, run, repeats, warmup=False)
    case = summarize_case(raw, "wall_s", stages=stages, actions_per_stage=actions)
    r = case["ratios"]
    notes = [
        f"{stages}x{actions}: history events ratio {r.get('history_events', 0):.2f}, "
        f"history bytes ratio {r.get('history_bytes', 0):.2f}, payload bytes ratio {r.get('payload_bytes', 0):.2f}"
    ]
    return {"cases": {f"{stages}x{actions}": case}, "ratio": case["ratio"], "repeat": repeats, "notes": notes}


# --- scenario 5: recovery from a SIGKILLed worker ---------------------------------------------


def recovery_pipeline(name: str, stages: int, side_file: Path, sleep_s: float) -> dict[str, Any]:
    """Commands actions that record their start and end in a shared file, with a pause between."""

    def commands(stage: str, action: str) -> list[str]:
        tag = f"{stage}/{action}"
        return [f'echo "start {tag} $$" >> {side_file}', f"sleep {sleep_s}", f'echo "done {tag} $$" >> {side_file}']

    return {
        "name": name,
        "executionMode": "PARALLEL",
        "conveyor": {"heartbeatTimeoutSeconds": 2},
        "stages": [
            {
                "name": f"S{s + 1}",
                "actions": [
                    {"name": f"A{a + 1}", "provider": "Commands", "commands": commands(f"S{s + 1}", f"A{a + 1}")}
                    for a in range(2)
                ],
            }
            for s in range(stages)
        ],
    }


def start_worker_process(settings: Settings, kind: str, log: Path) -> subprocess.Popen[bytes]:
    """A real worker process: `conveyor worker` as operators run it (kind "conveyor"), or the bench
    worker (the same registration plus the baseline's, `python -m bench.worker`) for any other kind."""
    env = os.environ | {
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "CONVEYOR_TASK_QUEUE": settings.task_queue,
        "CONVEYOR_DATA_DIR": str(settings.data_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    module = "conveyor" if kind == "conveyor" else "bench.worker"
    args = [sys.executable, "-m", module] + (["worker"] if kind == "conveyor" else [])
    return subprocess.Popen(args, env=env, cwd=REPO_ROOT, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _wait_for_line(path: Path, prefix: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not any(line.startswith(prefix) for line in read_lines(path)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"'{prefix}' never appeared in {path}")
        await asyncio.sleep(0.02)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _recovery_run(ctx: BenchContext, side: str, stages: int, workdir: Path) -> dict[str, Any]:
    """Kill the worker (SIGKILL) as the middle stage's first action starts, start a new worker, and
    time the rest; then count, from the side-effect file, which actions ran more than once."""
    settings = ctx.settings(f"recovery-{side}")
    side_file = workdir / f"{side}-{uuid.uuid4().hex[:6]}.log"
    declaration = recovery_pipeline(unique("bench-recovery"), stages, side_file, sleep_s=0.5)
    kill_stage = f"S{stages // 2 + 1}"
    first = start_worker_process(settings, side, workdir / f"{side}-worker1.log")
    try:
        handle = await (
            _start_conveyor(ConveyorClient(ctx.client, settings), declaration)
            if side == "conveyor"
            else _start_baseline(ctx.client, settings, declaration)
        )
        await _wait_for_line(side_file, f"start {kill_stage}/", 60)
        first.send_signal(signal.SIGKILL)
        killed_at = time.perf_counter()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    at_kill = read_lines(side_file)
    restarted_at = time.perf_counter()
    second = start_worker_process(settings, side, workdir / f"{side}-worker2.log")
    try:
        result = await asyncio.wait_for(handle.result(), 120)
        finished_at = time.perf_counter()
        if isinstance(result, ExecutionState) and result.status != ExecutionStatus.SUCCEEDED:
            raise RuntimeError(f"Conveyor execution {handle.id} ended {result.status}: {result.status_summary}")
    finally:
        await asyncio.to_thread(_stop, second)
    expected = {f"{s['name']}/{a['name']}" for s in declaration["stages"] for a in s["actions"]}
    times = (killed_at, restarted_at, finished_at)
    counts = _recovery_counts(at_kill, read_lines(side_file), expected, times, kill_stage)
    stage_ids = [f"{handle.id}/{s['name']}" for s in declaration["stages"]]
    return counts | await _timeouts(ctx.client, [handle.id, *stage_ids])


async def _timeouts(client: Client, workflow_ids: list[str]) -> dict[str, Any]:
    """What the lost worker cost, from history: workflow tasks that timed out waiting on its sticky
    queue (the server gives up on it after the worker's sticky schedule-to-start timeout, 10 s by
    default) and activities that needed another attempt (after their heartbeat timeout)."""
    sticky_timeouts, retried_activities = 0, 0
    for workflow_id in workflow_ids:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        for event in history.events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                sticky_timeouts += 1
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                retried_activities += event.activity_task_started_event_attributes.attempt > 1
    return {"workflow_task_timeouts": sticky_timeouts, "activities_retried": retried_activities}


def _recovery_counts(
    at_kill: list[str],
    final: list[str],
    expected: set[str],
    times: tuple[float, float, float],
    kill_stage: str,
) -> dict[str, Any]:
    killed, restarted, finished = times
    done_at_kill = {line.split()[1] for line in at_kill if line.startswith("done")}
    started_at_kill = {line.split()[1] for line in at_kill if line.startswith("start")}
    starts = Counter(line.split()[1] for line in final if line.startswith("start"))
    in_flight = started_at_kill - done_at_kill
    return {
        "restart_to_completion_s": finished - restarted,
        "kill_to_completion_s": finished - killed,
        "kill_stage": kill_stage,
        "completed_before_kill": sorted(done_at_kill),
        "completed_actions_run_twice": sum(1 for a in done_at_kill if starts[a] > 1),
        "in_flight_at_kill": sorted(in_flight),
        "in_flight_actions_run_again": sum(1 for a in in_flight if starts[a] > 1),
        "actions_never_finished": sorted(expected - {line.split()[1] for line in final if line.startswith("done")}),
        "starts": dict(starts),
    }


async def recovery(ctx: BenchContext) -> dict[str, Any]:
    """A 5-stage pipeline (2 Commands actions per stage) on real worker processes, one SIGKILLed."""
    stages = 3 if ctx.tiny else 5
    repeats = ctx.repeats(1)
    workdir = ctx.data_dir / "recovery"
    workdir.mkdir(parents=True, exist_ok=True)
    raw: Raw = {side: {} for side in SIDES}
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for rep in range(repeats):
        for side in SIDES if rep % 2 == 0 else tuple(reversed(SIDES)):
            ctx.log(f"recovery {side}: repetition {rep + 1}/{repeats}")
            result = await _recovery_run(ctx, side, stages, workdir)
            runs[side].append(result)
            for metric in ("restart_to_completion_s", "kill_to_completion_s"):
                raw[side].setdefault(metric, []).append(result[metric])
    case = summarize_case(raw, "restart_to_completion_s", runs=runs)
    twice = sum(r["completed_actions_run_twice"] for r in runs["conveyor"])
    again = sum(r["in_flight_actions_run_again"] for r in runs["conveyor"])
    notes = [
        f"Conveyor: {twice} completed action(s) ran twice; {again} action(s) in flight at the kill ran again "
        f"(kill as stage {runs['conveyor'][0]['kill_stage']} started; heartbeat timeout 2 s)"
    ]
    return {
        "cases": {f"{stages}-stages": case},
        "ratio": case["ratio"],
        "completed_actions_run_twice": twice,
        "in_flight_actions_run_again": again,
        "baseline_completed_actions_run_twice": sum(r["completed_actions_run_twice"] for r in runs["baseline"]),
        "repeat": repeats,
        "notes": notes,
    }


# --- scenario 2: throughput --------------------------------------------------------------------


async def settle(ctx: BenchContext, *, quiet_cpu_s: float = 0.05, timeout: float = 60.0) -> float:
    """Wait until the server is idle (under `quiet_cpu_s` of CPU in a second): after a burst it keeps
    working a while (visibility and transfer queues), which would slow whichever side runs next."""
    meter, began = CpuMeter(ctx.server_pid), time.perf_counter()
    while time.perf_counter() - began < timeout and not ctx.tiny:
        before = meter.snapshot()[1]
        await asyncio.sleep(1.0)
        if meter.snapshot()[1] - before < quiet_cpu_s:
            break
    return time.perf_counter() - began


async def _burst(
    ctx: BenchContext, start: Callable[[], Awaitable[WorkflowHandle[Any, Any]]], count: int
) -> dict[str, Any]:
    """Start `count` executions at once (on an idle server) and wait for all: wall time, each one's
    latency, CPU used."""
    await settle(ctx)
    meter = CpuMeter(ctx.server_pid)
    cpu0 = meter.snapshot()
    began = time.perf_counter()

    async def one() -> float:
        handle = await start()
        await handle.result()
        return time.perf_counter() - began

    latencies = await asyncio.gather(*(one() for _ in range(count)))
    wall = time.perf_counter() - began
    cpu1 = meter.snapshot()
    return {
        "wall_s": wall,
        "latencies": list(latencies),
        "worker_cpu_s": cpu1[0] - cpu0[0],
        "server_cpu_s": cpu1[1] - cpu0[1],
    }


async def throughput(ctx: BenchContext) -> dict[str, Any]:
    """Many concurrent executions of a 3-stage pipeline (2 parallel Noop actions per stage), PARALLEL
    mode, one in-process worker with the default concurrency limits: executions/s and actions/s."""
    count = ctx.scaled(50, tiny=4)
    stages, actions = 3, 2
    repeats = ctx.repeats(1)
    settings = ctx.settings("throughput")
    conveyor = ConveyorClient(ctx.client, settings)
    declaration = noop_pipeline(unique("bench-throughput"), stages, actions, mode="PARALLEL")
    starts = {
        "conveyor": functools.partial(_start_conveyor, conveyor, declaration),
        "baseline": functools.partial(_start_baseline, ctx.client, settings, declaration),
    }
    raw: Raw = {side: {} for side in SIDES}
    async with build_bench_worker(ctx.client, settings):
        for rep in range(repeats):
            for side in SIDES if rep % 2 == 0 else tuple(reversed(SIDES)):
                ctx.log(f"throughput {side}: {count} concurrent executions")
                result = await _burst(ctx, starts[side], count)
                metrics = raw[side]
                metrics.setdefault("wall_s", []).append(result["wall_s"])
                metrics.setdefault("executions_per_s", []).append(count / result["wall_s"])
                metrics.setdefault("actions_per_s", []).append(count * stages * actions / result["wall_s"])
                metrics.setdefault("execution_latency_s", []).extend(result["latencies"])
                metrics.setdefault("worker_cpu_s", []).append(result["worker_cpu_s"])
                metrics.setdefault("server_cpu_s", []).append(result["server_cpu_s"])
    case = summarize_case(raw, "wall_s", executions=count, stages=stages, actions_per_stage=actions)
    c, b = case["conveyor"], case["baseline"]
    notes = [
        f"{count} concurrent: {c['executions_per_s']['median']:.1f} vs {b['executions_per_s']['median']:.1f} "
        f"executions/s, {c['actions_per_s']['median']:.1f} vs {b['actions_per_s']['median']:.1f} actions/s; "
        f"CPU s (worker process + server) {c['worker_cpu_s']['median']:.1f}+{c['server_cpu_s']['median']:.1f} "
        f"vs {b['worker_cpu_s']['median']:.1f}+{b['server_cpu_s']['median']:.1f}"
    ]
    return {"cases": {f"{count}x{stages}-stages": case}, "ratio": case["ratio"], "repeat": repeats, "notes": notes}


# --- scenario 3: parked approvals --------------------------------------------------------------


def approval_pipeline(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "executionMode": "PARALLEL",
        "stages": [
            {"name": "Gate", "actions": [{"name": "Approve", "provider": "Manual"}]},
            {"name": "Next", "actions": [{"name": "After", "provider": "Noop"}]},
        ],
    }


async def _gather_limited(coroutines: list[Awaitable[Any]], limit: int = 50) -> list[Any]:
    """Many client calls, at most `limit` in flight: a burst of thousands would only measure queueing."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coroutine: Awaitable[Any]) -> Any:
        async with semaphore:
            return await coroutine

    return await asyncio.gather(*(one(c) for c in coroutines))


async def _parked(client: Client, gate_id: str) -> bool:
    """Waiting for its approval: the stage workflow has started the approval's timeout timer."""
    try:
        history = await client.get_workflow_handle(gate_id).fetch_history()
    except Exception:  # noqa: BLE001 - not started yet
        return False
    return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)


async def _wait_parked(client: Client, gate_ids: list[str], timeout: float) -> float:
    began = time.perf_counter()
    waiting = list(gate_ids)
    while waiting:
        if time.perf_counter() - began > timeout:
            raise TimeoutError(f"{len(waiting)} executions never reached their approval")
        flags = await _gather_limited([_parked(client, g) for g in waiting])
        waiting = [g for g, parked in zip(waiting, flags, strict=True) if not parked]
        if waiting:
            await asyncio.sleep(0.5)
    return time.perf_counter() - began


async def _worker_ready(client: Client, task_queue: str, timeout: float = 60) -> None:
    """A worker process is ready once it polls the task queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        if response.pollers:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no worker polled {task_queue}")


async def _approve(ctx: BenchContext, side: str, workflow_id: str, token: str | None) -> float:
    """Send one approval (an update, answered once recorded); returns the epoch time it was sent."""
    sent = time.time()
    gate = ctx.client.get_workflow_handle(f"{workflow_id}/Gate")
    if side == "conveyor":
        decision = ApprovalDecision(token=token or "", action_name="Approve", summary="bench", by="bench")
        await gate.execute_update("approve", decision, result_type=ApprovalResult)
    else:
        await gate.execute_update("approve", BaselineApproval(action_name="Approve", by="bench"), result_type=str)
    return sent


async def _next_action_started(client: Client, workflow_id: str) -> float:
    """Epoch seconds at which the action after the approval started (server time, same machine)."""
    history = await client.get_workflow_handle(f"{workflow_id}/Next").fetch_history()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            return event.event_time.ToMilliseconds() / 1000
    raise RuntimeError(f"no action started in {workflow_id}/Next")


async def _approvals_side(ctx: BenchContext, side: str, count: int, rate: float) -> dict[str, Any]:
    """Park `count` executions at an approval on a worker process of their own, measure it, then
    approve them at `rate` per second and time each approval to its next action starting."""
    settings = ctx.settings(f"approvals-{side}")
    conveyor = ConveyorClient(ctx.client, settings)
    declaration = approval_pipeline(unique("bench-approvals"))
    process = start_worker_process(settings, "bench", ctx.data_dir / f"approvals-{side}-worker.log")
    try:
        worker = psutil.Process(process.pid)
        await _worker_ready(ctx.client, settings.task_queue)
        await asyncio.sleep(1.0)
        rss_idle = worker.memory_info().rss
        handles = await _gather_limited(
            [
                _start_conveyor(conveyor, declaration)
                if side == "conveyor"
                else _start_baseline(ctx.client, settings, declaration)
                for _ in range(count)
            ]
        )
        ids = [h.id for h in handles]
        park_s = await _wait_parked(ctx.client, [f"{i}/Gate" for i in ids], timeout=60 + count / 5)
        await asyncio.sleep(1.0)
        rss_parked = worker.memory_info().rss
        events = [(await history_stats(ctx.client, [i, f"{i}/Gate"]))["history_events"] for i in ids[: min(5, count)]]
        tokens: list[str | None] = [None] * count
        if side == "conveyor":
            states = await _gather_limited(
                [ctx.client.get_workflow_handle(f"{i}/Gate").query("state", result_type=StageState) for i in ids]
            )
            tokens = [s.actions[0].token for s in states]
        began = time.perf_counter()
        tasks = []
        for n, (workflow_id, token) in enumerate(zip(ids, tokens, strict=True)):
            await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(_approve(ctx, side, workflow_id, token)))
        sent = await asyncio.gather(*tasks)
        approving_s = time.perf_counter() - began
        await _gather_limited([h.result() for h in handles])
        started = await _gather_limited([_next_action_started(ctx.client, i) for i in ids])
    finally:
        await asyncio.to_thread(_stop, process)
    return {
        "latencies": [b - a for a, b in zip(sent, started, strict=True)],
        "rss_idle_mb": rss_idle / 2**20,
        "rss_parked_mb": rss_parked / 2**20,
        "rss_per_parked_kb": (rss_parked - rss_idle) / count / 1024,
        "history_events_parked": statistics.median(events),
        "park_s": park_s,
        "approval_rate_achieved": count / approving_s if approving_s else None,
    }


async def approvals(ctx: BenchContext) -> dict[str, Any]:
    """Executions parked at a manual approval (PARALLEL mode), each side on a worker process of its
    own: the worker's memory while they wait, then approvals at a steady rate."""
    count = ctx.scaled(100, tiny=3)
    rate = ctx.approval_rate
    repeats = ctx.repeats(1)
    raw: Raw = {side: {} for side in SIDES}
    for rep in range(repeats):
        for side in SIDES if rep % 2 == 0 else tuple(reversed(SIDES)):
            ctx.log(f"approvals {side}: {count} parked executions, approvals at {rate:.0f}/s")
            result = await _approvals_side(ctx, side, count, rate)
            raw[side].setdefault("approval_to_next_action_s", []).extend(result.pop("latencies"))
            for metric, value in result.items():
                if value is not None:
                    raw[side].setdefault(metric, []).append(float(value))
    case = summarize_case(raw, "approval_to_next_action_s", executions=count, rate_per_s=rate)
    c, b = case["conveyor"], case["baseline"]

    def p50_p95(side: dict[str, Any]) -> str:
        latency = side["approval_to_next_action_s"]
        return f"{latency['median'] * 1000:.0f}/{latency['p95'] * 1000:.0f} ms"

    notes = [
        f"{count} parked: worker RSS {c['rss_parked_mb']['median']:.0f} MB vs {b['rss_parked_mb']['median']:.0f} MB "
        f"({c['rss_per_parked_kb']['median']:.0f} vs {b['rss_per_parked_kb']['median']:.0f} KB per parked execution), "
        f"history events while parked {c['history_events_parked']['median']:.0f} vs "
        f"{b['history_events_parked']['median']:.0f}; approval to next action p50/p95 {p50_p95(c)} vs {p50_p95(b)}"
    ]
    return {"cases": {f"{count}-parked": case}, "ratio": case["ratio"], "repeat": repeats, "notes": notes}


SCENARIOS: dict[str, Callable[[BenchContext], Awaitable[dict[str, Any]]]] = {
    "overhead": overhead,
    "big": big,
    "recovery": recovery,
    "throughput": throughput,
    "approvals": approvals,
    "handoff": handoff,
    "codebuild": codebuild,
    "invoke": invoke,
    "events": events,
    "console": console,
}
