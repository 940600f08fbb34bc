"""The memos, written and read only here, as models: the execution's and the coordinator's.

The execution's memo is a compact, secret-free copy of its state, readable through describe and list.
One key for the execution and one per stage, so each upsert writes only what changed and history
stays small however many stages a pipeline has. Fields at their default are left out (reading the
memo back as the models restores them): every upsert is a history event and a visibility write.
Secret-free by construction: environment variable values never enter state (secrets reach commands
only through the worker's environment, `passEnvironment`).

The coordinator's memo (CoordinatorMemo) carries what readers need without a task of the coordinator:
the current version and execution mode (`conveyor pipelines`) and the disabled transitions (PARALLEL
executions, before entering a stage).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from conveyor.interface import ExecutionMode
from conveyor.model import CamelModel, CoordinatorState, ExecutionState, PipelineVersion, StageState

EXECUTION_KEY = "execution"
STAGE_KEY_PREFIX = "stage:"
STAGE_NAMES_KEY = "stageNames"  # in the execution's key: the stages, in order, each with its own key
# The coordinator's memo: names of the stages whose inbound transition is disabled.
DISABLED_TRANSITIONS_KEY = "disabledTransitions"


def execution_memo(state: ExecutionState, *, with_stages: bool = True) -> dict[str, Any]:
    """The execution's key (and, when asked, every stage's: once at start, to list them)."""
    header = state.model_dump(mode="json", exclude={"stages"}, exclude_defaults=True)
    header[STAGE_NAMES_KEY] = [s.stage_name for s in state.stages]
    memo: dict[str, Any] = {EXECUTION_KEY: header}
    if with_stages:
        for stage in state.stages:
            memo |= stage_memo(stage)
    return memo


def stage_memo(stage: StageState) -> dict[str, Any]:
    return {STAGE_KEY_PREFIX + stage.stage_name: stage.model_dump(mode="json", exclude_defaults=True)}


def state_from_memo(memo: Mapping[str, Any]) -> ExecutionState | None:
    """The execution's state, with every stage's key; None before the execution's first task."""
    header = memo.get(EXECUTION_KEY)
    if not isinstance(header, dict):
        return None
    names = header.pop(STAGE_NAMES_KEY, [])
    stages = [memo.get(STAGE_KEY_PREFIX + name) for name in names]
    header["stages"] = [s if s is not None else {"stageName": n} for s, n in zip(stages, names, strict=True)]
    return ExecutionState.model_validate(header)


def header_from_memo(memo: Mapping[str, Any]) -> ExecutionState | None:
    """The execution's key alone (no stage's key read: its stages are named, with no state); None
    before the execution's first task. For readers of many executions' memos (list, visibility)."""
    header = memo.get(EXECUTION_KEY)
    if not isinstance(header, dict):
        return None
    names = header.get(STAGE_NAMES_KEY, [])
    fields = {k: v for k, v in header.items() if k != STAGE_NAMES_KEY}
    return ExecutionState.model_validate(fields | {"stages": [{"stageName": n} for n in names]})


def stage_from_memo(memo: Mapping[str, Any], stage_name: str) -> StageState | None:
    """A stage's key; None when the execution has not written it (not reached the stage)."""
    entry = memo.get(STAGE_KEY_PREFIX + stage_name)
    return StageState.model_validate(entry) if isinstance(entry, dict) else None


# --- The coordinator's memo --------------------------------------------------------------------------


class CoordinatorMemo(CamelModel):
    """The `Pipeline` coordinator's memo. A key is absent until first written (the current version and
    mode at the first apply, the disabled transitions at the first change of one, or a continue-as-new)."""

    current: PipelineVersion | None = None
    mode: ExecutionMode | None = None
    disabled_transitions: list[str] = Field(default_factory=list)

    def as_read(self) -> dict[str, Any]:
        """The memo as it was read: only the keys it had (`conveyor pipelines --output json`)."""
        return self.model_dump(mode="json", exclude_unset=True)


def coordinator_memo(state: CoordinatorState, disabled_transitions: list[str]) -> dict[str, Any]:
    """Every key of the coordinator's memo, from its state and the lock rules' disabled transitions (a
    caller may upsert some of the keys)."""
    memo = CoordinatorMemo(current=state.current, mode=state.execution_mode, disabled_transitions=disabled_transitions)
    return memo.model_dump(mode="json")


CoordinatorMemoField = Literal["current", "mode", "disabled_transitions"]  # CoordinatorMemo's fields


def coordinator_memo_fields(
    state: CoordinatorState, disabled_transitions: list[str], *fields: CoordinatorMemoField
) -> dict[str, Any]:
    """Some keys of the coordinator's memo (by field name: `current`, `mode`, `disabled_transitions`), for an
    upsert that changes only those."""
    keys = {CoordinatorMemo.model_fields[name].alias or name for name in fields}
    return {k: v for k, v in coordinator_memo(state, disabled_transitions).items() if k in keys}


def coordinator_from_memo(memo: Mapping[str, Any]) -> CoordinatorMemo:
    return CoordinatorMemo.model_validate(memo)
