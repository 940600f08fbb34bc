"""ROLLBACK executions: what they re-run and CodePipeline's rules for starting one.

A rollback re-runs one stage with the inputs (variables, artifacts, source revisions) that an earlier
successful execution had when it ran that stage. Used by the `start_rollback` activity (automatic
rollback after `onFailure: ROLLBACK`) and by the client (`conveyor rollback`).
"""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from conveyor.interface import WorkflowType, execution_workflow_id
from conveyor.memo import state_from_memo
from conveyor.model import (
    ArtifactRef,
    ExecutionInput,
    ExecutionState,
    RollbackSpec,
    StageStatus,
    Trigger,
    TriggerType,
)
from conveyor.spec.declaration import ActionCategory, ExecutionMode, Pipeline

ROLLBACK_NAMESPACE = uuid.UUID("0b7d2c1e-5a43-4f6e-9f0a-7d3c2b1a9e84")


class RollbackRefused(ValueError):
    """A rollback CodePipeline's rules do not allow; the message says which rule."""


def rollback_execution_id(failed_execution_id: str, stage: str) -> str:
    """Derived from the failed execution and stage, so an automatic rollback starts exactly once."""
    return "rollback-" + str(uuid.uuid5(ROLLBACK_NAMESPACE, f"{failed_execution_id}/{stage}"))


async def target_state(client: Client, pipeline_name: str, execution_id: str) -> ExecutionState:
    try:
        description = await client.get_workflow_handle(execution_workflow_id(pipeline_name, execution_id)).describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise RollbackRefused(f"execution {pipeline_name}/{execution_id} was not found") from None
        raise
    state = state_from_memo(await description.memo())
    if state is None:
        raise RollbackRefused(f"execution {pipeline_name}/{execution_id} has no recorded state")
    return state


def check_rollback(pipeline: Pipeline, stage_name: str, target: ExecutionState, current_version: int) -> None:
    """CodePipeline's restrictions on a stage rollback, each refused with its own message."""
    names = [s.name for s in pipeline.stages]
    if stage_name not in names:
        raise RollbackRefused(f"pipeline '{pipeline.name}' has no stage '{stage_name}'")
    if pipeline.execution_mode == ExecutionMode.PARALLEL:
        raise RollbackRefused("stage rollback is not available in PARALLEL pipelines")
    first = pipeline.stages[0]
    if stage_name == first.name and any(a.action_type_id.category == ActionCategory.SOURCE for a in first.actions):
        raise RollbackRefused(f"'{stage_name}' is the source stage, which cannot be rolled back")
    if target.execution_type == "ROLLBACK":
        raise RollbackRefused(f"execution {target.execution_id} is itself a rollback; choose a STANDARD execution")
    stage = target.stage(stage_name)
    if stage is None or stage.status != StageStatus.SUCCEEDED:
        raise RollbackRefused(f"execution {target.execution_id} did not succeed in stage '{stage_name}'")
    if target.pipeline_version != current_version:
        raise RollbackRefused(
            f"execution {target.execution_id} ran pipeline version {target.pipeline_version}; "
            f"the pipeline is at version {current_version} (a rollback target must be on the current version)"
        )


def rollback_spec(pipeline: Pipeline, stage_name: str, target: ExecutionState, failed: str | None) -> RollbackSpec:
    """The inputs the stage had in the target execution: earlier stages' outputs and the revisions."""
    namespaces = {(s.name, a.name): a.namespace for s in pipeline.stages for a in s.actions if a.namespace}
    variables: dict[str, dict[str, str]] = {}
    artifacts: list[ArtifactRef] = []
    for stage in target.stages:
        if stage.stage_name == stage_name:
            break
        for action in stage.actions:
            namespace = namespaces.get((stage.stage_name, action.action_name))
            if namespace and action.output_variables:
                variables[namespace] = action.output_variables
            artifacts += action.output_artifacts
    return RollbackSpec(
        stage_name=stage_name,
        target_execution_id=target.execution_id,
        failed_execution_id=failed,
        variables=variables,
        artifacts=artifacts,
        source_revisions=target.source_revisions,
    )


async def start_rollback_execution(
    client: Client,
    task_queue: str,
    declaration: dict[str, Any],
    spec: RollbackSpec,
    target: ExecutionState,
    *,
    trigger: TriggerType,
    started_by: str | None,
) -> str:
    """Start the ROLLBACK execution (never as a child of anything); returns its execution id."""
    execution_id = (
        rollback_execution_id(spec.failed_execution_id, spec.stage_name)
        if spec.failed_execution_id
        else "rollback-" + str(uuid.uuid4())
    )
    name = str(declaration["name"])
    detail = (
        f"execution {spec.failed_execution_id} failed in stage {spec.stage_name}"
        if spec.failed_execution_id
        else f"stage {spec.stage_name} rolled back to execution {spec.target_execution_id}"
    )
    execution_input = ExecutionInput(
        pipeline=declaration,
        execution_id=execution_id,
        variables=target.variables,
        started_by=started_by,
        trigger=Trigger(trigger_type=trigger, trigger_detail=detail),
        rollback=spec,
        source_name=f"{name} (rollback of {spec.stage_name})",
    )
    try:
        await client.start_workflow(
            WorkflowType.EXECUTION.value,
            execution_input,
            id=execution_workflow_id(name, execution_id),
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"pipeline {name}: rollback of stage {spec.stage_name}",
        )
    except WorkflowAlreadyStartedError:
        pass  # started before (a retried activity): exactly once
    return execution_id
