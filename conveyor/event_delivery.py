"""What the delivery activity reports back to the workflow that handed it a batch (pure: the workflows import it)."""

from __future__ import annotations

from pydantic import Field

from conveyor.model import CamelModel

SINK_ATTEMPTS = 3  # a sink's tries of one batch inside the activity, before the batch is dead-lettered for it
SINK_BACKOFF_SECONDS = (0.2, 0.5)  # between those tries: short, the pipeline's events wait behind them


class DeadLettered(CamelModel):
    sink: str
    error: str
    where: str  # the dead letter's path or s3:// URL


class DeliveryReport(CamelModel):
    recorded: str  # where the batch is kept in the record
    delivered: list[str] = Field(default_factory=list)  # sinks that took it
    dead_lettered: list[DeadLettered] = Field(default_factory=list)
