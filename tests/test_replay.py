"""Recorded histories replayed against today's workflow code: a determinism break fails here.

Until 0.1 is cut, a workflow change re-records the histories it affects in the same commit, which says so;
from 0.1 on, a change that breaks replay goes behind `workflow.patched` instead (tests/histories/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from conveyor.payloads import data_converter
from conveyor.worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_there_are_histories_to_replay() -> None:
    names = {path.name.split(".")[0] for path in HISTORIES}
    assert {
        "multi-stage-success",
        "approval-approved",
        "action-failed",
        "queued-with-coordinator",
        "rolled-back",
        "parallel-held",
        "superseded",
        "manual-retry",
        "stopped",
        "condition",
        "manual-rollback",
    } <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.name for p in HISTORIES])
async def test_history_replays_deterministically(path: Path) -> None:
    text = path.read_text()
    events = json.loads(text)["events"]
    workflow_id = events[0]["workflowExecutionStartedEventAttributes"].get("workflowId") or path.stem
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=data_converter)
    result = await replayer.replay_workflow(WorkflowHistory.from_json(workflow_id, text), raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
