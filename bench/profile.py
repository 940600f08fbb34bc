"""`python -m bench.profile`: run one side of the overhead scenario in a loop, for a sampling profiler.

    py-spy record --threads --idle -f raw -o conveyor.txt -- python -m bench.profile --side conveyor
    py-spy record --threads --idle -f raw -o baseline.txt -- python -m bench.profile --side baseline

(--idle keeps the event loop's waits in the profile; drop it to see CPU only.) The worker runs in this
process, as in `python -m bench`, so the profile holds the worker, the client and the workflow threads.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from bench.scenarios import BenchContext, noop_pipeline, timed_baseline, timed_conveyor, unique
from bench.worker import build_bench_worker
from conveyor.client import ConveyorClient
from conveyor.devserver import EmbeddedServer
from conveyor.settings import Settings


async def loop(side: str, executions: int, mode: str, stages: int, actions: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="conveyor-profile-"))
    server = EmbeddedServer(Settings(data_dir=data_dir), headless=True)
    try:
        client = await server.start()
        ctx = BenchContext(client=client, address=server.address, data_dir=data_dir, server_pid=None)
        settings = ctx.settings("profile")
        conveyor = ConveyorClient(client, settings)
        declaration = noop_pipeline(unique("bench-profile"), stages, actions, run_orders=actions, mode=mode)
        async with build_bench_worker(client, settings):
            started = time.perf_counter()
            for _ in range(executions):
                if side == "conveyor":
                    await timed_conveyor(ctx, conveyor, declaration)
                else:
                    await timed_baseline(ctx, settings, declaration)
            elapsed = time.perf_counter() - started
        print(f"{side} {mode}: {executions} executions in {elapsed:.2f} s ({elapsed / executions:.3f} s each)")
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(0.1)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--side", choices=("conveyor", "baseline"), default="conveyor")
    parser.add_argument("--executions", type=int, default=20)
    parser.add_argument("--mode", default="SUPERSEDED")
    parser.add_argument("--stages", type=int, default=5)
    parser.add_argument("--actions", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(loop(args.side, args.executions, args.mode, args.stages, args.actions))


if __name__ == "__main__":
    main()
