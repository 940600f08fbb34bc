"""Runtime models shared by workflows, activities, the client and the CLI.

Everything that crosses a Temporal boundary (workflow and activity inputs and results, update and
query payloads, the memo) is one of these. JSON field names are camelCase, like the declaration's,
because people type them into `temporal workflow ...` commands.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from pydantic import Field

from conveyor.camel import CamelModel as CamelModel
from conveyor.event_sinks_config import SinkConfig
from conveyor.events import PipelineEvent
from conveyor.interface import (
    ApprovalOutcome,
    ApprovalStatus,
    ConditionKind,
    Coordination,
    EntryDecision,
    ExecutionMode,
    NoticeKind,
    ReleaseOutcome,
    RetryMode,
)


def nullable(model: type[Any]) -> type[Any]:
    """`model | None` as a `result_type`: Temporal's pydantic converter decodes the union (an activity or
    update may answer nothing), but the SDK's annotations ask for a class."""
    return cast(type[Any], model | None)


# --- Statuses (CodePipeline's vocabulary; Temporal's close status is a separate thing) -----------


class ExecutionStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    SUCCEEDED = "Succeeded"
    SUPERSEDED = "Superseded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self not in (ExecutionStatus.IN_PROGRESS, ExecutionStatus.STOPPING)


class StageStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    SKIPPED = "Skipped"


class ActionStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ABANDONED = "Abandoned"


class ConditionStatus(StrEnum):
    """A stage condition's evaluation, and each of its rules'. `Errored`: the rule could not be
    evaluated (a bad time zone or regular expression, an unresolvable variable): it fails the stage
    whatever the condition's result, so an erroring rule never silently skips a stage."""

    PENDING = "Pending"  # rules only: not evaluated (an earlier rule decided)
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ERRORED = "Errored"
    OVERRIDDEN = "Overridden"
    STOPPED = "Stopped"  # shown for an execution terminated through Temporal while it evaluated

    @property
    def is_open(self) -> bool:
        return self in (ConditionStatus.PENDING, ConditionStatus.IN_PROGRESS)


class CompensationStatus(StrEnum):
    IN_PROGRESS = "InProgress"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TriggerType(StrEnum):
    START_PIPELINE_EXECUTION = "StartPipelineExecution"
    POLL_FOR_SOURCE_CHANGES = "PollForSourceChanges"
    WEBHOOK = "Webhook"
    WEBHOOK_V2 = "WebhookV2"
    CLOUDWATCH_EVENT = "CloudWatchEvent"
    MANUAL_ROLLBACK = "ManualRollback"
    AUTOMATED_ROLLBACK = "AutomatedRollback"


# --- Artifacts and sources ------------------------------------------------------------------------


class ArtifactRef(CamelModel):
    """A stored artifact, passed by reference: never the content itself."""

    name: str
    digest: str  # "sha256:<hex>" of the stored archive
    location: str  # store-specific URI, e.g. file:///... or s3://bucket/key
    size: int


class ArtifactLocation(CamelModel):
    """A pipeline's declared S3 artifact store (`artifactStore`, or its region's entry of `artifactStores`), carried to
    its actions; a worker applies it only when configured for AWS (CONVEYOR_AWS), else it uses its own store."""

    bucket: str
    prefix: str = ""
    kms_key: str | None = None  # the declaration's encryptionKey id (SSE-KMS)
    region: str | None = None  # the artifactStores entry's region


class SourceRevisionOverride(CamelModel):
    """CodePipeline's `sourceRevisions` entry of StartPipelineExecution."""

    action_name: str
    revision_type: str = "COMMIT_ID"
    revision_value: str


class SourceRevision(CamelModel):
    """What a source action fetched, recorded on the execution."""

    action_name: str
    revision_id: str
    revision_summary: str | None = None
    revision_url: str | None = None


class Trigger(CamelModel):
    trigger_type: TriggerType = TriggerType.START_PIPELINE_EXECUTION
    trigger_detail: str | None = None


# --- Execution workflow input ---------------------------------------------------------------------


class ExecutionInput(CamelModel):
    """Input of the `PipelineExecution` workflow.

    `pipeline` is deliberately a plain mapping: it is validated inside the workflow, so a bad
    declaration sent with `temporal workflow start` fails the execution with readable messages
    instead of leaving a workflow task retrying a decode error.
    """

    pipeline: dict[str, Any]
    execution_id: str = ""  # default: the part of the workflow id after "<pipeline>/"
    variables: dict[str, str] = Field(default_factory=dict)
    source_revisions: list[SourceRevisionOverride] = Field(default_factory=list)
    client_request_token: str | None = None
    started_by: str | None = None
    trigger: Trigger = Field(default_factory=Trigger)
    source_name: str = "<execution input>"  # file the declaration came from, used in messages
    rollback: RollbackSpec | None = None  # set on executions of type ROLLBACK


# --- Activity inputs and results ------------------------------------------------------------------


class ActionContext(CamelModel):
    """Who an activity is working for; also the idempotency key of its side effects."""

    pipeline_name: str
    execution_id: str
    stage_name: str
    action_name: str
    stage_attempt: int = 1
    action_attempt: int = 1  # a declared retry's attempt (a lost worker's retries are the activity's own)
    # The pipeline's declared S3 stores for the action's outputs (conveyor.artifact_locations); empty: the worker's own.
    artifact_stores: list[ArtifactLocation] = Field(default_factory=list)

    @property
    def idempotency_key(self) -> str:
        return f"{self.execution_id}/{self.stage_name}/{self.stage_attempt}/{self.action_name}"


class OutputArtifactSpec(CamelModel):
    name: str
    files: list[str] = Field(default_factory=lambda: ["**/*"])


class CommandsInput(CamelModel):
    context: ActionContext
    commands: list[str]
    environment: dict[str, str] = Field(default_factory=dict)
    pass_environment: list[str] = Field(default_factory=list)
    input_artifacts: list[ArtifactRef] = Field(default_factory=list)
    output_artifacts: list[OutputArtifactSpec] = Field(default_factory=list)
    output_variables: list[str] = Field(default_factory=list)
    timeout_seconds: int = 55 * 60


class GitSourceInput(CamelModel):
    context: ActionContext
    repository: str  # a local path or a URL git understands
    branch: str | None = None
    commit: str | None = None  # a source revision override wins over the branch head
    output_artifact: str | None = None


class NoopInput(CamelModel):
    """Input of the documented no-op provider (benchmarks, examples of pure orchestration)."""

    context: ActionContext
    output_variables: dict[str, str] = Field(default_factory=dict)


class BuildPhaseStatus(StrEnum):
    """A CodeBuild phase's outcome (CodeBuild's own StatusType names), as the local runner reports them."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    FAULT = "FAULT"
    TIMED_OUT = "TIMED_OUT"
    IN_PROGRESS = "IN_PROGRESS"
    STOPPED = "STOPPED"


class BuildPhase(CamelModel):
    """One phase of a build (CodeBuild's phases: INSTALL, BUILD, ...), as `status` shows it."""

    name: str
    status: str | None = None  # CodeBuild's phaseStatus (SUCCEEDED, FAILED, ...: BuildPhaseStatus); None while it runs
    started_at: datetime | None = None
    finished_at: datetime | None = None


# A failed build's phases travel in its ApplicationError's details as {PHASES_DETAIL: [BuildPhase, ...]}.
PHASES_DETAIL = "phases"
# A failed action's external link or id (Lambda's failureDetails.externalExecutionId) travels as {EXTERNAL_DETAIL: str}.
EXTERNAL_DETAIL = "external"
# A failed action's saved state for its compensation (a stack as it was) travels in its ApplicationError's details as
# {COMPENSATION_ARTIFACTS_DETAIL: [ArtifactRef, ...]}: the compensation of a failed action finds it too.
COMPENSATION_ARTIFACTS_DETAIL = "compensationArtifacts"


class ActionOutcome(CamelModel):
    """What a successful action hands back to the workflow."""

    output_variables: dict[str, str] = Field(default_factory=dict)
    output_artifacts: list[ArtifactRef] = Field(default_factory=list)
    summary: str | None = None
    external_url: str | None = None  # a link (CodeBuild's deep link), or an external execution id (Lambda's)
    source_revision: SourceRevision | None = None
    phases: list[BuildPhase] = Field(default_factory=list)  # a build's phases (CodeBuild)
    # What the action kept in the artifact store for its compensation (a stack's previous template): the stage
    # adds these references to the action's registered compensation step.
    compensation_artifacts: list[ArtifactRef] = Field(default_factory=list)
    # Changes prepared for review (a change set's): a Manual approval later in the execution shows them.
    review: str | None = None


# --- Approvals ------------------------------------------------------------------------------------


class ApprovalDecision(CamelModel):
    """Payload of the `approve` / `reject` updates and signals on a stage workflow."""

    token: str
    action_name: str | None = None  # optional when the stage has exactly one pending approval
    summary: str = Field(default="", max_length=512)
    by: str | None = None  # claimed identity; as trusted as access to the Temporal namespace
    source: str = "temporal"  # the channel: cli, temporal, signal, slack, api
    # Other names the channel verified for the decider (the Slack app: `slack:TEAM/USER`, `email:...`).
    principals: list[str] = Field(default_factory=list, max_length=50)


class ApprovalResult(CamelModel):
    action_name: str
    status: ApprovalStatus
    summary: str
    by: str | None
    decided_at: datetime
    source: str = "temporal"
    approvals: int = 0  # approvals counted so far
    quorum: int = 1
    principals: list[str] = Field(default_factory=list)  # the decider's other names (one person counts once)


class SlackMessageRef(CamelModel):
    """Where an approval's Slack message is, to update it as decisions arrive."""

    channel: str
    ts: str


class ApproverQuery(CamelModel):
    """Input of `resolve_approvers`: the policy's entries and who is excluded, as declared."""

    approvers: list[str]
    excluded: list[str] = Field(default_factory=list)


class ApproverSnapshot(CamelModel):
    """Who may decide, resolved when the approval opened (groups, emails, the identity directory)."""

    allowed: list[str] = Field(default_factory=list)  # principal names; empty: anyone with access
    excluded: list[str] = Field(default_factory=list)
    people: int = 0  # distinct people the allowed names belong to (as far as the directory knows)
    problems: list[str] = Field(default_factory=list)  # entries that resolved to nobody, and why


class ApprovalRequest(CamelModel):
    """What an open approval is bound to and who may decide it (shown by `status`)."""

    approvers: list[str] = Field(default_factory=list)  # empty: anyone with access
    quorum: int = 1
    excluded: list[str] = Field(default_factory=list)  # separation of duties: the starter, the author
    sources: list[str] | None = None
    artifacts: dict[str, str] = Field(default_factory=dict)  # name -> digest the decision is bound to
    source_revisions: list[str] = Field(default_factory=list)
    custom_data: str | None = None
    reviews: list[str] = Field(default_factory=list)  # changes prepared earlier in the execution (change sets)
    # The membership snapshot taken when the approval opened (None: no policy, or recorded before it existed).
    allowed: list[str] | None = None
    problems: list[str] = Field(default_factory=list)
    slack_message: SlackMessageRef | None = None


# --- State: what `state` queries return and what the memo keeps ------------------------------------


class ErrorDetails(CamelModel):
    code: str
    message: str


class ActionAttempt(CamelModel):
    """An earlier, failed attempt of an action that declared retries."""

    attempt: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorDetails


class CompensationStep(CamelModel):
    """What undoes an action: registered when the action starts, so a half-applied one is undone too."""

    stage_name: str
    action_name: str
    sequence: int  # order of start within the stage; compensations run in reverse
    commands: list[str]  # resolved, like the action's own
    environment: dict[str, str] = Field(default_factory=dict)
    pass_environment: list[str] = Field(default_factory=list)
    input_artifacts: list[ArtifactRef] = Field(default_factory=list)
    timeout_seconds: int = 55 * 60
    # The provider whose contract runs it (conveyor.providers); steps recorded before contracts were Commands.
    provider: str = "Commands"
    # A provider's own description of what to undo (CloudFormation: the stack, as JSON; names only, no secrets).
    provider_input: str | None = None
    # The wave of a waved action (`conveyor.waves`) it undoes; each wave registers its own step.
    wave: str | None = Field(default=None, exclude_if=lambda wave: wave is None)


class CompensationState(CamelModel):
    status: CompensationStatus
    attempt: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorDetails | None = None


class BakeStatus(StrEnum):
    BAKING = "Baking"
    PASSED = "Passed"
    FAILED = "Failed"


class BakeState(CamelModel):
    """A bake after a deploy (`conveyor.bake`): the alarms watched until `deadline`, fixed when it began, so a
    replayed or restarted stage ends the same bake at the same time."""

    minutes: float
    alarms: list[str]
    status: BakeStatus = BakeStatus.BAKING
    started_at: datetime
    deadline: datetime
    checked_at: datetime | None = None  # the last look at the alarms
    finished_at: datetime | None = None
    tripped: str | None = None  # "alarm 'x' went ALARM during the bake"


class WaveState(CamelModel):
    """One wave of an action run over targets (`conveyor.waves`): its run of the action's activity, then its bake."""

    name: str
    region: str | None = None
    role_arn: str | None = None
    status: ActionStatus | None = None  # None: not started yet
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: str | None = None
    error: ErrorDetails | None = None
    bake: BakeState | None = None


class ActionState(CamelModel):
    action_name: str
    provider: str
    category: str
    run_order: int = 1
    status: ActionStatus | None = None  # None: not started yet
    attempt: int = 1
    max_attempts: int | None = None  # its declared retry policy's maximumAttempts (None: no declared retries)
    attempts: list[ActionAttempt] = Field(default_factory=list)  # earlier failed attempts
    compensation: CompensationState | None = None  # its rollback commands, once they ran
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: str | None = None
    error: ErrorDetails | None = None
    external_url: str | None = None  # CodePipeline's externalExecutionUrl, or its externalExecutionId when not a URL
    token: str | None = None  # approval token while an approval waits
    approval: ApprovalResult | None = None  # the final decision
    approval_request: ApprovalRequest | None = None
    approvals: list[ApprovalResult] = Field(default_factory=list)  # every accepted decision
    notification_errors: list[str] = Field(default_factory=list)  # notifications that failed (the wait goes on)
    refused_decisions: list[str] = Field(default_factory=list)  # signal decisions that failed a check
    resolved_configuration: dict[str, str] = Field(default_factory=dict)
    output_variables: dict[str, str] = Field(default_factory=dict)
    output_artifacts: list[ArtifactRef] = Field(default_factory=list)
    phases: list[BuildPhase] = Field(default_factory=list)  # a build's phases (CodeBuild)
    review: str | None = None  # changes it prepared for an approval to show (a change set's)
    # What it kept in the artifact store for its compensation (a stack's previous template), succeeded or failed:
    # garbage collection keeps these while the execution is retained. Left out of the state when empty.
    compensation_artifacts: list[ArtifactRef] = Field(default_factory=list, exclude_if=lambda refs: not refs)
    # `conveyor.bake`: the action's bake after it succeeded (a waved action's bakes are its waves'). Left out if none.
    bake: BakeState | None = Field(default=None, exclude_if=lambda bake: bake is None)
    waves: list[WaveState] = Field(default_factory=list, exclude_if=lambda waves: not waves)  # `conveyor.waves`


class RuleState(CamelModel):
    rule_name: str
    provider: str
    status: ConditionStatus
    summary: str | None = None
    opens_at: datetime | None = None  # a DeploymentWindow rule waiting: when the window opens next
    time_zone: str | None = None  # ...and the window's TimeZone, to show that time as the declaration does
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ConditionState(CamelModel):
    """One evaluation of a stage condition (beforeEntry, onSuccess, onFailure) and its rules."""

    kind: ConditionKind
    result: str | None = None  # what a failing condition does: FAIL | SKIP | ROLLBACK
    status: ConditionStatus = ConditionStatus.IN_PROGRESS
    started_at: datetime | None = None
    finished_at: datetime | None = None
    overridden_by: str | None = None
    overridden_at: datetime | None = None
    override_reason: str | None = None
    rules: list[RuleState] = Field(default_factory=list)


class StageAttempt(CamelModel):
    """An earlier attempt of a stage (a retry followed it)."""

    attempt: int
    status: StageStatus | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorDetails | None = None
    retried_by: str | None = None
    retry_mode: str | None = None


class StageState(CamelModel):
    stage_name: str
    status: StageStatus | None = None  # None: not entered yet
    attempt: int = 0
    previous_attempts: list[StageAttempt] = Field(default_factory=list)
    conditions: list[ConditionState] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: ErrorDetails | None = None
    actions: list[ActionState] = Field(default_factory=list)

    def close_unfinished(self, at: datetime, error: ErrorDetails, *, stopped: bool = False) -> bool:
        """See `ExecutionState.close_unfinished`; True when anything changed."""
        open_conditions = [c for c in self.conditions if c.status.is_open]
        running = self.status in (StageStatus.IN_PROGRESS, StageStatus.STOPPING)
        if not (running or open_conditions):
            return False
        condition_end = ConditionStatus.STOPPED if stopped else ConditionStatus.ERRORED
        for condition in open_conditions:
            condition.status, condition.finished_at = condition_end, condition.finished_at or at
            for rule in condition.rules:
                if rule.status == ConditionStatus.IN_PROGRESS:
                    rule.status, rule.finished_at = condition_end, rule.finished_at or at
                    rule.summary = rule.summary or error.message
        for action in self.actions:
            if action.status == ActionStatus.IN_PROGRESS:
                action.status = ActionStatus.ABANDONED if stopped else ActionStatus.FAILED
                action.finished_at, action.error = at, action.error or error
                action.token = None  # an approval that waited is closed with its execution
        self.status = StageStatus.STOPPED if stopped else StageStatus.FAILED
        self.finished_at, self.error = self.finished_at or at, self.error or error
        return True


class ExecutionState(CamelModel):
    pipeline_name: str
    pipeline_version: int = 1
    execution_id: str
    status: ExecutionStatus = ExecutionStatus.IN_PROGRESS
    status_summary: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    trigger: Trigger = Field(default_factory=Trigger)
    started_by: str | None = None
    execution_type: str = "STANDARD"
    variables: dict[str, str] = Field(default_factory=dict)
    source_revisions: list[SourceRevision] = Field(default_factory=list)
    waiting_for_stage: str | None = None  # waiting for the stage's lock or its inbound transition
    waiting_reason: str | None = None  # why, from the coordinator (filled in by the client, not recorded)
    stuck: str | None = None  # "stuck: workflow task failing since ...": from Temporal (the client, not recorded)
    rollback_of: str | None = None  # ROLLBACK executions: the execution whose stage inputs they reuse
    rollback_stage: str | None = None  # ROLLBACK executions: the stage they re-run
    rollback_execution: str | None = None  # a failed execution: the automatic rollback it started
    stages: list[StageState] = Field(default_factory=list)

    def stage(self, name: str) -> StageState | None:
        return next((s for s in self.stages if s.stage_name == name), None)

    def close_unfinished(self, at: datetime, error: ErrorDetails, *, stopped: bool = False) -> list[StageState]:
        """End what was still running when the execution ended without finishing it (a failure it
        received, or Temporal terminating it): stages and actions become Failed (Stopped and Abandoned
        when `stopped`), conditions and rules under way Errored (Stopped), each with an end time, so
        nothing shows InProgress with a growing duration. Returns the stages it changed."""
        changed = []
        for stage in self.stages:
            if stage.close_unfinished(at, error, stopped=stopped):
                changed.append(stage)
        return changed


# --- State changes ---------------------------------------------------------------------------------


class TransitionScope(StrEnum):
    PIPELINE = "PIPELINE"
    STAGE = "STAGE"
    ACTION = "ACTION"


class Transition(CamelModel):
    """One status change of an execution, a stage or an action, as the execution's recorder saw it
    (diagnostic query `transitions`; issue 18 turns these into events). Kept out of the state and memo."""

    scope: TransitionScope
    stage_name: str | None = None
    action_name: str | None = None
    from_status: ExecutionStatus | StageStatus | ActionStatus | None = None  # None: not started yet
    to_status: ExecutionStatus | StageStatus | ActionStatus
    at: datetime
    reason: str | None = None


# --- Stage workflow input and result --------------------------------------------------------------


class StopRequest(CamelModel):
    """Update `stop` on an execution (and signal `stop` on its running stage)."""

    reason: str = Field(default="", max_length=512)
    abandon: bool = False  # False: let running actions finish; True: cancel them at once
    by: str | None = None


class StageRetryRequest(CamelModel):
    """Update `retry_stage` on a failed execution."""

    stage_name: str
    retry_mode: str = "FAILED_ACTIONS"  # or ALL_ACTIONS
    by: str | None = None


class StageInput(CamelModel):
    pipeline_name: str
    execution_id: str
    stage: dict[str, Any]  # the stage's declaration, already validated by the execution workflow
    attempt: int = 1
    pipeline_version: int = 1  # for its actions' events
    event_sinks: list[SinkConfig] = Field(default_factory=list)  # the pipeline's own sinks (conveyor.events)
    retry_mode: RetryMode | None = None  # FAILED_ACTIONS keeps the actions that succeeded in `previous`
    previous: StageResult | None = None
    started_by: str | None = None  # for separation of duties in approvals
    source_authors: list[str] = Field(default_factory=list)
    source_revisions_seen: list[SourceRevision] = Field(default_factory=list)
    artifact_digests: dict[str, str] = Field(default_factory=dict)  # every artifact so far, for approvals
    reviews: list[str] = Field(default_factory=list)  # earlier stages' prepared changes, for approvals
    variables: dict[str, dict[str, str]] = Field(default_factory=dict)  # namespace -> key -> value
    artifacts: list[ArtifactRef] = Field(default_factory=list)  # only those the stage consumes
    source_revisions: list[SourceRevisionOverride] = Field(default_factory=list)
    default_heartbeat_seconds: int = 30
    pipeline_role_arn: str | None = None  # the declaration's `roleArn` (a worker configured for AWS assumes it)
    artifact_stores: list[ArtifactLocation] = Field(default_factory=list)  # the declaration's S3 stores, if any
    codebuild_runner: str | None = None  # the pipeline's `conveyor.codebuildRunner`


class StageResult(CamelModel):
    state: StageState
    output_variables: dict[str, dict[str, str]] = Field(default_factory=dict)  # namespace -> vars
    output_artifacts: list[ArtifactRef] = Field(default_factory=list)
    source_revisions: list[SourceRevision] = Field(default_factory=list)
    compensations: list[CompensationStep] = Field(default_factory=list)
    # The stage's action events not yet confirmed delivered when it ended (its pending ones and the batch in flight):
    # the execution sends them, under the stage's origin and ids, before the stage's own event (issue 18).
    undelivered_events: list[PipelineEvent] = Field(default_factory=list)


class RollbackSpec(CamelModel):
    """What a ROLLBACK execution re-runs: one stage, with the inputs of an earlier successful execution."""

    stage_name: str
    target_execution_id: str
    failed_execution_id: str | None = None  # automatic rollbacks: the execution that failed
    variables: dict[str, dict[str, str]] = Field(default_factory=dict)  # namespace -> outputs before the stage
    artifacts: list[ArtifactRef] = Field(default_factory=list)
    source_revisions: list[SourceRevision] = Field(default_factory=list)


class RollbackRequest(CamelModel):
    """Update `rollback_stage` on a pipeline's coordinator (manual rollback)."""

    stage_name: str
    target_execution_id: str
    by: str | None = None


class ManualRollbackStart(CamelModel):
    """Input of the `start_manual_rollback` activity."""

    pipeline_name: str
    digest: str  # the current version's declaration
    version: int
    request: RollbackRequest


class RollbackStart(CamelModel):
    """Input of the `start_rollback` activity (automatic rollback after onFailure: ROLLBACK)."""

    pipeline: dict[str, Any]
    stage_name: str
    target_execution_id: str
    failed_execution_id: str
    started_by: str | None = None


# --- The per-pipeline coordinator (`Pipeline` workflow) ---------------------------------------------


class ExecutionSlot(CamelModel):
    """An execution holding or waiting for a stage."""

    execution_id: str
    workflow_id: str
    started_at: datetime  # the execution's start: in SUPERSEDED mode the newer one wins
    pipeline_version: int = 1
    arrived_at: datetime | None = None


class StageRelease(CamelModel):
    """Signal `release_stage` (execution -> coordinator): I left this stage (or gave up waiting)."""

    stage_name: str
    execution_id: str
    outcome: ReleaseOutcome
    pipeline_version: int = 1


class StageEntryRequest(CamelModel):
    """Update `enter_stage` or signal `request_entry` (execution -> coordinator): let me into this stage."""

    stage_name: str
    execution: ExecutionSlot
    execution_mode: ExecutionMode = ExecutionMode.SUPERSEDED  # the execution's pinned declaration decides
    # The stage the execution leaves on its way in (one message per stage boundary), handled first.
    leaving: StageRelease | None = None
    # A PARALLEL execution that found the stage's inbound transition disabled: hold it until enabled.
    # (PARALLEL executions ask only then; a PARALLEL request without it records only the fact.)
    hold_at_transition: bool = False


class StageEntryDecision(CamelModel):
    """Signal `stage_decision` (coordinator -> execution): enter, or you were superseded."""

    stage_name: str
    decision: EntryDecision
    superseded_by: str | None = None


class TransitionChange(CamelModel):
    """Updates `disable_transition` / `enable_transition` on the coordinator."""

    stage_name: str
    reason: str = Field(default="", max_length=300)
    by: str | None = None


class TransitionState(CamelModel):
    enabled: bool = True
    reason: str | None = None
    changed_by: str | None = None
    changed_at: datetime | None = None


class StageFact(CamelModel):
    execution_id: str
    pipeline_version: int
    at: datetime


class StageLock(CamelModel):
    stage_name: str
    holder: ExecutionSlot | None = None
    waiting: list[ExecutionSlot] = Field(default_factory=list)
    transition: TransitionState = Field(default_factory=TransitionState)
    held: list[ExecutionSlot] = Field(default_factory=list)  # PARALLEL executions held at a disabled transition
    last_succeeded: StageFact | None = None
    newest_entered: StageFact | None = None


class PipelineVersion(CamelModel):
    version: int
    digest: str  # of the canonical declaration JSON, stored in the document store
    applied_at: datetime
    applied_by: str | None = None
    stage_names: list[str] = Field(default_factory=list)


class ApplyRequest(CamelModel):
    """Update `apply` on the coordinator: register a new version (a no-op if unchanged)."""

    pipeline: dict[str, Any]
    by: str | None = None


class ApplyResult(CamelModel):
    version: PipelineVersion
    changed: bool


class StageFactsRequest(CamelModel):
    """Input of the `stage_facts` local activity: the coordinator's exact facts, or, for a PARALLEL
    execution (which no longer reports to the coordinator), visibility's: the newest execution started
    after `started_after` that entered the stage."""

    pipeline_name: str
    stage_name: str
    execution_mode: ExecutionMode = ExecutionMode.SUPERSEDED
    started_after: datetime | None = None


class StoreDocumentInput(CamelModel):
    data: str  # canonical JSON text
    digest: str


class CoordinatorState(CamelModel):
    pipeline_name: str
    execution_mode: ExecutionMode = ExecutionMode.SUPERSEDED
    versions: list[PipelineVersion] = Field(default_factory=list)
    stages: list[StageLock] = Field(default_factory=list)
    handled: int = 0  # messages handled by this run, for the continue-as-new knob
    runs: int = 1  # how many runs the coordinator has had (continue-as-new count + 1)

    def stage(self, name: str) -> StageLock:
        found = next((s for s in self.stages if s.stage_name == name), None)
        if found is None:
            found = StageLock(stage_name=name)
            self.stages.append(found)
        return found

    @property
    def current(self) -> PipelineVersion | None:
        return self.versions[-1] if self.versions else None


class CoordinatorInput(CamelModel):
    pipeline_name: str
    execution_mode: ExecutionMode = ExecutionMode.SUPERSEDED
    continue_as_new_every: int = Field(default=500, ge=1)  # messages handled per run
    liveness_check_seconds: float = Field(default=2.0, gt=0)  # first check for an ended lock holder
    liveness_check_max_seconds: float = Field(default=60.0, gt=0)  # the interval doubles up to this
    # With nothing to keep (no version, lock, waiter, held execution or disabled transition) for this
    # long, it saves its state and closes; the next message starts it again from that state.
    idle_minutes: float = Field(default=10.0, gt=0)
    state: CoordinatorState | None = None  # carried across continue-as-new


class CoordinationRequest(CamelModel):
    """Input of the `coordinate` local activity: deliver a message to the pipeline's coordinator,
    starting the coordinator first if it does not exist yet (signal-with-start, or update-with-start
    for `enter_stage`, whose answer comes back at once when the stage is free)."""

    pipeline_name: str
    execution_mode: ExecutionMode
    signal: Coordination
    entry: StageEntryRequest | None = None
    release: StageRelease | None = None


StageInput.model_rebuild()
ExecutionInput.model_rebuild()


class TriggerFire(CamelModel):
    """Input of the `PipelineTrigger` workflow that a pipeline's schedules start."""

    pipeline_name: str
    kind: str  # "Schedule" | "Poll"


class TriggerSync(CamelModel):
    """Input of the `sync_triggers` activity: make the pipeline's Temporal Schedules match its declaration."""

    pipeline_name: str
    cron: str | None = None
    time_zone: str = "UTC"
    poll_seconds: int | None = None


class ConditionOverride(CamelModel):
    """Update `override_condition` on an execution: let it past a stage condition."""

    stage_name: str
    condition_type: str = "BEFORE_ENTRY"  # or ON_SUCCESS
    reason: str = ""
    by: str | None = None


class WindowCheck(CamelModel):
    """Input of the `deployment_window` local activity: is `now` inside the window, and when does it open?"""

    cron: str
    time_zone: str = "UTC"
    now: datetime  # workflow.now(): the time-skipping server's clock, never the wall clock


class WindowAnswer(CamelModel):
    inside: bool
    opens_at: datetime | None = None


class RegexCheck(CamelModel):
    pattern: str
    value: str


class ApprovalNotice(CamelModel):
    """Input of the `notify_approval` activity: CodePipeline's approval notification, and where to send it."""

    kind: NoticeKind
    pipeline_name: str
    execution_id: str
    stage_name: str
    action_name: str
    token: str
    expires: datetime
    custom_data: str | None = None
    external_entity_link: str | None = None
    approvers: list[str] = Field(default_factory=list)
    quorum: int = 1
    started_by: str | None = None
    source_revisions: list[str] = Field(default_factory=list)
    artifacts: dict[str, str] = Field(default_factory=dict)
    notification_arn: str | None = None  # SNS topic (the action's NotificationArn)
    webhook_url: str | None = None
    webhook_secret_env: str | None = None
    # Slack: the channel to post to, and once posted the message to update.
    slack_channel: str | None = None
    slack_message: SlackMessageRef | None = None
    revisions: list[SourceRevision] = Field(default_factory=list)
    authors: list[str] = Field(default_factory=list)
    reviews: list[str] = Field(default_factory=list)  # changes prepared earlier in the execution (change sets)
    approvals: list[ApprovalResult] = Field(default_factory=list)  # accepted so far (progress, outcome)
    outcome: ApprovalOutcome | None = None  # set when closed
