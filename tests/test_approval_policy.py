"""Approvals people trust: named approvers, quorum, separation of duties, sources, binding."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ConveyorError
from conveyor.model import ExecutionStatus
from tests.helpers import pipeline, waiting_token
from tests.test_webhooks import repository

POLICY = """
name: policy
stages:
  - name: Build
    actions:
      - name: Package
        provider: Commands
        commands: ["echo app > app.txt"]
        outputArtifacts: [{{name: App, files: [app.txt]}}]
  - name: Prod
    actions:
      - name: Gate
        provider: Manual
        configuration: {{CustomData: "ship it?"}}
        conveyor:
          approval: {policy}
"""


async def test_named_approvers_and_a_quorum_of_two(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(
        pipeline(POLICY.format(policy="{approvers: [alice, bob, carol], quorum: 2}")), started_by="dave"
    )
    token = await waiting_token(conveyor, ref, "Prod", "Gate")
    state = await conveyor.state(ref)
    request = state.stages[1].actions[0].approval_request
    assert request is not None and request.quorum == 2 and request.excluded == ["dave"]
    assert set(request.artifacts) == {"App"} and request.artifacts["App"].startswith("sha256:")  # bound to the build
    first = await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="alice", summary="ok")
    assert first.status == "Pending" and first.approvals == 1 and first.quorum == 2
    with pytest.raises(ConveyorError, match="'alice' has already approved 'Gate'"):
        await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="alice")
    with pytest.raises(ConveyorError, match="'mallory' may not decide approval 'Gate'"):
        await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="mallory")
    second = await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="bob")
    assert second.status == "Approved" and second.approvals == 2
    final = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED
    gate = final.stages[1].actions[0]
    assert [a.by for a in gate.approvals] == ["alice", "bob"] and gate.approval is not None


async def test_any_rejection_rejects_even_after_an_approval(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(pipeline(POLICY.format(policy="{approvers: [alice, bob], quorum: 2}")))
    token = await waiting_token(conveyor, ref, "Prod", "Gate")
    await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="alice")
    rejected = await conveyor.decide(ref, "Prod", "Gate", approve=False, token=token, by="bob", summary="no")
    assert rejected.status == "Rejected"
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.FAILED


async def test_separation_of_duties_and_allowed_sources(conveyor: ConveyorClient, worker: Worker) -> None:
    ref, _ = await conveyor.start(
        pipeline(POLICY.format(policy="{approvers: [carol, erin], sources: [cli]}")), started_by="carol"
    )
    token = await waiting_token(conveyor, ref, "Prod", "Gate")
    with pytest.raises(ConveyorError, match=r"'carol' started this execution .* \(separation of duties\)"):
        await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="carol", source="cli")
    with pytest.raises(ConveyorError, match="does not take decisions from 'temporal' \\(allowed: cli\\)"):
        await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="erin", source="temporal")
    await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="erin", source="cli")
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.SUCCEEDED

    allowed, _ = await conveyor.start(
        pipeline(POLICY.format(policy="{approvers: [carol], allowStarter: true}")), started_by="carol"
    )
    token = await waiting_token(conveyor, allowed, "Prod", "Gate")
    await conveyor.decide(allowed, "Prod", "Gate", approve=True, token=token, by="carol")
    assert (await asyncio.wait_for(conveyor.wait(allowed), 60)).status == ExecutionStatus.SUCCEEDED


async def test_the_source_revisions_author_may_not_approve(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    repo = repository(tmp_path / "repo", {"a.txt": "a\n"}, "change")  # authored by dev@example.com
    declaration = pipeline(
        f"""
name: authored
stages:
  - name: Source
    actions:
      - {{name: Checkout, provider: Git, configuration: {{RepositoryUrl: "{repo}", BranchName: main}}}}
  - name: Prod
    actions:
      - {{name: Gate, provider: Manual, conveyor: {{approval: {{approvers: [dev@example.com, lead@example.com]}}}}}}
"""
    )
    ref, _ = await conveyor.start(declaration)
    token = await waiting_token(conveyor, ref, "Prod", "Gate")
    with pytest.raises(ConveyorError, match="'dev@example.com' started this execution or wrote its source revision"):
        await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="dev@example.com")
    await conveyor.decide(ref, "Prod", "Gate", approve=True, token=token, by="lead@example.com")
    assert (await asyncio.wait_for(conveyor.wait(ref), 60)).status == ExecutionStatus.SUCCEEDED
