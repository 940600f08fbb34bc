"""One worker for both sides of a benchmark: Conveyor's workflows and activities plus the baseline's.

`conveyor.worker.build_worker` fixes `workflows` and `activities`, so extra registrations cannot be
passed through its `**options`; this builds the `Worker` itself with the same options (activity
executor, heartbeat throttles). Keep `worker_options` in step with `build_worker`.

`python -m bench.worker` runs it as a process, configured like `conveyor worker` (TEMPORAL_ADDRESS,
CONVEYOR_TASK_QUEUE, CONVEYOR_DATA_DIR): the recovery scenario SIGKILLs it on the baseline side.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from bench.baseline import BaselineExecution, BaselineStage, baseline_commands, baseline_noop
from conveyor.settings import Settings
from conveyor.worker import WORKFLOWS, activities_for


def worker_options() -> dict[str, Any]:
    """The options `conveyor.worker.build_worker` passes, so both sides run on identical settings."""
    return {
        "activity_executor": concurrent.futures.ThreadPoolExecutor(max_workers=8),
        "max_heartbeat_throttle_interval": timedelta(seconds=2),
        "default_heartbeat_throttle_interval": timedelta(seconds=2),
    }


def build_bench_worker(client: Client, settings: Settings, **options: Any) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[*WORKFLOWS, BaselineExecution, BaselineStage],
        activities=[*activities_for(settings), baseline_noop, baseline_commands],
        **(worker_options() | options),
    )


async def _main() -> None:
    from conveyor.connection import connect

    settings = Settings.from_env()
    assert settings.temporal_address, "TEMPORAL_ADDRESS must be set"
    client = await connect(settings.temporal_address, settings)
    await build_bench_worker(client, settings).run()


if __name__ == "__main__":
    asyncio.run(_main())
