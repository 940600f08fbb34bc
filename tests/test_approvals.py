"""Manual approvals on the real dev server: updates with validators, signals, concurrency."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ConveyorError, ExecutionRef
from conveyor.model import ActionStatus, ApprovalDecision, ExecutionState, ExecutionStatus, StageState
from tests.helpers import pipeline, waiting_token
from tests.test_pipelines import GATED, finished, holding, waiting_at

APPROVAL = """
name: approval
stages:
  - name: Build
    actions:
      - name: Package
        provider: Commands
        namespace: Build
        commands: ["export VERSION=7"]
        outputVariables: [VERSION]
  - name: Prod
    actions:
      - name: Gate
        provider: Manual
        configuration:
          CustomData: "ship #{Build.VERSION}?"
          ExternalEntityLink: "https://example.com/#{Build.VERSION}"
      - name: Deploy
        provider: Commands
        runOrder: 2
        commands: ["echo deployed"]
"""


def gate(state: ExecutionState):  # noqa: ANN201 - test helper
    prod = state.stage("Prod")
    assert prod is not None
    return prod.actions[0]


async def test_approve_lets_the_stage_continue_and_records_who(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(pipeline(APPROVAL))
    token = await waiting_token(conveyor, ref)
    state = await conveyor.state(ref)
    assert gate(state).resolved_configuration["CustomData"] == "ship 7?"
    assert gate(state).external_url == "https://example.com/7"
    result = await conveyor.decide(ref, "Prod", "Gate", approve=True, summary="ship it", token=token, by="alice")
    assert result.status == "Approved" and result.by == "alice"
    final = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert final.status == ExecutionStatus.SUCCEEDED
    approval = gate(final).approval
    assert approval is not None and approval.by == "alice" and approval.summary == "ship it"
    assert gate(final).token is None


async def test_reject_fails_action_stage_and_execution(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(pipeline(APPROVAL))
    await waiting_token(conveyor, ref)
    await conveyor.decide(ref, "Prod", "Gate", approve=False, summary="not today", by="bob")
    final = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert final.status == ExecutionStatus.FAILED
    assert gate(final).status == ActionStatus.FAILED
    assert gate(final).error is not None
    assert gate(final).error.code == "ApprovalRejected"
    assert "rejected by bob: not today" in gate(final).error.message
    prod = final.stage("Prod")
    assert prod is not None and prod.actions[1].status is None  # Deploy never started


async def test_wrong_token_and_double_decision_are_refused(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(pipeline(APPROVAL))
    token = await waiting_token(conveyor, ref)
    with pytest.raises(ConveyorError, match="token does not match approval 'Gate'"):
        await conveyor.decide(ref, "Prod", "Gate", approve=True, token="not-the-token")
    with pytest.raises(ConveyorError, match="has no approval action 'Nope'"):
        await conveyor.decide(ref, "Prod", "Nope", approve=True, token=token)
    await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="alice")
    # The second decision is refused whether the stage still runs or has already closed.
    with pytest.raises(ConveyorError, match="already decided: Approved by alice|no longer waiting"):
        await conveyor.decide(ref, "Prod", "Gate", approve=False, token=token, by="bob")
    final = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert final.status == ExecutionStatus.SUCCEEDED


async def test_two_concurrent_decisions_never_both_pass(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(pipeline(APPROVAL))
    token = await waiting_token(conveyor, ref)
    handle = conveyor.temporal.get_workflow_handle(ref.stage_workflow_id("Prod"))
    approve = ApprovalDecision(token=token, action_name="Gate", summary="yes", by="alice")
    reject = ApprovalDecision(token=token, action_name="Gate", summary="no", by="bob")
    results = await asyncio.gather(
        handle.execute_update("approve", approve),
        handle.execute_update("reject", reject),
        return_exceptions=True,
    )
    passed = [r for r in results if not isinstance(r, BaseException)]
    # The loser is refused by the workflow, or, when the winner's approval let the stage finish first, by
    # the server: "workflow execution already completed" if it arrived after the close, "workflow update was
    # aborted by closing workflow" if it was admitted but not yet run (both NOT_FOUND, which the client
    # translates into what happened).
    closed = ("workflow execution already completed", "workflow update was aborted by closing workflow")
    refused = [
        r
        for r in results
        if isinstance(r, WorkflowUpdateFailedError) or (isinstance(r, RPCError) and r.message in closed)
    ]
    assert len(passed) == 1 and len(refused) == 1, results
    final = await asyncio.wait_for(conveyor.wait(ref), 30)
    approval = gate(final).approval
    assert approval is not None
    assert approval.by == passed[0]["by"]


async def test_signal_decision_with_bad_token_shows_as_refused(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(pipeline(APPROVAL))
    token = await waiting_token(conveyor, ref)
    handle = conveyor.temporal.get_workflow_handle(ref.stage_workflow_id("Prod"))
    await handle.signal("approve", ApprovalDecision(token="stale", action_name="Gate", by="mallory"))

    async def refused() -> StageState:
        while True:
            stage = await handle.query("state", result_type=StageState)
            if stage.actions[0].refused_decisions:
                return stage
            await asyncio.sleep(0.1)

    stage = await asyncio.wait_for(refused(), 10)
    assert "mallory" in stage.actions[0].refused_decisions[0]
    assert stage.actions[0].token == token  # still waiting
    await handle.signal("approve", ApprovalDecision(token=token, action_name="Gate", by="carol"))
    final = await asyncio.wait_for(conveyor.wait(ref), 30)
    assert final.status == ExecutionStatus.SUCCEEDED
    assert gate(final).approval is not None and gate(final).approval.by == "carol"


async def test_decision_after_the_stage_closed_is_translated(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(pipeline(APPROVAL))
    token = await waiting_token(conveyor, ref)
    await conveyor.decide(ref, "Prod", "Gate", approve=False, token=token, summary="no")
    await asyncio.wait_for(conveyor.wait(ref), 30)
    with pytest.raises(ConveyorError, match="already decided|no longer waiting"):
        await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token)


async def closed_reasons(conveyor: ConveyorClient, ref: ExecutionRef, stage: str, action: str, token: str) -> list[str]:
    """What `approve` says with the token and without it (the CLI's default reads the current token)."""
    reasons = []
    for given in (token, None):
        with pytest.raises(ConveyorError) as refused:
            await conveyor.decide(ref, stage, action, approve=True, token=given)
        reasons.append(str(refused.value))
    return reasons


async def test_approving_a_stopped_execution_gives_one_reason_with_or_without_token(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    ref, _ = await conveyor.start(pipeline(APPROVAL))
    token = await waiting_token(conveyor, ref)
    await conveyor.stop(ref, reason="change freeze", by="alice")
    assert (await asyncio.wait_for(conveyor.wait(ref), 30)).status == ExecutionStatus.STOPPED
    with_token, without_token = await closed_reasons(conveyor, ref, "Prod", "Gate", token)
    assert without_token == with_token
    assert f"execution '{ref}' was stopped" in with_token and "approvals are closed" in with_token


async def test_approving_a_superseded_execution_gives_one_reason_with_or_without_token(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    declaration = pipeline(GATED.format(mode="SUPERSEDED"))
    name = declaration["name"]
    first, _ = await conveyor.start(declaration)
    await holding(conveyor, name, "Gate", first)
    second, _ = await conveyor.start(declaration)
    await waiting_at(conveyor, name, "Gate", second)
    third, _ = await conveyor.start(declaration)
    assert (await finished(conveyor, second)).status == ExecutionStatus.SUPERSEDED
    first_token = await waiting_token(conveyor, first, "Gate", "Approve")  # a token someone copied
    with_token, without_token = await closed_reasons(conveyor, second, "Gate", "Approve", first_token)
    assert without_token == with_token
    assert f"execution '{second}' was superseded by {third.execution_id}" in with_token
    assert "approvals are closed" in with_token
