"""The no-op provider: an action that does nothing and succeeds.

Benchmarks use it to measure Conveyor's own orchestration cost (it does the same work as an empty
activity), and examples use it to show pure orchestration: stages, run orders, approvals, variables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from conveyor.model import ActionOutcome, NoopInput
from conveyor.providers.noop import ACTIVITY
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactStore


@activity.defn(name=ACTIVITY)
async def noop(input: NoopInput) -> ActionOutcome:
    """Succeed at once, handing back the declared output variables unchanged."""
    return ActionOutcome(output_variables=input.output_variables, summary="no-op")


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the Noop contract (conveyor.providers.noop)."""
    return [noop]
