"""Waves: one action run over an ordered list of targets (`conveyor.waves`), a wave at a time, each baked before the
next. A wave is one run of the action's activity with the wave's overrides (its own context and so its own
idempotency key: a retried wave never redeploys another), and it registers its own compensation; a failed wave fails
the action, and the stage's failure is handled by the ONE rollback rule (README "Waves")."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from conveyor.bake import waves_to_run
    from conveyor.model import ActionOutcome, ActionState, ActionStatus, ErrorDetails, WaveState
    from conveyor.spec.declaration import Action, Wave


def initial_waves(action: Action) -> list[WaveState]:
    return [
        WaveState(name=w.name, region=w.region or action.region, role_arn=w.role_arn or action.role_arn)
        for w in action.conveyor.waves or []
    ]


async def run_waves(
    action: Action,
    state: ActionState,
    run_one: Callable[[Wave, WaveState], Awaitable[ActionOutcome]],
    describe: Callable[[Exception], ErrorDetails],
) -> ActionOutcome:
    """Run the waves not yet done, in order; the first failure is recorded on its wave and raised (no later wave
    starts). The action's outcome is its last wave's, its summary naming every wave."""
    if not state.waves:
        state.waves = initial_waves(action)
    declared = {wave.name: wave for wave in action.conveyor.waves or []}
    last: ActionOutcome | None = None
    for wave in waves_to_run(state.waves):
        wave.status, wave.started_at = ActionStatus.IN_PROGRESS, workflow.now()
        wave.finished_at = wave.error = wave.bake = None
        try:
            last = await run_one(declared[wave.name], wave)
        except Exception as err:
            wave.status, wave.error, wave.finished_at = ActionStatus.FAILED, describe(err), workflow.now()
            raise
        wave.status, wave.summary, wave.finished_at = ActionStatus.SUCCEEDED, last.summary, workflow.now()
    names = ", ".join(wave.name for wave in state.waves)
    outcome = last or ActionOutcome()
    return outcome.model_copy(update={"summary": f"{len(state.waves)} waves done: {names}"})
