"""Pydantic models of CodePipeline's pipeline declaration (pipeline type V2).

Field names are CodePipeline's own (camelCase). Unknown fields are refused, so a typo such as
`runorder` is reported instead of silently ignored. What CodePipeline lacks lives in one
extension place: the `conveyor` object on a pipeline, stage or action (see the *Extension models).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue

from conveyor.alarms import MAX_ALARMS, AlarmState
from conveyor.event_sinks_config import EventsConfig
from conveyor.interface import ActionCategory, ActionOwner, ExecutionMode, RetryMode
from conveyor.providers.registry import PROVIDERS

# Declared here too: the declaration's own vocabulary.
__all__ = ["ActionCategory", "ActionOwner", "ExecutionMode", "RetryMode"]


def as_codepipeline_string(value: Any) -> Any:
    """A YAML/JSON boolean or number where CodePipeline takes a string, as CodePipeline reads it:
    `true` -> "true", `1` -> "1". Anything else is left for the field's own check."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _configuration_strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: as_codepipeline_string(item) for key, item in value.items()}
    return value


# What an editor may accept where CodePipeline takes a string.
_STRINGLY_SCHEMA: dict[str, Any] = {"type": ["string", "boolean", "number"]}
# A configuration map: string values, written as strings, booleans or numbers.
Configuration = Annotated[
    dict[str, str],
    BeforeValidator(_configuration_strings),
    WithJsonSchema({"type": "object", "additionalProperties": _STRINGLY_SCHEMA}),
]


class DeclarationModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


PipelineName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9.@\-_]+$")]
StageOrActionName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9.@\-_]+$")]
ArtifactName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[a-zA-Z0-9_\-]+$")]
VariableName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9@\-_]+$")]
NamespaceName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9@\-_]+$")]


class FailureResult(StrEnum):
    ROLLBACK = "ROLLBACK"
    FAIL = "FAIL"
    RETRY = "RETRY"
    SKIP = "SKIP"


class RollbackStrategy(StrEnum):
    """How a failed stage whose result is ROLLBACK is undone: one way, never both."""

    # CodePipeline's: a ROLLBACK execution redeploys the last release that succeeded in the stage; where none
    # can (a first release, another pipeline version, a PARALLEL pipeline), the stage's compensations run.
    REDEPLOY = "REDEPLOY"
    # The saga: the failed stage's compensations (and, with compensateEarlierStages, the earlier stages').
    COMPENSATE = "COMPENSATE"


class EnvironmentVariableType(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SECRETS_MANAGER = "SECRETS_MANAGER"


# --- Conveyor's extension place ------------------------------------------------------------------


class RetryPolicyExtension(DeclarationModel):
    """Activity retry policy for an action (used by the failure-handling work)."""

    maximum_attempts: int = Field(default=1, ge=1, le=100)
    initial_interval_seconds: float = Field(default=1.0, gt=0)
    backoff_coefficient: float = Field(default=2.0, ge=1)
    maximum_interval_seconds: float | None = Field(default=None, gt=0)


DECISION_SOURCES = ("cli", "temporal", "signal", "slack", "api", "console")


class ApprovalPolicy(DeclarationModel):
    """`conveyor.approval` on a Manual action: who may decide, how many must approve, from where."""

    approvers: list[Annotated[str, StringConstraints(min_length=1, max_length=200)]] = Field(default_factory=list)
    quorum: int = Field(default=1, ge=1, le=20)
    allow_starter: bool = False  # the identity that started the execution may approve
    allow_author: bool = False  # the source revision's author may approve
    sources: list[str] | None = None  # channels a decision may come from; None: any
    reminder_minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 7)  # re-notify while it waits
    notify_webhook: str | None = Field(default=None, pattern=r"^https?://")  # HMAC-signed JSON POST
    notify_webhook_secret_env: str | None = None  # the worker variable holding that webhook's HMAC key
    slack_channel: str | None = None  # the channel id the request message is posted to (C0123ABCD)


class CodeBuildVariable(DeclarationModel):
    """One of the project's environment variables (CodeBuild's EnvironmentVariable: name, value, type)."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    value: str
    type: Literal["PLAINTEXT", "PARAMETER_STORE", "SECRETS_MANAGER"] = "PLAINTEXT"


class CodeBuildExtension(DeclarationModel):
    """`conveyor.codebuild` on a CodeBuild action: which runner, and a buildspec other than the source's."""

    runner: Literal["local", "aws"] | None = None  # None: the pipeline's `conveyor.codebuildRunner`, else local
    buildspec: Annotated[str, StringConstraints(min_length=1, max_length=100_000)] | None = None  # inline YAML
    buildspec_path: str | None = None  # a path in the primary input artifact (default buildspec.yml)
    # The CodeBuild project's own environment variables (what the project defines in AWS), below the action's
    # EnvironmentVariables and above the buildspec's env.
    environment: list[CodeBuildVariable] = Field(default_factory=list, max_length=200)


MAX_BAKE_MINUTES = 60 * 24 * 7  # a week, as the CloudWatchAlarm rule's WaitTime
MAX_WAVES = 20


class BakeExtension(DeclarationModel):
    """`conveyor.bake` on a deploy action: after it succeeds, wait `minutes` watching `alarms` (with the action's
    roleArn and region); an alarm in one of `alarmStates` during the wait fails the action at once."""

    minutes: float = Field(
        gt=0, le=MAX_BAKE_MINUTES, description="How long to bake, in minutes; a decimal is allowed (0.1 is 6 s)"
    )
    alarms: list[Annotated[str, StringConstraints(min_length=1, max_length=255)]] = Field(
        min_length=1, max_length=MAX_ALARMS, description="CloudWatch alarm names (metric or composite) to watch"
    )
    alarm_states: list[AlarmState] = Field(
        default_factory=lambda: [AlarmState.ALARM], min_length=1, description="The states that fail the bake"
    )


class Wave(DeclarationModel):
    """One target of a waved action (`conveyor.waves`): the action run again with these overrides."""

    name: StageOrActionName
    region: str | None = None  # default: the action's
    role_arn: str | None = None  # default: the action's
    configuration: Configuration = Field(
        default_factory=dict, description="Keys of the action's configuration overridden for this wave"
    )


class ActionExtension(DeclarationModel):
    """`conveyor:` on an action: what CodePipeline's declaration cannot say."""

    timeout_minutes: int | None = Field(default=None, ge=1, le=86_400)
    heartbeat_timeout_seconds: int | None = Field(default=None, ge=1, le=3_600)
    pass_environment: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        default_factory=list
    )
    retry: RetryPolicyExtension | None = None
    rollback: list[str] = Field(default_factory=list, max_length=50)
    approval: ApprovalPolicy | None = None
    # A CodeBuild project's inline buildspec, carried over by `conveyor import` from the project defined beside
    # the pipeline (CloudFormation `Source.BuildSpec`, Terraform `source { buildspec }`): what the local CodeBuild
    # runner runs for this action instead of the source's buildspec.yml.
    buildspec: Annotated[str, StringConstraints(min_length=1, max_length=100_000)] | None = None
    codebuild: CodeBuildExtension | None = None
    bake: BakeExtension | None = None
    waves: list[Wave] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_WAVES,
        description=(
            "Run this deploy action over an ordered list of targets, a wave at a time, each baked (conveyor.bake) "
            "before the next; names unique"
        ),
    )


class StageExtension(DeclarationModel):
    """`conveyor:` on a stage."""

    automatic_retries: int = Field(default=1, ge=0, le=10)  # for onFailure RETRY (CodePipeline: 1)


class ScheduleExtension(DeclarationModel):
    """A cron schedule that starts the pipeline (a Temporal Schedule, pausable with `temporal schedule`)."""

    # A 5-field cron (minute hour day-of-month month day-of-week), e.g. "0 9 * * 1-5", or @daily/@hourly.
    cron: Annotated[str, StringConstraints(pattern=r"^(@\w+|\S+( \S+){4})$", max_length=200)]
    time_zone: str = "UTC"


class PollExtension(DeclarationModel):
    """Poll the Git source action's repository and branch for new commits (CodePipeline's PollForSourceChanges)."""

    interval_seconds: int = Field(default=60, ge=10, le=86_400)


# A failed stage can be retried for 7 days by default, as CodePipeline allows until a newer execution passes it.
DEFAULT_RETRY_WINDOW_MINUTES = 7 * 24 * 60
# How to allow a retry that was refused because the execution's retry window was closed (or 0).
RETRY_WINDOW_ADVICE = (
    "a failed execution stays open for `conveyor retry` during its pipeline's `conveyor.retryWindowMinutes` "
    f"(default {DEFAULT_RETRY_WINDOW_MINUTES}, 7 days; 0 closes it at once): set e.g. "
    "`conveyor: {retryWindowMinutes: 10080}` in the declaration for the executions to come, "
    "and start a new execution for this one"
)


class PipelineExtension(DeclarationModel):
    """`conveyor:` on the pipeline."""

    schedule: ScheduleExtension | None = None
    poll: PollExtension | None = None

    heartbeat_timeout_seconds: int = Field(default=30, ge=1, le=3_600)
    # How long a failed execution stays open for `conveyor retry` (its PipelineStatus is Failed meanwhile;
    # the wait is a durable timer, which costs nothing); 0 closes it at once.
    retry_window_minutes: int = Field(default=DEFAULT_RETRY_WINDOW_MINUTES, ge=0, le=60 * 24 * 30)
    rollback_strategy: RollbackStrategy = Field(
        default=RollbackStrategy.REDEPLOY,
        description=(
            "How a ROLLBACK result undoes a failed stage, one way and never both. REDEPLOY (CodePipeline's): a "
            "ROLLBACK execution redeploys the last release that succeeded in the stage; where none can (a first "
            "release, a PARALLEL pipeline) the stage's compensations run instead. COMPENSATE: the compensations "
            "(conveyor.rollback and each provider's undo) always, no ROLLBACK execution."
        ),
    )
    compensate_earlier_stages: bool = Field(
        default=False,
        description=(
            "A saga across stages: when a stage fails, the stages completed before it are compensated too, in "
            "reverse order (a ROLLBACK result then compensates rather than redeploying)."
        ),
    )
    # The CodeBuild runner of the pipeline's CodeBuild actions that name none (`conveyor.codebuild.runner`).
    codebuild_runner: Literal["local", "aws"] | None = None
    # The pipeline's own event sinks (README "Events"), besides the worker's global ones (CONVEYOR_EVENTS_CONFIG).
    events: EventsConfig | None = None


# --- CodePipeline's own declaration --------------------------------------------------------------


class ActionTypeId(DeclarationModel):
    category: ActionCategory
    owner: ActionOwner
    # Examples, not an enum: validation names an unknown provider and what it may have meant.
    provider: Annotated[str, StringConstraints(min_length=1, max_length=35), Field(examples=list(PROVIDERS))]
    version: Annotated[str, StringConstraints(min_length=1, max_length=9)] = "1"


class InputArtifact(DeclarationModel):
    name: ArtifactName


class OutputArtifact(DeclarationModel):
    name: ArtifactName
    files: list[str] | None = Field(default=None, min_length=1, max_length=10)


class EnvironmentVariable(DeclarationModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
    value: Annotated[
        str,
        StringConstraints(max_length=2_000),
        BeforeValidator(as_codepipeline_string),
        WithJsonSchema(_STRINGLY_SCHEMA | {"maxLength": 2_000}),
    ]
    type: EnvironmentVariableType = EnvironmentVariableType.PLAINTEXT


class Action(DeclarationModel):
    name: StageOrActionName
    action_type_id: ActionTypeId
    run_order: int = Field(default=1, ge=1, le=999)
    configuration: Configuration = Field(default_factory=dict)
    commands: list[Annotated[str, StringConstraints(min_length=1, max_length=1_000)]] | None = Field(
        default=None, min_length=1, max_length=50
    )
    input_artifacts: list[InputArtifact] = Field(default_factory=list)
    output_artifacts: list[OutputArtifact] = Field(default_factory=list)
    output_variables: list[VariableName] = Field(default_factory=list, max_length=15)
    environment_variables: list[EnvironmentVariable] = Field(default_factory=list, max_length=10)
    namespace: NamespaceName | None = None
    role_arn: str | None = None
    region: str | None = None
    timeout_in_minutes: int | None = Field(default=None, ge=5, le=86_400)
    conveyor: ActionExtension = Field(default_factory=ActionExtension)

    @model_validator(mode="before")
    @classmethod
    def _expand_shorthand(cls, data: Any) -> Any:
        """`provider: Commands` is shorthand for the canonical `actionTypeId`."""
        if isinstance(data, dict) and "provider" in data and "actionTypeId" not in data:
            data = dict(data)
            provider = data.pop("provider")
            data["actionTypeId"] = shorthand_action_type(provider, data.pop("category", None))
        return data

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The schema accepts the shorthand too (`provider`, optional `category`), so an editor
        does not flag the declarations that Conveyor itself accepts."""
        json_schema = handler.resolve_ref_schema(super().__get_pydantic_json_schema__(core_schema, handler))
        json_schema["properties"]["provider"] = {
            "type": "string",
            "description": f"Shorthand for actionTypeId ({', '.join(PROVIDERS)}); give this or actionTypeId",
            "examples": list(PROVIDERS),  # examples, not an enum: validation names an unknown provider itself
        }
        json_schema["properties"]["category"] = {
            "enum": [c.value for c in ActionCategory],
            "description": "With 'provider': the category, when not the provider's usual one",
        }
        json_schema["required"] = [name for name in json_schema.get("required", []) if name != "actionTypeId"]
        json_schema["oneOf"] = [{"required": ["actionTypeId"]}, {"required": ["provider"]}]
        json_schema["dependentRequired"] = {"category": ["provider"]}
        return json_schema


class RuleTypeId(DeclarationModel):
    category: str = "Rule"
    owner: str = "AWS"
    provider: str
    version: str = "1"


class Rule(DeclarationModel):
    name: StageOrActionName
    rule_type_id: RuleTypeId
    configuration: Configuration = Field(default_factory=dict)
    commands: list[str] | None = None
    input_artifacts: list[InputArtifact] = Field(default_factory=list)
    region: str | None = None
    role_arn: str | None = None
    timeout_in_minutes: int | None = None


class Condition(DeclarationModel):
    result: str | None = None
    rules: list[Rule] = Field(min_length=1, max_length=5)


class RetryConfiguration(DeclarationModel):
    retry_mode: RetryMode = RetryMode.FAILED_ACTIONS


class FailureConditions(DeclarationModel):
    result: FailureResult | None = None
    retry_configuration: RetryConfiguration | None = None
    conditions: list[Condition] = Field(default_factory=list)


class SuccessConditions(DeclarationModel):
    conditions: list[Condition] = Field(min_length=1)


class BeforeEntryConditions(DeclarationModel):
    conditions: list[Condition] = Field(min_length=1)


class Stage(DeclarationModel):
    name: StageOrActionName
    actions: list[Action] = Field(min_length=1, max_length=50)
    on_failure: FailureConditions | None = None
    on_success: SuccessConditions | None = None
    before_entry: BeforeEntryConditions | None = None
    blockers: list[dict[str, Any]] | None = None
    conveyor: StageExtension = Field(default_factory=StageExtension)


class PipelineVariable(DeclarationModel):
    name: VariableName
    default_value: str | None = None
    description: str | None = None


class GitFilter(DeclarationModel):
    includes: list[str] = Field(default_factory=list)
    excludes: list[str] = Field(default_factory=list)


class GitPushFilter(DeclarationModel):
    tags: GitFilter | None = None
    branches: GitFilter | None = None
    file_paths: GitFilter | None = None


class GitPullRequestFilter(DeclarationModel):
    events: list[str] = Field(default_factory=list)
    branches: GitFilter | None = None
    file_paths: GitFilter | None = None


class GitConfiguration(DeclarationModel):
    source_action_name: StageOrActionName
    push: list[GitPushFilter] = Field(default_factory=list)
    pull_request: list[GitPullRequestFilter] = Field(default_factory=list)


class PipelineTrigger(DeclarationModel):
    provider_type: str
    git_configuration: GitConfiguration


class ArtifactStore(DeclarationModel):
    type: str
    location: str
    encryption_key: dict[str, Any] | None = None


class Pipeline(DeclarationModel):
    name: PipelineName
    stages: list[Stage] = Field(min_length=1, max_length=50)
    execution_mode: ExecutionMode = ExecutionMode.SUPERSEDED
    pipeline_type: str | None = None
    variables: list[PipelineVariable] = Field(default_factory=list, max_length=50)
    triggers: list[PipelineTrigger] = Field(default_factory=list)
    role_arn: str | None = None
    artifact_store: ArtifactStore | None = None
    artifact_stores: dict[str, ArtifactStore] | None = None
    version: int | None = None
    conveyor: PipelineExtension = Field(default_factory=PipelineExtension)

    def all_actions(self) -> list[tuple[int, int, Stage, Action]]:
        return [
            (si, ai, stage, action) for si, stage in enumerate(self.stages) for ai, action in enumerate(stage.actions)
        ]


def shorthand_action_type(provider: Any, category: Any) -> Any:
    """`provider: X` -> the canonical actionTypeId: the provider's contract's default category and owner."""
    # A provider that is not a string gets the defaults too, so only the provider itself is reported.
    contract = PROVIDERS.get(provider) if isinstance(provider, str) else None
    if contract is None:
        # Unknown provider: keep what we can, so validation reports the provider by name.
        return {"category": category or "Build", "owner": "Custom", "provider": provider}
    return {
        "category": category or contract.default_category.value,
        "owner": contract.owner.value,
        "provider": provider,
    }
