"""History for the console's benchmarks: N real executions of one small pipeline, started concurrently, and the
time of the execution history's pages over them (conveyor/console/history.py).

    python -m bench.console_data --count 1000           # its own embedded server and worker; prints JSON
    python -m bench.console_data --count 200 --copies 9800   # 10,000 in visibility: 200 run, 9,800 copied

`fill_history` is what the console's page benchmark calls to fill its server: the pipeline is two stages, `Build`
(a Noop) and `Deploy` (a Noop behind a VariableCheck beforeEntry condition), PARALLEL, retry window 0, so nothing
runs a process and every execution closes: every `fail_every`-th one fails at Deploy's condition (status Failed,
succeeded in Build only) and every other one is a Webhook trigger. It has no source action (a Git source would
clone, an S3 or ECR one needs AWS), so PipelineSourceRevisions stays empty: a source revision filter is the same
keyword-list equality as "succeeded in", which is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowFailureError

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.connection import connect
from conveyor.console.history import HistoryQuery, execution_history
from conveyor.devserver import EmbeddedServer
from conveyor.interface import WorkflowType
from conveyor.model import ExecutionState, ExecutionStatus, Trigger, TriggerType
from conveyor.settings import Settings
from conveyor.visibility import ExecutionFilter, executions_query
from conveyor.worker import build_worker

DEFAULT_CONCURRENCY = 48  # executions in flight at once (started, not yet finished)


def console_pipeline(name: str) -> dict[str, Any]:
    """Two Noop stages; Deploy's beforeEntry condition fails an execution whose Outcome variable is not ok."""
    return {
        "name": name,
        "executionMode": "PARALLEL",
        "conveyor": {"retryWindowMinutes": 0},
        "variables": [{"name": "Outcome", "defaultValue": "ok"}],
        "stages": [
            {"name": "Build", "actions": [{"name": "Compile", "provider": "Noop"}]},
            {
                "name": "Deploy",
                "beforeEntry": {
                    "conditions": [
                        {
                            "result": "FAIL",
                            "rules": [
                                {
                                    "name": "Outcome",
                                    "ruleTypeId": {"provider": "VariableCheck"},
                                    "configuration": {
                                        "Variable": "#{variables.Outcome}",
                                        "Operator": "EQ",
                                        "Value": "ok",
                                    },
                                }
                            ],
                        }
                    ]
                },
                "actions": [{"name": "Ship", "provider": "Noop"}],
            },
        ],
    }


@dataclass
class FilledHistory:
    pipeline: str
    refs: list[ExecutionRef]
    failed: int
    webhooks: int
    seconds: float
    statuses: dict[str, int] = field(default_factory=dict)

    @property
    def per_second(self) -> float:
        return len(self.refs) / self.seconds if self.seconds else 0.0


async def fill_history(
    conveyor: ConveyorClient,
    count: int,
    *,
    pipeline: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    fail_every: int = 10,
    progress: Any = None,
) -> FilledHistory:
    """Run `count` executions of `console_pipeline` (a worker must be polling `conveyor.settings.task_queue`), at
    most `concurrency` in flight, each to its end. `progress(done, count)` is called every 500 executions."""
    name = pipeline or f"console-{uuid.uuid4().hex[:6]}"
    declaration = console_pipeline(name)
    slots = asyncio.Semaphore(concurrency)
    refs: list[ExecutionRef] = []
    statuses: dict[str, int] = {}
    began = time.perf_counter()

    async def one(index: int) -> None:
        fails = fail_every > 0 and index % fail_every == fail_every - 1
        trigger = Trigger(trigger_type=TriggerType.WEBHOOK if index % 2 else TriggerType.START_PIPELINE_EXECUTION)
        async with slots:
            ref, _ = await conveyor.start(
                declaration, variables={"Outcome": "fail" if fails else "ok"}, trigger=trigger
            )
            # The workflow's result (a long poll), not `wait`'s state queries: those would load the worker.
            handle = conveyor.temporal.get_workflow_handle(ref.workflow_id, result_type=ExecutionState)
            try:
                status = (await handle.result()).status.value
            except WorkflowFailureError:  # a failed execution's workflow fails with it
                status = ExecutionStatus.FAILED.value
        refs.append(ref)
        statuses[status] = statuses.get(status, 0) + 1
        if progress is not None and len(refs) % 500 == 0:
            progress(len(refs), count)

    await asyncio.gather(*(one(index) for index in range(count)))
    return FilledHistory(
        pipeline=name,
        refs=refs,
        failed=statuses.get(ExecutionStatus.FAILED.value, 0),
        webhooks=count // 2,
        seconds=time.perf_counter() - began,
        statuses=statuses,
    )


async def copy_history(
    conveyor: ConveyorClient, filled: FilledHistory, count: int, *, concurrency: int = 32, progress: Any = None
) -> float:
    """`count` more closed executions of `filled.pipeline` in visibility only, fast (no worker runs them): each a
    PipelineExecution workflow started on a task queue nobody polls, with the memo and search attributes of one of
    the real executions (in turn), then terminated. The history page reads visibility only (search attributes and
    memo), so they cost it what real ones do; `conveyor status` on one finds no state. Returns the seconds taken."""
    templates = []
    for ref in filled.refs[: min(len(filled.refs), 20)]:
        description = await conveyor.temporal.get_workflow_handle(ref.workflow_id).describe()
        templates.append((await description.memo(), description.typed_search_attributes))
    slots = asyncio.Semaphore(concurrency)
    done = 0
    began = time.perf_counter()

    async def one(index: int) -> None:
        nonlocal done
        memo, attributes = templates[index % len(templates)]
        async with slots:
            handle = await conveyor.temporal.start_workflow(
                WorkflowType.EXECUTION.value,
                id=f"{filled.pipeline}/copy-{uuid.uuid4()}",
                task_queue=f"{conveyor.settings.task_queue}-visibility-only",
                memo=memo,
                search_attributes=attributes,
            )
            await handle.terminate(reason="a visibility-only copy for the console benchmark")
        done += 1
        if progress is not None and done % 1000 == 0:
            progress(done, count)

    await asyncio.gather(*(one(index) for index in range(count)))
    return time.perf_counter() - began


async def listed(conveyor: ConveyorClient, pipeline: str, count: int, timeout: float = 120) -> None:
    """Until visibility lists all `count` executions (it is eventually consistent)."""
    query = executions_query(ExecutionFilter(pipeline=pipeline))
    deadline = time.perf_counter() + timeout
    while (await conveyor.temporal.count_workflows(query)).count < count:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"visibility lists fewer than {count} executions of {pipeline}")
        await asyncio.sleep(0.5)


PAGES: dict[str, dict[str, Any]] = {
    "first page": {},
    "status=Failed": {"status": "Failed"},
    "trigger=Webhook": {"trigger": "Webhook"},
    "succeeded in Deploy": {"succeeded_in": "Deploy"},
    "status=Failed, second page": {"status": "Failed", "second": True},
    "first page, 100 rows": {"page_size": 100},
}


async def time_pages(conveyor: ConveyorClient, pipeline: str, *, repeat: int = 11) -> dict[str, dict[str, float]]:
    """Milliseconds per history page (median, p95 over `repeat`, after one warm-up), per PAGES case."""
    results: dict[str, dict[str, float]] = {}
    for label, case in PAGES.items():
        options = {key: value for key, value in case.items() if key != "second"}
        query = HistoryQuery.model_validate({"page_size": 25} | options)
        if case.get("second"):
            first = await execution_history(conveyor, pipeline, query)
            query = query.model_copy(update={"page_token": first.next_token})
        samples = []
        for attempt in range(repeat + 1):
            began = time.perf_counter()
            page = await execution_history(conveyor, pipeline, query)
            if attempt:
                samples.append((time.perf_counter() - began) * 1000)
        ordered = sorted(samples)
        results[label] = {
            "median_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
            "rows": len(page.rows),
        }
    return results


async def run(count: int, copies: int, concurrency: int, repeat: int) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="conveyor-console-bench-"))
    server = EmbeddedServer(Settings(data_dir=data_dir), headless=True)
    try:
        await server.start()
        settings = Settings(data_dir=data_dir, temporal_address=server.address, task_queue="console-bench")
        temporal = await connect(server.address, settings)
        conveyor = ConveyorClient(temporal, settings)
        async with build_worker(temporal, settings):

            def progress(done: int, total: int) -> None:
                print(f"[console_data] {done}/{total} executions", file=sys.stderr, flush=True)

            filled = await fill_history(conveyor, count, concurrency=concurrency, progress=progress)
        copied = await copy_history(conveyor, filled, copies, progress=progress) if copies else 0.0
        await listed(conveyor, filled.pipeline, count + copies)
        pages = await time_pages(conveyor, filled.pipeline, repeat=repeat)
        return {
            "executions": count,
            "visibility_only_copies": copies,
            "copy_seconds": round(copied, 1),
            "fill_seconds": round(filled.seconds, 1),
            "executions_per_second": round(filled.per_second, 1),
            "statuses": filled.statuses,
            "pages": pages,
        }
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(0.1)  # let the SDK's connection close before the loop does (sdk-python#300)
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console_data", description=__doc__)
    parser.add_argument("--count", type=int, default=1000, help="executions to run (default 1000)")
    parser.add_argument(
        "--copies", type=int, default=0, help="closed visibility-only copies of them to add (copy_history)"
    )
    parser.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="executions in flight at once")
    parser.add_argument("--repeat", type=int, default=11, help="timed calls per page (default 11)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.count, args.copies, args.concurrency, args.repeat))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
