"""CodePipeline-shaped state-change events: what leaves an execution when a pipeline, stage or action changes state.

The shared vocabulary of issue 18 (the workflows' outbox produces `PipelineEvent`s in `EventBatch`es; the delivery
activity hands them to the configured sinks; `conveyor events` reads them back from the store). Shaped like the
EventBridge events CodePipeline sends (reference: detail-type "CodePipeline Pipeline|Stage|Action Execution State
Change", detail {pipeline, version, execution-id, stage, action, state, type, execution-trigger}), with `source`
"conveyor" so a rule written for CodePipeline's tells them apart. Pure: no I/O (the workflows import it).

Delivery is at least once: every event has a stable `id` (the execution and the event's sequence number in it), so
a receiver de-duplicates by id after a crashed worker re-sends a batch.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from conveyor.camel import CamelModel
from conveyor.event_sinks_config import SinkConfig

EVENT_SOURCE = "conveyor"
_EVENT_NAMESPACE = uuid.UUID("5c0b6a8e-2f4d-4a51-9b7e-3d1c8e2f6a90")


class EventScope(StrEnum):
    PIPELINE = "Pipeline"
    STAGE = "Stage"
    ACTION = "Action"

    @property
    def detail_type(self) -> str:
        return f"CodePipeline {self.value} Execution State Change"


class EventState(StrEnum):
    """CodePipeline's event states (pipeline, stage and action ones share names)."""

    STARTED = "STARTED"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    RESUMED = "RESUMED"
    CANCELED = "CANCELED"
    SUPERSEDED = "SUPERSEDED"
    ABANDONED = "ABANDONED"


class ActionType(CamelModel):
    owner: str
    category: str
    provider: str
    version: str = "1"


class ExecutionTrigger(CamelModel):
    trigger_type: str
    trigger_detail: str | None = None


class EventDetail(CamelModel):
    """`detail` of the event; serialized with CodePipeline's kebab-case keys by `PipelineEvent.wire()`."""

    pipeline: str
    version: int
    execution_id: str
    state: EventState
    stage: str | None = None
    action: str | None = None
    type: ActionType | None = None  # actions only
    execution_trigger: ExecutionTrigger | None = None  # pipeline events
    summary: str | None = None  # Conveyor's: why (a failure's message, a stop's reason)


class PipelineEvent(CamelModel):
    """One state change, with a stable id: the execution and the event's sequence number in it."""

    id: str
    sequence: int  # 1, 2, ... within the execution (a stage child's events continue the execution's numbering
    # in a range of their own: see `event_id`)
    scope: EventScope
    time: datetime
    detail: EventDetail
    account: str | None = None  # set by a sink that knows it (EventBridge)
    region: str | None = None

    def wire(self) -> dict[str, object]:
        """The EventBridge envelope, as CodePipeline's: version, id, detail-type, source, time, resources, detail."""
        detail = self.detail.model_dump(mode="json", exclude_none=True)
        renamed = {
            "execution-id" if key == "executionId" else "execution-trigger" if key == "executionTrigger" else key: v
            for key, v in detail.items()
        }
        if "execution-trigger" in renamed:
            trigger = renamed["execution-trigger"]
            assert isinstance(trigger, dict)
            renamed["execution-trigger"] = {
                "trigger-type": trigger.get("triggerType"),
                **({"trigger-detail": trigger["triggerDetail"]} if trigger.get("triggerDetail") else {}),
            }
        return {
            "version": "0",
            "id": self.id,
            "detail-type": self.scope.detail_type,
            "source": EVENT_SOURCE,
            "account": self.account or "",
            "time": self.time.isoformat(),
            "region": self.region or "",
            "resources": [f"conveyor:pipeline/{self.detail.pipeline}"],
            "detail": renamed,
        }


def event_id(execution_id: str, origin: str, sequence: int) -> str:
    """Stable across re-sends: derived from the execution, where the event was produced (the execution workflow,
    or a stage child: "stage/<name>/<attempt>") and its sequence number there."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{execution_id}/{origin}/{sequence}"))


class CarriedEvents(CamelModel):
    """Consecutive events of another producer that a batch carries (a finished stage's, handed to its execution)."""

    origin: str
    events: list[PipelineEvent] = Field(default_factory=list)


class EventBatch(CamelModel):
    """Input of the delivery activity: consecutive events of one producer, in order; with `carried`, other producers'
    events that go ahead of them (a finished stage's last events, ahead of the stage's own event)."""

    pipeline_name: str
    execution_id: str
    origin: str  # "execution" or "stage/<name>/<attempt>"
    events: list[PipelineEvent] = Field(default_factory=list)
    sinks: list[str] = Field(default_factory=list)  # names of the pipeline's own sinks (conveyor.events), if any
    pipeline_sinks: list[SinkConfig] = Field(default_factory=list)  # the pipeline's own sinks (conveyor.events)
    carried: list[CarriedEvents] = Field(default_factory=list)

    def parts(self) -> list[EventBatch]:
        """One batch per producer (as the record keeps them): the carried ones, then this one's own events."""
        carried = [
            self.model_copy(update={"origin": c.origin, "events": c.events, "carried": []})
            for c in self.carried
            if c.events
        ]
        own = [self.model_copy(update={"carried": []})] if self.events else []
        return [*carried, *own]

    def whole(self) -> EventBatch:
        """Every event in order (carried first), as the sinks get them."""
        if not self.carried:
            return self
        events = [e for c in self.carried for e in c.events] + self.events
        return self.model_copy(update={"events": events, "carried": []})
