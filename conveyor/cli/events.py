"""`conveyor events`: a pipeline's state-change events, read back from the record in the store (conveyor/stores/
event_record.py), in order per execution; `--follow` keeps printing new ones as the workers record them."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

from conveyor.cli.common import OutputOption, UsageError, app, check_output, run_async, settings
from conveyor.client import ConveyorError
from conveyor.events import EventScope, EventState, PipelineEvent
from conveyor.stores.event_record import recorded_events
from conveyor.stores.records import RecordStoreError, record_backend

FOLLOW_INTERVAL = 0.5
# A pipeline event after which an execution sends nothing more (a FAILED one may still be retried: RESUMED).
_FINAL = {EventState.SUCCEEDED, EventState.STOPPED, EventState.SUPERSEDED, EventState.CANCELED}


@app.command(rich_help_panel="Executions")
def events(
    pipeline: Annotated[str, typer.Argument(help="The pipeline's name")],
    execution: Annotated[str | None, typer.Option("--execution", "-e", help="Only this execution's events")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events (with --execution: until it ends)")
    ] = False,
    output: OutputOption = "table",
) -> None:
    """Print a pipeline's state-change events from the record in the store (the data directory or
    CONVEYOR_ARTIFACT_STORE); json prints one CodePipeline-shaped event per line."""
    check_output(output)
    run_async(_events(pipeline, execution, follow, output))


async def _events(pipeline: str, execution: str | None, follow: bool, output: str) -> int:
    if "/" in pipeline:
        raise UsageError(f"PIPELINE '{pipeline}': give the pipeline's name (an execution with --execution ID)")
    backend = record_backend(settings())
    printed: set[str] = set()
    while True:
        try:
            found = await asyncio.to_thread(recorded_events, backend, pipeline, execution)
        except RecordStoreError as exc:
            raise ConveyorError(f"cannot read the events of {pipeline}: {exc}") from None
        ended = False
        for event in found:
            if event.id not in printed:
                printed.add(event.id)
                _print(event, output)
            ended = ended or (event.scope == EventScope.PIPELINE and event.detail.state in _FINAL)
        if not follow:
            if not found:
                where = backend.where(f"events/{pipeline}/" + (f"{execution}/" if execution else ""))
                print(
                    f"no events recorded for {pipeline}{f' {execution}' if execution else ''} in {where}",
                    file=sys.stderr,
                )
            return 0
        if execution is not None and ended:
            return 0
        await asyncio.sleep(FOLLOW_INTERVAL)


def _print(event: PipelineEvent, output: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(event.wire()) + "\n")
    else:
        detail = event.detail
        where = "/".join(part for part in (detail.stage, detail.action) if part) or "-"
        parts = [
            event.time.isoformat(timespec="seconds"),
            detail.execution_id,
            event.scope.value,
            where,
            detail.state.value,
        ]
        if detail.summary:
            parts.append(detail.summary)
        sys.stdout.write("  ".join(parts) + "\n")
    sys.stdout.flush()
