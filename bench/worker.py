"""One worker for both sides of a benchmark: Conveyor's own worker (`conveyor.worker.build_worker`,
so the same options) with the baseline's workflows and activities registered beside Conveyor's.

`python -m bench.worker` runs it as a process, configured like `conveyor worker` (TEMPORAL_ADDRESS,
CONVEYOR_TASK_QUEUE, CONVEYOR_DATA_DIR): the recovery scenario SIGKILLs it on the baseline side.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from bench.baseline import BaselineExecution, BaselineStage, baseline_commands, baseline_noop
from conveyor.settings import Settings
from conveyor.worker import build_worker


def build_bench_worker(client: Client, settings: Settings, **options: Any) -> Worker:
    """Conveyor's own worker (same options) with the baseline's workflows and activities beside it."""
    return build_worker(
        client,
        settings,
        extra_workflows=[BaselineExecution, BaselineStage],
        extra_activities=[baseline_noop, baseline_commands],
        **options,
    )


async def _main() -> None:
    from conveyor.connection import connect

    settings = Settings.from_env()
    assert settings.temporal_address, "TEMPORAL_ADDRESS must be set"
    client = await connect(settings.temporal_address, settings)
    await build_bench_worker(client, settings).run()


if __name__ == "__main__":
    asyncio.run(_main())
