"""Pipelines as durable entities: execution modes, stage locks, transitions, versions, coordinator."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from activities import coordination
from conveyor.client import ConveyorClient, ConveyorError, ExecutionRef
from conveyor.memo import DISABLED_TRANSITIONS_KEY
from conveyor.model import CoordinatorState, ExecutionState, ExecutionStatus
from conveyor.settings import Settings
from tests.helpers import pipeline, waiting_token

GATED = """
name: gated
executionMode: {mode}
stages:
  - name: Build
    actions:
      - {{name: Compile, provider: Noop}}
  - name: Gate
    actions:
      - {{name: Approve, provider: Manual}}
  - name: Deploy
    actions:
      - {{name: Ship, provider: Noop}}
"""
# The same stages with nothing to wait for in Gate.
UNGATED = GATED.replace("{{name: Approve, provider: Manual}}", "{{name: Check, provider: Noop}}")


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 30, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def waiting_at(conveyor: ConveyorClient, name: str, stage: str, execution: ExecutionRef) -> CoordinatorState:
    async def check() -> CoordinatorState | None:
        try:
            state = await conveyor.pipeline_state(name)
        except ConveyorError:
            return None
        lock = next((s for s in state.stages if s.stage_name == stage), None)
        ids = [w.execution_id for w in [*lock.waiting, *lock.held]] if lock else []
        return state if execution.execution_id in ids else None

    return await eventually(check, what=f"{execution} to wait in front of {stage}")


async def holding(conveyor: ConveyorClient, name: str, stage: str, execution: ExecutionRef) -> None:
    async def check() -> bool:
        try:
            state = await conveyor.pipeline_state(name)
        except ConveyorError:
            return False
        lock = next((s for s in state.stages if s.stage_name == stage), None)
        return bool(lock and lock.holder and lock.holder.execution_id == execution.execution_id)

    await eventually(check, what=f"{execution} to hold {stage}")


async def approve(conveyor: ConveyorClient, ref: ExecutionRef) -> None:
    token = await waiting_token(conveyor, ref, "Gate", "Approve")
    await conveyor.decide(ref, "Gate", "Approve", approve=True, token=token, by="tester")


async def finished(conveyor: ConveyorClient, ref: ExecutionRef) -> ExecutionState:
    return await asyncio.wait_for(conveyor.wait(ref, interval=0.2), 60)


async def test_superseded_mode_keeps_only_the_newest_waiting_execution(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    declaration = pipeline(GATED.format(mode="SUPERSEDED"))
    name = declaration["name"]
    first, _ = await conveyor.start(declaration)
    await holding(conveyor, name, "Gate", first)  # Gate locked while its approval is pending
    second, _ = await conveyor.start(declaration)
    await waiting_at(conveyor, name, "Gate", second)
    third, _ = await conveyor.start(declaration)
    second_state = await finished(conveyor, second)  # the newer arrival replaced it
    assert second_state.status == ExecutionStatus.SUPERSEDED
    assert f"superseded by {third.execution_id}" in (second_state.status_summary or "")
    gate = second_state.stage("Gate")
    assert gate is not None and gate.status is None  # superseded between stages, never inside one
    await waiting_at(conveyor, name, "Gate", third)
    await approve(conveyor, first)
    assert (await finished(conveyor, first)).status == ExecutionStatus.SUCCEEDED
    await approve(conveyor, third)
    assert (await finished(conveyor, third)).status == ExecutionStatus.SUCCEEDED
    state = await conveyor.pipeline_state(name)
    gate_lock = next(s for s in state.stages if s.stage_name == "Gate")
    assert gate_lock.holder is None and gate_lock.waiting == []
    assert gate_lock.last_succeeded is not None and gate_lock.last_succeeded.execution_id == third.execution_id
    assert gate_lock.newest_entered is not None and gate_lock.newest_entered.execution_id == third.execution_id


async def test_queued_mode_passes_each_stage_in_arrival_order(conveyor: ConveyorClient, worker: Worker) -> None:
    declaration = pipeline(GATED.format(mode="QUEUED"))
    name = declaration["name"]
    refs = [(await conveyor.start(declaration))[0]]
    await holding(conveyor, name, "Gate", refs[0])
    for _ in range(2):
        ref, _ = await conveyor.start(declaration)
        await waiting_at(conveyor, name, "Gate", ref)
        refs.append(ref)
    state = await conveyor.pipeline_state(name)
    gate = next(s for s in state.stages if s.stage_name == "Gate")
    assert [w.execution_id for w in gate.waiting] == [r.execution_id for r in refs[1:]]  # first in, first out
    for ref in refs:
        await approve(conveyor, ref)
    finals = [await finished(conveyor, ref) for ref in refs]
    assert [f.status for f in finals] == [ExecutionStatus.SUCCEEDED] * 3
    entered = [f.stage("Gate").started_at for f in finals]  # type: ignore[union-attr]
    assert entered == sorted(entered)  # the order in which they passed the stage


async def test_parallel_mode_runs_executions_independently(conveyor: ConveyorClient, worker: Worker) -> None:
    declaration = pipeline(GATED.format(mode="PARALLEL"))
    refs = [(await conveyor.start(declaration))[0] for _ in range(3)]
    tokens = [await waiting_token(conveyor, ref, "Gate", "Approve") for ref in refs]
    assert len(set(tokens)) == 3  # all three wait at the same approval at the same time
    for ref in refs:
        await approve(conveyor, ref)
    assert [(await finished(conveyor, ref)).status for ref in refs] == [ExecutionStatus.SUCCEEDED] * 3


async def test_transition_disabled_while_a_parallel_execution_runs_holds_it(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    """A PARALLEL execution reads the transitions at each stage (the worker keeps what it read for a
    second): a disable made while it waits at an approval holds it in front of the next stage."""
    declaration = pipeline(GATED.format(mode="PARALLEL"))
    name = declaration["name"]
    await conveyor.apply(declaration, by="ops")
    ref, _ = await conveyor.start(declaration)
    token = await waiting_token(conveyor, ref, "Gate", "Approve")
    await conveyor.set_transition(name, "Deploy", enabled=False, reason="freeze", by="ops")
    await asyncio.sleep(coordination.TRANSITIONS_TTL + 0.2)  # what the worker read at Gate is stale by now
    await conveyor.decide(ref, "Gate", "Approve", approve=True, token=token, by="tester")
    await waiting_at(conveyor, name, "Deploy", ref)
    live = await conveyor.state(ref)
    assert live.waiting_for_stage == "Deploy" and live.stage("Deploy").status is None  # type: ignore[union-attr]
    assert live.waiting_reason is not None and live.waiting_reason.endswith(": freeze")
    await conveyor.set_transition(name, "Deploy", enabled=True, by="ops")
    assert (await finished(conveyor, ref)).status == ExecutionStatus.SUCCEEDED


async def test_parallel_executions_never_message_the_coordinator(conveyor: ConveyorClient, worker: Worker) -> None:
    """One coordinator per pipeline would serialize every PARALLEL execution's stage boundaries: they
    only read its memo (disabled transitions), and their facts come from visibility."""
    declaration = pipeline(UNGATED.format(mode="PARALLEL"))
    name = declaration["name"]
    await conveyor.apply(declaration, by="ops")
    coordinator = conveyor.temporal.get_workflow_handle(name)
    events_before = len((await coordinator.fetch_history()).events)
    refs = [(await conveyor.start(declaration))[0] for _ in range(3)]
    assert [(await finished(conveyor, ref)).status for ref in refs] == [ExecutionStatus.SUCCEEDED] * 3
    assert len((await coordinator.fetch_history()).events) == events_before
    ids = {ref.execution_id for ref in refs}

    async def facts() -> CoordinatorState | None:
        state = await conveyor.pipeline_facts(name)
        deploy = state.stage("Deploy")
        ready = deploy.newest_entered and deploy.last_succeeded and len(await conveyor.list(name)) == 3
        return state if ready else None  # visibility catches up within moments

    deploy = (await eventually(facts, what="visibility to list the executions")).stage("Deploy")
    assert deploy.newest_entered is not None and deploy.newest_entered.execution_id in ids
    assert deploy.last_succeeded is not None and deploy.last_succeeded.execution_id in ids
    assert deploy.holder is None and not deploy.waiting


async def test_disabled_transitions_stay_in_the_memo_across_continue_as_new(
    temporal_client: Client, settings: Settings, worker: Worker
) -> None:
    """PARALLEL executions read the disabled transitions from the coordinator's memo (a new run's
    memo starts empty unless the old run passes it on)."""
    conveyor = ConveyorClient(temporal_client, settings.model_copy(update={"coordinator_continue_as_new_every": 3}))
    declaration = pipeline(GATED.format(mode="PARALLEL"))
    name = declaration["name"]
    await conveyor.apply(declaration, by="ops")
    await conveyor.set_transition(name, "Deploy", enabled=False, reason="freeze", by="ops")
    await conveyor.set_transition(name, "Gate", enabled=False, reason="freeze", by="ops")  # the third: a new run

    async def new_run_memo() -> dict[str, Any] | None:
        description = await temporal_client.get_workflow_handle(name).describe()
        return await description.memo() if (await conveyor.pipeline_state(name)).runs == 2 else None

    memo = await eventually(new_run_memo, what="the coordinator to continue as new")
    assert memo[DISABLED_TRANSITIONS_KEY] == ["Deploy", "Gate"]
    assert memo["mode"] == "PARALLEL" and memo["current"]["version"] == 1  # what `conveyor pipelines` lists
    await conveyor.set_transition(name, "Deploy", enabled=True, by="ops")
    memo = await (await temporal_client.get_workflow_handle(name).describe()).memo()
    assert memo[DISABLED_TRANSITIONS_KEY] == ["Gate"]


@pytest.mark.parametrize("mode", ["SUPERSEDED", "QUEUED", "PARALLEL"])
async def test_disabled_transition_holds_executions_until_enabled(
    conveyor: ConveyorClient, worker: Worker, mode: str
) -> None:
    declaration = pipeline(UNGATED.format(mode=mode))
    name = declaration["name"]
    await conveyor.apply(declaration, by="ops")
    closed = await conveyor.set_transition(name, "Deploy", enabled=False, reason="change freeze", by="ops")
    assert not closed.enabled and closed.reason == "change freeze" and closed.changed_by == "ops"
    first, _ = await conveyor.start(declaration)
    await waiting_at(conveyor, name, "Deploy", first)
    live = await conveyor.state(first)
    assert live.waiting_for_stage == "Deploy"
    assert live.waiting_reason is not None
    assert "disabled by ops" in live.waiting_reason and live.waiting_reason.endswith(": change freeze")
    second, _ = await conveyor.start(declaration)
    await waiting_at(conveyor, name, "Deploy", second)
    if mode == "SUPERSEDED":
        assert (await finished(conveyor, first)).status == ExecutionStatus.SUPERSEDED
    if mode == "PARALLEL":  # both held, neither superseded
        assert (await conveyor.state(first)).waiting_for_stage == "Deploy"
    await conveyor.set_transition(name, "Deploy", enabled=True, by="ops")
    second_state = await finished(conveyor, second)
    assert second_state.status == ExecutionStatus.SUCCEEDED
    if mode == "PARALLEL":
        assert (await finished(conveyor, first)).status == ExecutionStatus.SUCCEEDED
        assert not (await conveyor.pipeline_state(name)).stage("Deploy").held
    if mode == "QUEUED":
        first_state = await finished(conveyor, first)
        assert first_state.status == ExecutionStatus.SUCCEEDED
        assert first_state.stage("Deploy").started_at <= second_state.stage("Deploy").started_at  # type: ignore[union-attr, operator]


async def test_transition_of_an_unknown_stage_is_refused(conveyor: ConveyorClient, worker: Worker) -> None:
    declaration = pipeline(GATED.format(mode="SUPERSEDED"))
    await conveyor.apply(declaration)
    with pytest.raises(ConveyorError, match="has no stage 'Nope'"):
        await conveyor.set_transition(declaration["name"], "Nope", enabled=False, reason="x")


async def test_lock_of_a_terminated_execution_is_taken_back(conveyor: ConveyorClient, worker: Worker) -> None:
    declaration = pipeline(GATED.format(mode="SUPERSEDED"))
    name = declaration["name"]
    holder, _ = await conveyor.start(declaration)
    await holding(conveyor, name, "Gate", holder)
    waiter, _ = await conveyor.start(declaration)
    await waiting_at(conveyor, name, "Gate", waiter)
    await conveyor.temporal.get_workflow_handle(holder.workflow_id).terminate("operator terminated it")
    began = asyncio.get_running_loop().time()
    await holding(conveyor, name, "Gate", waiter)
    assert asyncio.get_running_loop().time() - began < 15  # within seconds
    await approve(conveyor, waiter)
    assert (await finished(conveyor, waiter)).status == ExecutionStatus.SUCCEEDED
    assert (await conveyor.state(holder)).status == ExecutionStatus.STOPPED


async def test_execution_finishes_on_the_version_it_started_with(conveyor: ConveyorClient, worker: Worker) -> None:
    v1 = pipeline(
        """
name: versions
stages:
  - name: Build
    actions:
      - {name: Compile, provider: Commands, namespace: B, commands: ["export WHICH=one"], outputVariables: [WHICH]}
  - name: Gate
    actions:
      - {name: Approve, provider: Manual}
"""
    )
    name = v1["name"]
    applied = await conveyor.apply(v1, by="alice")
    assert applied.changed and applied.version.version == 1
    again = await conveyor.apply(v1, by="alice")
    assert not again.changed and again.version.version == 1  # same content: same version
    version, declaration = await conveyor.registered(name)
    first, _ = await conveyor.start(declaration)
    await waiting_token(conveyor, first, "Gate", "Approve")
    v2 = dict(v1)
    v2["stages"] = [dict(v1["stages"][0]), v1["stages"][1]]
    v2["stages"][0]["actions"] = [dict(v1["stages"][0]["actions"][0], commands=["export WHICH=two"])]
    assert (await conveyor.apply(v2, by="bob")).version.version == 2
    await approve(conveyor, first)
    first_state = await finished(conveyor, first)
    assert first_state.pipeline_version == 1
    assert first_state.stage("Build").actions[0].output_variables == {"WHICH": "one"}  # type: ignore[union-attr]
    _, current = await conveyor.registered(name)
    second, _ = await conveyor.start(current)
    await approve(conveyor, second)
    second_state = await finished(conveyor, second)
    assert second_state.pipeline_version == 2
    assert second_state.stage("Build").actions[0].output_variables == {"WHICH": "two"}  # type: ignore[union-attr]
    old, old_declaration = await conveyor.registered(name, version=1)
    assert old.applied_by == "alice" and old_declaration["stages"][0]["actions"][0]["commands"] == ["export WHICH=one"]
    with pytest.raises(ConveyorError, match="has no version 7"):
        await conveyor.registered(name, version=7)


async def test_apply_refuses_an_invalid_declaration(conveyor: ConveyorClient, worker: Worker) -> None:
    bad = pipeline(GATED.format(mode="SUPERSEDED"))
    bad["stages"][2]["actions"][0]["inputArtifacts"] = [{"name": "Nope"}]
    with pytest.raises(ConveyorError, match="artifact 'Nope' is not produced by an earlier action"):
        await conveyor.apply(bad)


async def test_a_free_stage_is_entered_at_once_with_one_message_per_stage_boundary(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    declaration = pipeline(
        """
name: free
stages:
  - {name: Build, actions: [{name: A, provider: Noop}]}
  - {name: Test, actions: [{name: B, provider: Noop}]}
  - {name: Deploy, actions: [{name: C, provider: Noop}]}
"""
    )
    ref, _ = await conveyor.start(declaration)
    assert (await finished(conveyor, ref)).status == ExecutionStatus.SUCCEEDED
    history = await conveyor.temporal.get_workflow_handle(ref.workflow_id).fetch_history()
    kinds = [event.event_type for event in history.events]
    # Every entry was answered by the enter_stage update: no stage_decision signal woke the execution.
    assert EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED not in kinds
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    # Entry into Build, Build -> Test, Test -> Deploy (each release rides on the next entry), leaving Deploy.
    assert markers.count("core_local_activity") == 4
    state = await conveyor.pipeline_state(declaration["name"])
    for lock in state.stages:
        assert lock.holder is None and not lock.waiting
        assert lock.last_succeeded is not None and lock.last_succeeded.execution_id == ref.execution_id


async def test_entry_falls_back_to_the_signal_when_the_update_is_not_answered_in_time(
    conveyor: ConveyorClient, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No wait at all: every enter_stage is re-sent as the request_entry signal, and the update, still
    # delivered to the coordinator, must not swallow the answer the signal gets.
    monkeypatch.setattr(coordination, "ENTER_STAGE_UPDATE_WAIT", 0.0)
    declaration = pipeline(GATED.format(mode="QUEUED"))
    first, _ = await conveyor.start(declaration)
    await holding(conveyor, declaration["name"], "Gate", first)
    second, _ = await conveyor.start(declaration)
    await waiting_at(conveyor, declaration["name"], "Gate", second)
    await approve(conveyor, first)
    await approve(conveyor, second)
    assert [(await finished(conveyor, r)).status for r in (first, second)] == [ExecutionStatus.SUCCEEDED] * 2
    state = await conveyor.pipeline_state(declaration["name"])
    assert all(lock.holder is None and not lock.waiting for lock in state.stages)
