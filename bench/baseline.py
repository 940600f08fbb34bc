"""The baseline: the least Temporal code that does what a Conveyor execution does.

`BaselineExecution` runs one `BaselineStage` child workflow per stage, in order; a stage runs its
runOrder groups in ascending order and the activities of a group in parallel. Activities, child
workflows, ids, timeouts, retry policy and cancellation type mirror `workflows/execution.py` and
`workflows/stage.py`, so the difference measured against Conveyor is Conveyor's own work
(validation, state, memo and search-attribute upserts, coordination), not a different Temporal shape.

This module is imported by the workflow sandbox again for every workflow run: it must have no
side effects at import time, and what it imports from outside the standard library is passed through.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity, workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.workflow import ActivityCancellationType

# Conveyor's own values (workflows/action.py), copied rather than imported: the baseline must not
# depend on the engine it is compared with, only match its settings.
INFRASTRUCTURE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10
)
ACTION_TIMEOUT = timedelta(hours=1)
APPROVAL_TIMEOUT = timedelta(days=7)  # a timer, as Conveyor's approvals have
DEFAULT_HEARTBEAT_SECONDS = 30


@dataclass
class BaselineAction:
    name: str
    run_order: int = 1
    commands: list[str] = field(default_factory=list)  # empty: the empty `baseline_noop` activity
    manual: bool = False  # a durable wait for the `approve` update instead of an activity


@dataclass
class BaselineStageSpec:
    name: str
    actions: list[BaselineAction]


@dataclass
class BaselineInput:
    pipeline_name: str
    execution_id: str
    stages: list[BaselineStageSpec]
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS


@dataclass
class BaselineStageInput:
    pipeline_name: str
    execution_id: str
    stage: BaselineStageSpec
    heartbeat_seconds: int = DEFAULT_HEARTBEAT_SECONDS


@dataclass
class BaselineActionInput:
    """Who the activity works for: the same identifying fields Conveyor's `ActionContext` carries."""

    pipeline_name: str
    execution_id: str
    stage_name: str
    action_name: str
    commands: list[str] = field(default_factory=list)


@activity.defn(name="baseline_noop")
async def baseline_noop(input: BaselineActionInput) -> None:
    """Empty on purpose: the same work as Conveyor's `Noop` provider, minus Conveyor."""


@activity.defn(name="baseline_commands")
async def baseline_commands(input: BaselineActionInput) -> None:
    """Run the commands in one bash process, heartbeating, for the recovery scenario's baseline.

    Unlike Conveyor's `Commands` provider it keeps no workspace, log or process-group record: a retry
    after a lost worker simply runs the commands again."""
    process = await asyncio.create_subprocess_exec(
        "bash", "-ec", "\n".join(input.commands), start_new_session=True, env={"PATH": os.environ.get("PATH", "")}
    )
    try:
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(process.wait()), timeout=0.5)
                break
            except TimeoutError:
                activity.heartbeat()
    except asyncio.CancelledError:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    if process.returncode != 0:
        raise RuntimeError(f"commands exited with {process.returncode}")


@dataclass
class BaselineApproval:
    action_name: str
    by: str = ""


@workflow.defn(name="BaselineStage")
class BaselineStage:
    def __init__(self) -> None:
        self._approved: set[str] = set()

    @workflow.update(name="approve")
    async def approve(self, decision: BaselineApproval) -> str:
        """The least an approval can be: record it, answer at once."""
        self._approved.add(decision.action_name)
        return decision.action_name

    @workflow.run
    async def run(self, input: BaselineStageInput) -> int:
        """Run orders ascending, a group's activities in parallel; returns how many actions ran."""
        ran = 0
        for run_order in sorted({a.run_order for a in input.stage.actions}):
            group = [a for a in input.stage.actions if a.run_order == run_order]
            await asyncio.gather(*(self._action(input, a) for a in group))
            ran += len(group)
        return ran

    async def _action(self, input: BaselineStageInput, action: BaselineAction) -> Any:
        if action.manual:
            await workflow.wait_condition(lambda: action.name in self._approved, timeout=APPROVAL_TIMEOUT)
            return None
        return await workflow.start_activity(
            "baseline_commands" if action.commands else "baseline_noop",
            BaselineActionInput(
                pipeline_name=input.pipeline_name,
                execution_id=input.execution_id,
                stage_name=input.stage.name,
                action_name=action.name,
                commands=action.commands,
            ),
            start_to_close_timeout=ACTION_TIMEOUT,
            heartbeat_timeout=timedelta(seconds=input.heartbeat_seconds),
            retry_policy=INFRASTRUCTURE_RETRY,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=f"{input.stage.name}/{action.name}",
        )


@workflow.defn(name="BaselineExecution")
class BaselineExecution:
    @workflow.run
    async def run(self, input: BaselineInput) -> int:
        """One child workflow per stage, in order (ids shaped like Conveyor's); returns actions run."""
        ran = 0
        for stage in input.stages:
            ran += await workflow.execute_child_workflow(
                BaselineStage.run,
                BaselineStageInput(
                    pipeline_name=input.pipeline_name,
                    execution_id=input.execution_id,
                    stage=stage,
                    heartbeat_seconds=input.heartbeat_seconds,
                ),
                id=f"{input.pipeline_name}/{input.execution_id}/{stage.name}",
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                static_summary=f"{input.pipeline_name} {input.execution_id}: stage {stage.name}",
            )
        return ran


def baseline_input(declaration: dict[str, Any], execution_id: str) -> BaselineInput:
    """The baseline equivalent of a Conveyor declaration: same stages, actions, run orders, commands."""
    stages = [
        BaselineStageSpec(
            name=stage["name"],
            actions=[
                BaselineAction(
                    name=a["name"],
                    run_order=int(a.get("runOrder", 1)),
                    commands=list(a.get("commands") or []),
                    manual=a.get("provider") == "Manual",
                )
                for a in stage["actions"]
            ],
        )
        for stage in declaration["stages"]
    ]
    heartbeat = int((declaration.get("conveyor") or {}).get("heartbeatTimeoutSeconds", DEFAULT_HEARTBEAT_SECONDS))
    return BaselineInput(
        pipeline_name=f"{declaration['name']}-baseline",
        execution_id=execution_id,
        stages=stages,
        heartbeat_seconds=heartbeat,
    )
