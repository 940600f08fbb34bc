"""The coordinator's rules for who may enter a stage: its lock, its queue, its inbound transition, its facts.

Pure (no temporalio): the `Pipeline` workflow keeps the handlers, sends the decisions these rules return
(as `stage_decision` signals, or as the `enter_stage` update's answer), runs the timers and the liveness
activity, and persists the state; `now` comes from it (`workflow.now()`). The rules, per execution mode:
- SUPERSEDED: one execution holds the stage; at most one waits in front of it, the newest (by start);
  the older ones are superseded.
- QUEUED: one execution holds the stage; the others wait, first come first served.
- PARALLEL: no lock. An execution asks only to be held at a disabled transition, and is let in when it
  is enabled; a request without that records only the fact that it entered.
- A disabled transition lets nobody new in; enabling it admits the next waiter and every held execution.
- Leaving releases the stage (a waiter that leaves gives up its place, Withdrawn); a Succeeded release
  records the stage's last success; a repeated request of the holder is answered again.
- A holder whose workflow closed without releasing (terminated, say) loses the stage.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from conveyor.interface import EntryDecision, ExecutionMode, ReleaseOutcome
from conveyor.model import (
    CoordinatorState,
    ExecutionSlot,
    StageEntryDecision,
    StageEntryRequest,
    StageFact,
    StageLock,
    StageRelease,
    TransitionChange,
    TransitionState,
)

# A decision to send: the execution's workflow id, and what it is told.
Decision = tuple[str, StageEntryDecision]


@dataclass(frozen=True)
class Reclaimed:
    """A stage taken back from a holder whose workflow ended without releasing it."""

    stage_name: str
    execution_id: str


class StageLocks:
    """The lock rules, applied to a coordinator's state (its `StageLock`s, changed in place). Each
    change returns the decisions it produced, in the order they are to be sent."""

    def __init__(self, state: CoordinatorState) -> None:
        self._state = state
        self._out: list[Decision] = []

    # --- messages from executions ---------------------------------------------------------------

    def request_entry(self, request: StageEntryRequest, now: datetime) -> list[Decision]:
        """An execution asks to enter a stage (after leaving the one it leaves on its way in, if any)."""
        self._out = []
        if request.leaving is not None:
            self._release(request.leaving, now)
        lock = self._state.stage(request.stage_name)
        slot = request.execution.model_copy(update={"arrived_at": now})
        if request.execution_mode == ExecutionMode.PARALLEL:
            self._parallel_entry(lock, slot, request.hold_at_transition, now)
        elif lock.holder is not None and lock.holder.execution_id == slot.execution_id:
            self._let_in(slot, lock)  # a repeated request (a retried activity): answer it again
        elif all(w.execution_id != slot.execution_id for w in lock.waiting):
            lock.waiting.append(slot)
            if request.execution_mode == ExecutionMode.SUPERSEDED:
                self._supersede_older(lock)
            self._admit(lock, now)
        return self._out

    def release(self, release: StageRelease, now: datetime) -> list[Decision]:
        """An execution left a stage, or gave up waiting for it (Withdrawn)."""
        self._out = []
        self._release(release, now)
        return self._out

    # --- operators ------------------------------------------------------------------------------

    def disable_transition(self, change: TransitionChange, now: datetime) -> TransitionState:
        """Nobody new enters the stage until it is enabled (the holder stays)."""
        lock = self._state.stage(change.stage_name)
        lock.transition = TransitionState(enabled=False, reason=change.reason, changed_by=change.by, changed_at=now)
        return lock.transition

    def enable_transition(self, change: TransitionChange, now: datetime) -> tuple[TransitionState, list[Decision]]:
        """The next waiter enters (if the stage is free), and every PARALLEL execution held at it."""
        self._out = []
        lock = self._state.stage(change.stage_name)
        lock.transition = TransitionState(
            enabled=True, reason=change.reason or None, changed_by=change.by, changed_at=now
        )
        self._admit(lock, now)
        for slot in lock.held:
            self._let_in(slot, lock)
        lock.held = []
        return lock.transition, self._out

    # --- executions that are gone ---------------------------------------------------------------

    def drop(self, stage_name: str, execution_id: str, now: datetime) -> list[Decision]:
        """An execution no longer holds, waits for or is held at the stage (it is gone); the next one enters."""
        self._out = []
        self._drop(self._state.stage(stage_name), execution_id, now)
        return self._out

    def holders_to_check(self, *, only_waited_for: bool) -> list[str]:
        """The workflow ids of the holders whose liveness to check (those someone waits behind, or all)."""
        return sorted(
            {
                lock.holder.workflow_id
                for lock in self._state.stages
                if lock.holder and (lock.waiting or not only_waited_for)
            }
        )

    def reclaim(self, closed: Collection[str], now: datetime) -> tuple[list[Reclaimed], list[Decision]]:
        """Take each stage back from a holder whose workflow is among `closed`; the next waiter enters."""
        self._out = []
        reclaimed = []
        for lock in self._state.stages:
            if lock.holder is not None and lock.holder.workflow_id in closed:
                reclaimed.append(Reclaimed(stage_name=lock.stage_name, execution_id=lock.holder.execution_id))
                self._drop(lock, lock.holder.execution_id, now)
        return reclaimed, self._out

    # --- what the coordinator's lifecycle asks ---------------------------------------------------

    def someone_waits_behind_a_holder(self) -> bool:
        return any(lock.holder is not None and lock.waiting for lock in self._state.stages)

    def at_rest(self, *, but_for_holders: bool = False) -> bool:
        """No execution holding (unless `but_for_holders`), waiting or held at a stage, no disabled transition."""
        return all(
            (but_for_holders or lock.holder is None) and not lock.waiting and not lock.held and lock.transition.enabled
            for lock in self._state.stages
        )

    def disabled_transitions(self) -> list[str]:
        return sorted(s.stage_name for s in self._state.stages if not s.transition.enabled)

    # --- the rules ------------------------------------------------------------------------------

    def _parallel_entry(self, lock: StageLock, slot: ExecutionSlot, hold: bool, now: datetime) -> None:
        if hold:  # it found the transition disabled: held until enabled
            if lock.transition.enabled:  # enabled again meanwhile
                self._let_in(slot, lock)
            elif all(h.execution_id != slot.execution_id for h in lock.held):
                lock.held.append(slot)
            return
        # PARALLEL executions send only the request above; one without `holdAtTransition` (sent by
        # hand, or by the tests as a probe) leaves only the fact.
        lock.newest_entered = _fact(slot, now)

    def _supersede_older(self, lock: StageLock) -> None:
        """At most one execution waits in front of a stage: the newest; the others are superseded."""
        if len(lock.waiting) <= 1:
            return
        newest = max(lock.waiting, key=lambda w: w.started_at)
        for older in [w for w in lock.waiting if w is not newest]:
            decision = StageEntryDecision(
                stage_name=lock.stage_name, decision=EntryDecision.SUPERSEDED, superseded_by=newest.execution_id
            )
            self._out.append((older.workflow_id, decision))
        lock.waiting = [newest]

    def _release(self, release: StageRelease, now: datetime) -> None:
        lock = self._state.stage(release.stage_name)
        if release.outcome == ReleaseOutcome.SUCCEEDED:
            lock.last_succeeded = StageFact(
                execution_id=release.execution_id, pipeline_version=release.pipeline_version, at=now
            )
        self._drop(lock, release.execution_id, now)

    def _drop(self, lock: StageLock, execution_id: str, now: datetime) -> None:
        if lock.holder is not None and lock.holder.execution_id == execution_id:
            lock.holder = None
        lock.waiting = [w for w in lock.waiting if w.execution_id != execution_id]
        lock.held = [h for h in lock.held if h.execution_id != execution_id]
        self._admit(lock, now)

    def _admit(self, lock: StageLock, now: datetime) -> None:
        if lock.holder is None and lock.transition.enabled and lock.waiting:
            slot = lock.waiting.pop(0)
            lock.holder = slot
            lock.newest_entered = _fact(slot, now)
            self._let_in(slot, lock)

    def _let_in(self, slot: ExecutionSlot, lock: StageLock) -> None:
        self._out.append(
            (slot.workflow_id, StageEntryDecision(stage_name=lock.stage_name, decision=EntryDecision.ENTER))
        )


def _fact(slot: ExecutionSlot, now: datetime) -> StageFact:
    return StageFact(execution_id=slot.execution_id, pipeline_version=slot.pipeline_version, at=now)
