"""Conveyor's Temporal interface, named once: workflow types and workflow ids.

People and scripts drive Conveyor with the `temporal` CLI too, so these are a public API (README's
"Temporal interface" section): the workflows, the client, the activities that start or message workflows
and the benchmarks all take them from here. Pure: safe in the workflow sandbox.
"""

from __future__ import annotations

from enum import StrEnum


class WorkflowType(StrEnum):
    EXECUTION = "PipelineExecution"  # one run of a pipeline
    STAGE = "PipelineStage"  # one attempt of a stage, a child of its execution
    COORDINATOR = "Pipeline"  # one per pipeline: versions, stage locks, transitions, facts
    TRIGGER = "PipelineTrigger"  # what a schedule or poll starts


def execution_workflow_id(pipeline_name: str, execution_id: str) -> str:
    return f"{pipeline_name}/{execution_id}"


def stage_workflow_id(pipeline_name: str, execution_id: str, stage_name: str) -> str:
    return f"{pipeline_name}/{execution_id}/{stage_name}"


def coordinator_workflow_id(pipeline_name: str) -> str:
    return pipeline_name


def split_execution_workflow_id(workflow_id: str) -> tuple[str, str]:
    """(pipeline name, execution id) of an execution's workflow id; a pipeline name may hold '/'."""
    pipeline_name, _, execution_id = workflow_id.rpartition("/")
    return pipeline_name, execution_id
