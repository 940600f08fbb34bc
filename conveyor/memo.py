"""The execution's memo: a compact, secret-free copy of its state, readable through describe.

One key for the execution and one per stage, so each upsert writes only what changed and history
stays small however many stages a pipeline has. Fields at their default are left out (reading the
memo back as the models restores them): every upsert is a history event and a visibility write.
Secret-free by construction: environment variable values never enter state (secrets reach commands
only through the worker's environment, `passEnvironment`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from conveyor.model import ExecutionState, StageState

EXECUTION_KEY = "execution"
STAGE_KEY_PREFIX = "stage:"
# The coordinator's memo: names of the stages whose inbound transition is disabled.
DISABLED_TRANSITIONS_KEY = "disabledTransitions"


def execution_memo(state: ExecutionState, *, with_stages: bool = True) -> dict[str, Any]:
    """The execution's key (and, when asked, every stage's: once at start, to list them)."""
    header = state.model_dump(mode="json", exclude={"stages"}, exclude_defaults=True)
    header["stageNames"] = [s.stage_name for s in state.stages]
    memo: dict[str, Any] = {EXECUTION_KEY: header}
    if with_stages:
        for stage in state.stages:
            memo |= stage_memo(stage)
    return memo


def stage_memo(stage: StageState) -> dict[str, Any]:
    return {STAGE_KEY_PREFIX + stage.stage_name: stage.model_dump(mode="json", exclude_defaults=True)}


def state_from_memo(memo: Mapping[str, Any]) -> ExecutionState | None:
    header = memo.get(EXECUTION_KEY)
    if not isinstance(header, dict):
        return None
    names = header.pop("stageNames", [])
    stages = [memo.get(STAGE_KEY_PREFIX + name) for name in names]
    header["stages"] = [s if s is not None else {"stageName": n} for s, n in zip(stages, names, strict=True)]
    return ExecutionState.model_validate(header)
