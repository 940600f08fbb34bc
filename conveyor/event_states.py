"""Which CodePipeline event state a Conveyor status change is (the table README's "Events" section shows).

Pure (the workflows import it). A change that CodePipeline has no state for gives None (no event).

| scope    | Conveyor change                              | event state |
|----------|----------------------------------------------|-------------|
| pipeline | (none) -> InProgress                         | STARTED     |
| pipeline | Failed/Stopped -> InProgress (a retry)       | RESUMED     |
| pipeline | -> Stopping / Stopped                        | STOPPING / STOPPED |
| pipeline | -> Succeeded / Failed / Superseded           | SUCCEEDED / FAILED / SUPERSEDED |
| pipeline | -> Cancelled                                 | CANCELED    |
| stage    | (none) -> InProgress                         | STARTED     |
| stage    | Failed/Stopped -> InProgress (a retry)       | RESUMED     |
| stage    | -> Stopping / Stopped / Succeeded / Failed   | STOPPING / STOPPED / SUCCEEDED / FAILED |
| stage    | -> Cancelled, -> Skipped (a condition's SKIP) | CANCELED (a skip says so in `summary`) |
| action   | -> InProgress                                | STARTED     |
| action   | -> Succeeded / Failed / Abandoned            | SUCCEEDED / FAILED / ABANDONED |
"""

from __future__ import annotations

from conveyor.events import EventState
from conveyor.model import ActionStatus, ExecutionStatus, StageStatus

_PIPELINE = {
    ExecutionStatus.STOPPING: EventState.STOPPING,
    ExecutionStatus.STOPPED: EventState.STOPPED,
    ExecutionStatus.SUCCEEDED: EventState.SUCCEEDED,
    ExecutionStatus.FAILED: EventState.FAILED,
    ExecutionStatus.SUPERSEDED: EventState.SUPERSEDED,
    ExecutionStatus.CANCELLED: EventState.CANCELED,
}
_STAGE = {
    StageStatus.STOPPING: EventState.STOPPING,
    StageStatus.STOPPED: EventState.STOPPED,
    StageStatus.SUCCEEDED: EventState.SUCCEEDED,
    StageStatus.FAILED: EventState.FAILED,
    StageStatus.CANCELLED: EventState.CANCELED,
    StageStatus.SKIPPED: EventState.CANCELED,
}
_ACTION = {
    ActionStatus.IN_PROGRESS: EventState.STARTED,
    ActionStatus.SUCCEEDED: EventState.SUCCEEDED,
    ActionStatus.FAILED: EventState.FAILED,
    ActionStatus.ABANDONED: EventState.ABANDONED,
}


def pipeline_event_state(before: ExecutionStatus | None, after: ExecutionStatus) -> EventState | None:
    if after == ExecutionStatus.IN_PROGRESS:
        return EventState.STARTED if before is None else EventState.RESUMED
    return _PIPELINE.get(after)


def stage_event_state(before: StageStatus | None, after: StageStatus) -> EventState | None:
    if after == StageStatus.IN_PROGRESS:
        return EventState.RESUMED if before in (StageStatus.FAILED, StageStatus.STOPPED) else EventState.STARTED
    return _STAGE.get(after)


def action_event_state(after: ActionStatus) -> EventState:
    return _ACTION[after]
