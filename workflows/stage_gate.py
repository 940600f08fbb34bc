"""The execution's side of the protocol with its pipeline's coordinator: entering a stage, leaving it.

SUPERSEDED and QUEUED executions hold a stage's lock from entry to release; the coordinator answers an
entry at once when the stage is free, else later with the `stage_decision` signal (entered, or superseded).
A PARALLEL execution holds no lock: it enters at once unless the stage's inbound transition is disabled,
and the coordinator hears of it only while it is held there. A release after a success is sent with the
next stage's entry request (one message fewer); a stop while waiting withdraws the request.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from conveyor.interface import Activity, Coordination, EntryDecision, ExecutionMode, ReleaseOutcome
    from conveyor.model import (
        CoordinationRequest,
        ExecutionSlot,
        StageEntryDecision,
        StageEntryRequest,
        StageFactsRequest,
        StageLock,
        StageRelease,
        nullable,
    )
    from conveyor.spec.declaration import Pipeline, Stage
    from workflows.recorder import Recorder


class StageGate:
    def __init__(self, pipeline: Pipeline, recorder: Recorder, stopping: Callable[[], bool]) -> None:
        self._pipeline = pipeline
        self._recorder = recorder
        self._stopping = stopping  # a stop was requested: give up waiting
        self._decisions: dict[str, StageEntryDecision] = {}
        self._current: Stage | None = None  # held, or waited for
        self._leaving: StageRelease | None = None  # a release sent with the next stage's request
        # PARALLEL mode: no stage lock; the coordinator hears of it only while held at a disabled transition.
        self._parallel = pipeline.execution_mode == ExecutionMode.PARALLEL

    def decided(self, decision: StageEntryDecision) -> None:
        """The coordinator's answer to an entry request it could not answer at once."""
        self._decisions[decision.stage_name] = decision

    async def enter(self, stage: Stage) -> StageEntryDecision | None:
        """Ask the coordinator to enter `stage`; in SUPERSEDED and QUEUED modes wait for its answer
        (the stage's lock, or being superseded). PARALLEL executions enter at once unless the inbound
        transition is disabled, then wait to be let in. None, or an ENTER decision: entered."""
        state, mode = self._recorder.state, self._pipeline.execution_mode
        self._decisions.pop(stage.name, None)
        self._current = stage
        request = StageEntryRequest(
            stage_name=stage.name,
            execution=ExecutionSlot(
                execution_id=state.execution_id,
                workflow_id=workflow.info().workflow_id,
                started_at=workflow.info().start_time,
                pipeline_version=state.pipeline_version,
            ),
            execution_mode=mode,
            leaving=self._leaving,
        )
        if self._parallel:
            # Enter at once unless the inbound transition is disabled; then held by the coordinator.
            decision = await self._coordinate(Coordination.ENTER_PARALLEL, entry=request)
            if decision is not None:
                self._current = None  # the coordinator never heard of it: nothing to give back
                return decision
        else:
            # An update: a free stage is entered at once, without waiting for a signal.
            decision = await self._coordinate(Coordination.ENTER_STAGE, entry=request)
            self._leaving = None
            if decision is not None:
                return decision
        self._recorder.waiting_for(stage.name)
        await workflow.wait_condition(lambda: stage.name in self._decisions or self._stopping())
        self._recorder.waiting_for(None)
        if stage.name not in self._decisions:  # stopped while it waited: give up its place in the queue
            await self.leave(stage, ReleaseOutcome.WITHDRAWN)
            return StageEntryDecision(stage_name=stage.name, decision=EntryDecision.WITHDRAWN)
        if self._parallel:
            self._current = None  # let in at the transition: the coordinator keeps nothing of it
        return self._decisions[stage.name]

    async def leave(self, stage: Stage, outcome: ReleaseOutcome, *, more_stages: bool = False) -> None:
        """Tell the coordinator the stage is free again (and whether this execution succeeded in it). A
        locked execution that succeeded with more stages to go tells it with the next stage's request. An
        unlocked (PARALLEL) execution is known to it only while held at a disabled transition."""
        if not self._parallel and outcome == ReleaseOutcome.SUCCEEDED and more_stages:
            self._leaving = self._release(stage, outcome)
            self._current = None
            return
        told = not self._parallel or self._current is not None
        self._current = None
        if told:
            await self._coordinate(Coordination.RELEASE_STAGE, release=self._release(stage, outcome))

    async def send_leaving(self) -> None:
        """A release kept for the next stage's request, when there will be no such request."""
        if self._leaving is not None:
            await self._coordinate(Coordination.RELEASE_STAGE, release=self._leaving)
            self._leaving = None

    async def abandon(self) -> None:
        """Cancelled through Temporal: give back the stage held or waited for (and a release kept for a
        request that was cancelled)."""
        await self.send_leaving()
        if self._current is not None:
            await self.leave(self._current, ReleaseOutcome.STOPPED)

    async def stage_facts(self, stage_name: str) -> StageLock | None:
        """What the coordinator knows of a stage: who entered it last, who last succeeded in it."""
        request = StageFactsRequest(pipeline_name=self._pipeline.name, stage_name=stage_name)
        if self._parallel:  # the coordinator does not know: visibility, for executions started after this one
            request.execution_mode = ExecutionMode.PARALLEL
            request.started_after = workflow.info().start_time
        facts: StageLock | None = await workflow.execute_local_activity(
            Activity.STAGE_FACTS,
            request,
            result_type=nullable(StageLock),
            start_to_close_timeout=timedelta(seconds=30),
        )
        return facts

    def _release(self, stage: Stage, outcome: ReleaseOutcome) -> StageRelease:
        state = self._recorder.state
        return StageRelease(
            stage_name=stage.name,
            execution_id=state.execution_id,
            outcome=outcome,
            pipeline_version=state.pipeline_version,
        )

    async def _coordinate(
        self, signal: Coordination, *, entry: StageEntryRequest | None = None, release: StageRelease | None = None
    ) -> StageEntryDecision | None:
        decision: StageEntryDecision | None = await workflow.execute_local_activity(
            Activity.COORDINATE,
            CoordinationRequest(
                pipeline_name=self._pipeline.name,
                execution_mode=self._pipeline.execution_mode,
                signal=signal,
                entry=entry,
                release=release,
            ),
            result_type=nullable(StageEntryDecision),
            start_to_close_timeout=timedelta(seconds=30),
        )
        return decision
