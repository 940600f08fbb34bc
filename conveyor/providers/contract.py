"""The provider contract: everything Conveyor needs to know about an action provider, as data.

Pure and sandbox-safe (the workflows import it): no I/O, no activity code. A provider's activities live in
activities/providers/, named here by their activity name and their module's dotted path, which only the
worker (the composition root) imports.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from conveyor.aws.identity import AwsIdentity, action_identity
from conveyor.interface import ActionCategory, ActionOwner, RevisionType
from conveyor.model import ActionContext, ArtifactRef, CamelModel, CompensationStep, SourceRevision

if TYPE_CHECKING:
    from conveyor.spec.declaration import Action

# Failures of any activity that a declared `conveyor.retry` retries: a lost worker's timeout, an error
# the activity did not classify. A provider adds its own transient errors to these.
INFRASTRUCTURE_FAILURES = frozenset({"ActionTimeout", "ActionError"})


class OutputVariables(StrEnum):
    """How a provider's output variables are known at declaration time."""

    FIXED = "fixed"  # the contract lists them (Git)
    DYNAMIC = "dynamic"  # whatever the action's `outputVariables` lists (Commands)
    CONFIGURATION = "configuration"  # its configuration keys (Noop)
    # Known only when the action runs (CodeBuild's buildspec `env.exported-variables`): a reference to any key of
    # its namespace is accepted at declaration time, and fails the referring action if the run did not export it.
    RUN_TIME = "run_time"


class KeyType(StrEnum):
    """A configuration value's type. CodePipeline's configuration values are strings: a typed key checks the
    string's form ("true", "15"), it does not change what the declaration holds."""

    STRING = "string"
    BOOLEAN = "boolean"  # true or false, any case
    INTEGER = "integer"  # decimal digits


@dataclass(frozen=True)
class ConfigurationKey:
    name: str
    required: bool = False
    type: KeyType = KeyType.STRING
    # A credential (GitHub's OAuthToken): the declaration may hold only `****`, a variable reference or a
    # `{{resolve:...}}` reference, never the secret itself (it would be recorded in every execution's history).
    secret: bool = False

    def problem(self, value: str) -> str | None:
        """Why a (literal, unresolved) value does not fit this key's type, or None."""
        if "#{" in value:  # a variable reference: known at run time only
            return None
        if self.type == KeyType.BOOLEAN and value.lower() not in ("true", "false"):
            return f"'{value}' is not a boolean; use true or false"
        if self.type == KeyType.INTEGER and not value.isdigit():
            return f"'{value}' is not a whole number"
        return None


@dataclass(frozen=True)
class ArtifactLimits:
    min_inputs: int = 0
    max_inputs: int | None = None  # None: as many as the declaration lists
    max_outputs: int = 5


@dataclass(frozen=True)
class ActionRequest:
    """A resolved action, as the stage hands it to a contract's input builder. `resolve` and `artifact`
    are the stage's own (deterministic): a builder calls them only for what its activity takes, so an
    unresolvable variable or a missing artifact fails the action exactly where and when it did before."""

    action: Action
    context: ActionContext
    configuration: dict[str, str]  # resolved
    timeout: timedelta  # the action's own: declared, or the contract's default
    revision_override: str | None  # the execution's source revision override for this action
    resolve: Callable[[str], str]
    artifact: Callable[[str], ArtifactRef]
    pipeline_role_arn: str | None = None  # the pipeline's `roleArn` (used only by a worker configured for AWS)
    revision_type: str | None = None  # the override's revisionType
    codebuild_runner: str | None = None  # the pipeline's default CodeBuild runner
    source_revisions: tuple[SourceRevision, ...] = ()  # the execution's source revisions so far

    def aws_identity(self) -> AwsIdentity:
        """The identity an AWS-calling action runs as (role ARNs and region: no credentials)."""
        return action_identity(self.context, self.action.role_arn, self.pipeline_role_arn, self.action.region)


@dataclass(frozen=True)
class ProviderActivity:
    """The activity that runs an action of the provider."""

    name: str  # its activity type; recorded in histories: never rename
    input_type: type[BaseModel]
    build_input: Callable[[ActionRequest], BaseModel]  # pure
    # The module in activities/providers/ whose `activities(settings, store)` returns the activity functions.
    module: str
    # Added to the action's timeout for the activity's start-to-close timeout, when the activity enforces the
    # action's timeout itself and Temporal's only catches a lost worker.
    timeout_margin: timedelta = timedelta(0)


@dataclass(frozen=True)
class Compensation:
    """What undoes an action of the provider: registered (as a CompensationStep, kept in the stage's result)
    when the action starts, run by the execution with `activity` when the stage is rolled back."""

    activity: str
    input_type: type[BaseModel]
    # (request, the action's activity input, sequence) -> the step, or None when the action declares none.
    register: Callable[[ActionRequest, BaseModel, int], CompensationStep | None]
    build_input: Callable[[CompensationStep, ActionContext], BaseModel]  # pure
    timeout_margin: timedelta = timedelta(0)
    takes_rollback_commands: bool = False  # declared with the action's `conveyor.rollback`


_Target = TypeVar("_Target", bound=BaseModel)


def provider_step(
    request: ActionRequest, sequence: int, provider: str, target: BaseModel, timeout_seconds: int
) -> CompensationStep:
    """The compensation step of a provider that describes what to undo as its own model (`target`: names and the
    identity, never secrets), kept as JSON in the step."""
    return CompensationStep(
        stage_name=request.context.stage_name,
        action_name=request.action.name,
        sequence=sequence,
        commands=[],
        provider_input=target.model_dump_json(by_alias=True),
        timeout_seconds=timeout_seconds,
        provider=provider,
    )


def provider_target(step: CompensationStep, model: type[_Target]) -> _Target:
    """What `provider_step` kept: the provider's model of what to undo."""
    assert step.provider_input is not None, f"a {step.provider} compensation step carries what it undoes"
    return model.model_validate_json(step.provider_input)


@dataclass(frozen=True)
class ActivityCall:
    """An activity to run: its name, its input and its start-to-close timeout."""

    activity: str
    input: BaseModel
    timeout: timedelta


class PollRequest(CamelModel):
    """What a source's poll reads: the action's configuration (pipeline variables at their defaults)."""

    pipeline_name: str
    action_name: str
    configuration: dict[str, str]
    identity: AwsIdentity | None = None  # AWS sources: the role and region to read with


class PolledRevision(CamelModel):
    """A source's current revision, as a poll found it: an unseen one starts an execution."""

    revision_id: str
    detail: str  # the trigger's detail: "main at 1a2b3c4d5e6f", "s3://bucket/key version ..."


@dataclass(frozen=True)
class SourcePoll:
    """How a source is polled (PollForSourceChanges): `function` in the provider's activities module,
    `async def <function>(settings, PollRequest) -> PolledRevision`, reads its current revision; the execution
    started for it carries that revision as an override of `revision_type`."""

    revision_type: RevisionType
    function: str = "current_revision"


@dataclass(frozen=True)
class ProviderContract:
    name: str  # actionTypeId.provider
    summary: str  # README's "what it does"; `{variables}` stands for the fixed output variables
    categories: tuple[ActionCategory, ...]
    default_category: ActionCategory  # for the `provider:` shorthand
    owner: ActionOwner  # for the `provider:` shorthand
    configuration: tuple[ConfigurationKey, ...] | None  # None: any key (Noop)
    default_timeout: timedelta
    output_variables: OutputVariables = OutputVariables.FIXED
    fixed_outputs: tuple[str, ...] = ()  # with OutputVariables.FIXED
    needs_commands: bool = False  # True: 1 to 50 `commands`; False: none allowed
    artifacts: ArtifactLimits = field(default_factory=ArtifactLimits)
    heartbeat_timeout: timedelta | None = None  # None: the pipeline's `conveyor.heartbeatTimeoutSeconds`
    transient_errors: frozenset[str] = frozenset()  # error types a declared `conveyor.retry` retries
    activity: ProviderActivity | None = None  # None only for a provider that waits for approval
    compensation: Compensation | None = None
    waits_for_approval: bool = False  # Manual: a durable wait for a decision, not an activity
    # Output variables that name who wrote a source revision (a Git source's AuthorEmail): separation of duties.
    author_variables: tuple[str, ...] = ()
    # Problems of a configuration that the keys' types cannot say (a key required by another's value): (key, why).
    configuration_check: Callable[[Mapping[str, str]], list[tuple[str, str]]] | None = None
    # Problems of the artifacts a configuration names (CloudFormation's `Artifact::path`): given the action's
    # input artifact names, (key, why).
    artifact_check: Callable[[Mapping[str, str], Sequence[str]], list[tuple[str, str]]] | None = None
    # A source: the revision override types it takes (the first is its own), and how it is polled.
    revision_types: tuple[RevisionType, ...] = ()
    poll: SourcePoll | None = None
    # Contracts of the same provider name for other categories (S3: Source here, Deploy in a variant).
    variants: tuple[ProviderContract, ...] = ()

    def for_category(self, category: ActionCategory) -> ProviderContract:
        """The contract an action of this provider and `category` follows."""
        return next((v for v in self.variants if category in v.categories), self)

    @property
    def own_categories(self) -> tuple[ActionCategory, ...]:
        """Its categories less those its variants serve."""
        return tuple(c for c in self.categories if all(c not in v.categories for v in self.variants))

    @property
    def retried_failures(self) -> frozenset[str]:
        """The error codes a declared retry policy retries; configuration errors fail at once."""
        return self.transient_errors | INFRASTRUCTURE_FAILURES

    @property
    def configuration_keys(self) -> Mapping[str, ConfigurationKey] | None:
        return None if self.configuration is None else {key.name: key for key in self.configuration}

    @property
    def required_keys(self) -> frozenset[str]:
        return frozenset(key.name for key in self.configuration or () if key.required)

    def exported_variables(self, action: Action) -> frozenset[str] | None:
        """The variables an action of this provider exports, as references to its namespace may use them;
        None when they are known only at run time (any key may be referenced)."""
        if self.output_variables == OutputVariables.RUN_TIME:
            return None
        if self.output_variables == OutputVariables.CONFIGURATION:
            return frozenset(action.configuration)
        if self.output_variables == OutputVariables.DYNAMIC:
            return frozenset(action.output_variables)
        return frozenset(self.fixed_outputs)
