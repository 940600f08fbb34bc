"""Bake time and waves, their pure decisions: when a bake ends, what an alarm answer means for it, how it reads in
`status`, and what a wave changes of its action. The workflow side (timers, activities) is workflows/bake.py and
workflows/waves.py; these are table-tested without a server."""

from __future__ import annotations

from datetime import datetime, timedelta

from conveyor.alarms import AlarmAnswer
from conveyor.model import ActionStatus, BakeState, BakeStatus, ErrorDetails, WaveState

ALARM_DURING_BAKE = "AlarmDuringBake"
ALARM_MISSING = "AlarmMissing"
# A wave's context (logs, idempotency key) is its action's name and the wave's: `Deploy@eu-west-1`.
WAVE_SEPARATOR = "@"


def start_bake(minutes: float, alarms: list[str], now: datetime) -> BakeState:
    """A bake beginning now; its deadline is fixed here, in workflow state, so a restart never moves it."""
    return BakeState(minutes=minutes, alarms=list(alarms), started_at=now, deadline=now + timedelta(minutes=minutes))


def bake_verdict(answer: AlarmAnswer) -> ErrorDetails | None:
    """What one look at the alarms means for the bake: None goes on; an error fails the action at once."""
    if answer.missing:
        names = ", ".join(f"'{name}'" for name in answer.missing)
        return ErrorDetails(code=ALARM_MISSING, message=f"alarm {names} does not exist (watched during the bake)")
    if answer.tripped:
        went = ", ".join(f"'{name}' went {state.value}" for name, state in answer.tripped.items())
        return ErrorDetails(code=ALARM_DURING_BAKE, message=f"alarm {went} during the bake")
    return None


def next_wait(deadline: datetime, now: datetime, poll_seconds: float) -> timedelta | None:
    """How long to sleep before the next look at the alarms; None: the bake is over (its deadline passed)."""
    left = deadline - now
    if left <= timedelta(0):
        return None
    return min(left, timedelta(seconds=poll_seconds))


def minutes_text(minutes: float) -> str:
    return f"{minutes:.0f}" if minutes >= 10 else f"{minutes:.1f}".removesuffix(".0")


def bake_summary(bake: BakeState, now: datetime) -> str:
    """How `status` shows a bake: "baking, 4.5 min left, alarms OK", "baked 10 min, alarms OK", or the alarm."""
    watched = f"{len(bake.alarms)} alarms" if len(bake.alarms) > 1 else f"alarm '{bake.alarms[0]}'"
    if bake.status == BakeStatus.FAILED:
        return f"bake failed: {bake.tripped or 'an alarm went off'}"
    if bake.status == BakeStatus.PASSED:
        return f"baked {minutes_text(bake.minutes)} min, {watched} OK"
    left = max((bake.deadline - now).total_seconds() / 60, 0.0)
    return f"baking, {minutes_text(left)} min left, alarms OK ({watched} watched)"


def wave_configuration(configuration: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """The action's configuration with the wave's keys over it."""
    return {**configuration, **overrides}


def wave_action_name(action_name: str, wave_name: str) -> str:
    return f"{action_name}{WAVE_SEPARATOR}{wave_name}"


def waves_to_run(waves: list[WaveState]) -> list[WaveState]:
    """The waves still to run, in order: a declared retry of the action skips the waves that succeeded."""
    return [wave for wave in waves if wave.status != ActionStatus.SUCCEEDED]


def wave_line(wave: WaveState, now: datetime) -> str:
    """One wave in `status`: "wave eu: Succeeded, baked 10 min, alarm 'x' OK"."""
    where = ", ".join(part for part in (wave.region, wave.role_arn) if part)
    head = f"wave {wave.name}{f' ({where})' if where else ''}: {wave.status.value if wave.status else 'waiting'}"
    if wave.error is not None and (wave.bake is None or wave.bake.status != BakeStatus.FAILED):
        head += f": {wave.error.message}"
    if wave.bake is not None:
        head += f", {bake_summary(wave.bake, now)}"
    return head
