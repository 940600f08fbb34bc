"""The no-op provider: an action that does nothing and succeeds.

Benchmarks use it to measure Conveyor's own orchestration cost (it does the same work as an empty
activity), and examples use it to show pure orchestration: stages, run orders, approvals, variables.
"""

from __future__ import annotations

from temporalio import activity

from conveyor.model import ActionOutcome, NoopInput


@activity.defn(name="noop")
async def noop(input: NoopInput) -> ActionOutcome:
    """Succeed at once, handing back the declared output variables unchanged."""
    return ActionOutcome(output_variables=input.output_variables, summary="no-op")
