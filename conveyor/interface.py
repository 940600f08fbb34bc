"""Conveyor's Temporal interface, named once: workflow types, handler and activity names, workflow ids,
and the enums whose values cross between workflows, activities and the apps.

People and scripts drive Conveyor with the `temporal` CLI too, so these are a public API (README's
"Temporal interface" section): the workflows, the client, the activities that start or message workflows
and the benchmarks all take them from here; no other module spells them. Pure: safe in the workflow sandbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Self


class WorkflowType(StrEnum):
    EXECUTION = "PipelineExecution"  # one run of a pipeline
    STAGE = "PipelineStage"  # one attempt of a stage, a child of its execution
    COORDINATOR = "Pipeline"  # one per pipeline: versions, stage locks, transitions, facts
    TRIGGER = "PipelineTrigger"  # what a schedule or poll starts
    GC = "ConveyorGc"  # what the daily garbage collection schedule starts


class Query(StrEnum):
    STATE = "state"  # every workflow: its state (ExecutionState, StageState, CoordinatorState)
    TRANSITIONS = "transitions"  # PipelineExecution, diagnostic: every status change it recorded


class Update(StrEnum):
    # PipelineExecution
    STOP = "stop"
    RETRY_STAGE = "retry_stage"
    OVERRIDE_CONDITION = "override_condition"
    # PipelineStage
    APPROVE = "approve"
    REJECT = "reject"
    # Pipeline (the coordinator)
    ENTER_STAGE = "enter_stage"
    DISABLE_TRANSITION = "disable_transition"
    ENABLE_TRANSITION = "enable_transition"
    APPLY = "apply"
    ROLLBACK_STAGE = "rollback_stage"


class Signal(StrEnum):
    # PipelineExecution
    STAGE_DECISION = "stage_decision"
    # PipelineStage (approve/reject also as signals, for senders that cannot wait for an update)
    APPROVE = "approve"
    REJECT = "reject"
    STOP = "stop"
    # Pipeline (the coordinator)
    REQUEST_ENTRY = "request_entry"
    RELEASE_STAGE = "release_stage"


class Coordination(StrEnum):
    """What the `coordinate` local activity delivers to a pipeline's coordinator."""

    REQUEST_ENTRY = Signal.REQUEST_ENTRY.value
    RELEASE_STAGE = Signal.RELEASE_STAGE.value
    ENTER_STAGE = Update.ENTER_STAGE.value  # an update: a free stage is entered at once
    # A PARALLEL execution: enter at once unless the inbound transition is disabled, then as enter_stage.
    ENTER_PARALLEL = "enter_parallel"


class Activity(StrEnum):
    """Activities the workflows call by name (providers' activities are named by their contracts)."""

    COORDINATE = "coordinate"
    STAGE_FACTS = "stage_facts"
    STORE_DOCUMENT = "store_document"
    CLOSED_WORKFLOWS = "closed_workflows"
    SAVE_COORDINATOR_STATE = "save_coordinator_state"
    SAVED_COORDINATOR_STATE = "saved_coordinator_state"
    START_ROLLBACK = "start_rollback"
    START_MANUAL_ROLLBACK = "start_manual_rollback"
    SYNC_TRIGGERS = "sync_triggers"
    FIRE_TRIGGER = "fire_trigger"
    RESOLVE_APPROVERS = "resolve_approvers"
    NOTIFY_SLACK = "notify_slack"
    NOTIFY_APPROVAL = "notify_approval"
    DEPLOYMENT_WINDOW = "deployment_window"  # condition rules
    REGEX_MATCHES = "regex_matches"
    LAMBDA_INVOKE_RULE = "lambda_invoke_rule"  # registered by the Lambda provider's activities module
    CHECK_ALARMS = "check_alarms"  # CloudWatchAlarm rule: one DescribeAlarms look
    COLLECT_GARBAGE = "collect_garbage"
    DELIVER_EVENTS = "deliver_events"  # a batch of state-change events: the record, then the sinks


class ActionCategory(StrEnum):
    """An action's category (CodePipeline's actionTypeId.category); provider contracts name theirs."""

    SOURCE = "Source"
    BUILD = "Build"
    TEST = "Test"
    DEPLOY = "Deploy"
    INVOKE = "Invoke"
    APPROVAL = "Approval"
    COMPUTE = "Compute"


class RevisionType(StrEnum):
    """CodePipeline's source revision override types (StartPipelineExecution's `sourceRevisions`)."""

    COMMIT_ID = "COMMIT_ID"
    IMAGE_DIGEST = "IMAGE_DIGEST"
    S3_OBJECT_VERSION_ID = "S3_OBJECT_VERSION_ID"
    S3_OBJECT_KEY = "S3_OBJECT_KEY"


class ActionOwner(StrEnum):
    AWS = "AWS"
    THIRD_PARTY = "ThirdParty"
    CUSTOM = "Custom"


class ExecutionMode(StrEnum):
    """How executions of one pipeline share its stages (CodePipeline's executionMode)."""

    SUPERSEDED = "SUPERSEDED"
    QUEUED = "QUEUED"
    PARALLEL = "PARALLEL"


class RetryMode(StrEnum):
    FAILED_ACTIONS = "FAILED_ACTIONS"
    ALL_ACTIONS = "ALL_ACTIONS"


class EntryDecision(StrEnum):
    """The coordinator's answer to an execution asking to enter a stage (or the execution's own, when it
    stopped waiting)."""

    ENTER = "Enter"
    SUPERSEDED = "Superseded"
    WITHDRAWN = "Withdrawn"


class ReleaseOutcome(StrEnum):
    """How an execution left a stage, as it tells the coordinator (a StageStatus value, or Withdrawn)."""

    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"
    SKIPPED = "Skipped"
    CANCELLED = "Cancelled"
    WITHDRAWN = EntryDecision.WITHDRAWN.value


class ApprovalStatus(StrEnum):
    """A decision on a Manual approval; Pending while a quorum is not reached yet."""

    APPROVED = "Approved"
    REJECTED = "Rejected"
    PENDING = "Pending"


class ApprovalOutcome(StrEnum):
    """How an approval closed, as its notifications say."""

    APPROVED = ApprovalStatus.APPROVED.value
    REJECTED = ApprovalStatus.REJECTED.value
    TIMED_OUT = "TimedOut"
    STOPPED = "Stopped"


class NoticeKind(StrEnum):
    """Why an approval notice goes out (SNS, webhook, Slack)."""

    OPENED = "opened"
    REMINDER = "reminder"
    PROGRESS = "progress"  # a decision counted towards the quorum
    CLOSED = "closed"


class ConditionKind(StrEnum):
    BEFORE_ENTRY = "BEFORE_ENTRY"
    ON_SUCCESS = "ON_SUCCESS"
    ON_FAILURE = "ON_FAILURE"

    @property
    def declared(self) -> str:
        """The word the declaration uses for it: beforeEntry, onSuccess, onFailure."""
        return {"BEFORE_ENTRY": "beforeEntry", "ON_SUCCESS": "onSuccess", "ON_FAILURE": "onFailure"}[self.value]


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


@dataclass(frozen=True)
class ExecutionId:
    """An execution, named as its workflow id is: `<pipeline>/<execution id>`."""

    pipeline_name: str
    execution_id: str

    @property
    def workflow_id(self) -> str:
        return execution_workflow_id(self.pipeline_name, self.execution_id)

    def stage_workflow_id(self, stage: str) -> str:
        return stage_workflow_id(self.pipeline_name, self.execution_id, stage)

    def __str__(self) -> str:
        return self.workflow_id

    @classmethod
    def parse(cls, workflow_id: str) -> Self:
        return cls(*split_execution_workflow_id(workflow_id))
