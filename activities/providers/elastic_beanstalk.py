"""The ElasticBeanstalk provider's activities: the deploy (an application version, an environment update followed
until Ready and healthy) and its compensation (the environment updated back to its previous version).

- The source bundle is the input artifact's zip where the S3 artifact store keeps it (copied to the action region's
  store when it was made in another); a local store is refused: Elastic Beanstalk reads bundles from S3 only.
- One version per action attempt (conveyor.providers.elastic_beanstalk.version_label): a retried activity finds it
  with DescribeApplicationVersions, or gets CreateApplicationVersion's "already exists" and uses it. The version's
  description records the label the environment ran before (read before the update), for the compensation.
- The label, the previous label and when the update began are in every heartbeat; a retried activity that finds the
  environment already on its label follows that update instead of calling UpdateEnvironment again.
- Followed with DescribeEnvironments and DescribeEvents (ERROR events since the update began) every
  `Settings.beanstalk_poll_seconds`: Ready and Green (or HealthStatus Ok) succeeds; an ERROR event, health Red once
  Ready, or the environment Ready on another version (Elastic Beanstalk rolled the deployment back) fails the action
  naming it.
- A stop or an abandon (a cancellation through the heartbeat) calls AbortEnvironmentUpdate on an update of the
  action's version still under way, so Elastic Beanstalk rolls it back; the compensation then follows the
  environment back to the previous version (or updates it back, when the abort did not take).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import structlog
from botocore.exceptions import ClientError
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.running import write_action_log
from activities.aws.session import AwsSessions, aws_errors, refused
from conveyor.aws.identity import AwsIdentity
from conveyor.model import ActionContext, ActionOutcome, CamelModel
from conveyor.providers.elastic_beanstalk import (
    ACTIVITY,
    COMPENSATION_ACTIVITY,
    BeanstalkCompensation,
    BeanstalkInput,
)
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, replicate_for_action
from conveyor.stores.s3 import parse_object_url
from conveyor.text import shorten

if TYPE_CHECKING:
    from mypy_boto3_elasticbeanstalk import ElasticBeanstalkClient

HEARTBEAT_SECONDS = 2.0
READY = "Ready"
HEALTHY = frozenset({"Green"})
HEALTHY_STATUS = frozenset({"Ok"})
# The version's description: "previous version: <label>" first, then who made it (200 characters at most).
PREVIOUS = "previous version: "
NO_PREVIOUS = "(none)"
SEPARATOR = " | "
DESCRIPTION_LIMIT = 200
MAX_EVENTS_NAMED = 3


class UpdateHeartbeat(CamelModel):
    """What a retried activity needs to follow the same update: the version, the one before, when it began."""

    version_label: str
    previous_label: str | None = None
    started: float  # epoch seconds: ERROR events before it belong to earlier updates
    updated: bool = False  # UpdateEnvironment answered: never called again for this version


def describe_version(previous: str | None, context: ActionContext) -> str:
    who = f"Conveyor {context.pipeline_name}/{context.execution_id} {context.stage_name}.{context.action_name}"
    return f"{PREVIOUS}{previous or NO_PREVIOUS}{SEPARATOR}{who}"[:DESCRIPTION_LIMIT]


def previous_from_description(description: str | None) -> str | None:
    """The label recorded by describe_version; None when the environment ran no version before."""
    text = description or ""
    if not text.startswith(PREVIOUS):
        return None
    label = text.removeprefix(PREVIOUS).split(SEPARATOR, 1)[0]
    return None if label == NO_PREVIOUS else label


class _Environment:
    """One action's calls on one environment (blocking: run them in a thread)."""

    def __init__(
        self, client: ElasticBeanstalkClient, action: str, role: str | None, application: str, environment: str
    ) -> None:
        self.client, self.action, self.role = client, action, role
        self.application, self.name = application, environment

    def errors(self, call: str) -> Any:
        target = f"environment {self.name} of application {self.application}"
        return aws_errors(self.action, f"elasticbeanstalk:{call}", self.role, target=target)

    def describe(self) -> dict[str, Any]:
        with self.errors("DescribeEnvironments"):
            found = self.client.describe_environments(
                ApplicationName=self.application, EnvironmentNames=[self.name], IncludeDeleted=False
            )["Environments"]
        live = [e for e in found if e.get("Status") not in ("Terminated", "Terminating")]
        if not live:
            raise refused(
                f"action '{self.action}': application {self.application} has no environment {self.name}: create it "
                "or fix EnvironmentName",
                "AwsNotFound",
            )
        environment = cast(dict[str, Any], live[0])  # read as a plain mapping by the rest of the module
        return environment

    def version(self, label: str) -> dict[str, Any] | None:
        with self.errors("DescribeApplicationVersions"):
            versions = self.client.describe_application_versions(
                ApplicationName=self.application, VersionLabels=[label]
            )["ApplicationVersions"]
        return dict(versions[0]) if versions else None

    def create_version(self, label: str, description: str, bucket: str, key: str) -> dict[str, Any]:
        """The version, created; or, when a lost attempt already created it ("already exists"), that one."""
        try:
            self.client.create_application_version(
                ApplicationName=self.application,
                VersionLabel=label,
                Description=description,
                SourceBundle={"S3Bucket": bucket, "S3Key": key},
            )
        except ClientError as err:
            if "already exists" not in str(err.response.get("Error", {}).get("Message", "")):
                with self.errors("CreateApplicationVersion"):
                    raise
        found = self.version(label)
        if found is None:
            raise ApplicationError(f"action '{self.action}': version {label} was created but is not listed yet",
                                   type="AwsUnavailable")  # fmt: skip
        return found

    def abort(self) -> None:
        with self.errors("AbortEnvironmentUpdate"):
            self.client.abort_environment_update(EnvironmentName=self.name)

    def update(self, label: str) -> None:
        with self.errors("UpdateEnvironment"):
            self.client.update_environment(
                ApplicationName=self.application, EnvironmentName=self.name, VersionLabel=label
            )

    def errors_since(self, started: float) -> list[str]:
        with self.errors("DescribeEvents"):
            events = self.client.describe_events(
                ApplicationName=self.application,
                EnvironmentName=self.name,
                StartTime=datetime.fromtimestamp(started, UTC),
                Severity="ERROR",
            )["Events"]
        return [str(e.get("Message", "")) for e in events if e.get("Severity") in ("ERROR", "FATAL")]


def _state(environment: dict[str, Any]) -> str:
    health = environment.get("Health", "?")
    status = environment.get("HealthStatus")
    return f"{environment.get('Status')}, health {health}" + (f" ({status})" if status else "")


class BeanstalkProvider:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)

    @activity.defn(name=ACTIVITY)
    async def elastic_beanstalk(self, input: BeanstalkInput) -> ActionOutcome:
        log = _log(input.context)
        lines: list[str] = []  # the action log, written once (the store's log writer keeps one chunk per opening)
        recorded = _heartbeat_state()
        beat = _Heartbeat(recorded or UpdateHeartbeat(version_label=input.version_label, started=time.time()))
        beating = asyncio.create_task(beat.forever())
        env: _Environment | None = None
        try:
            env = await asyncio.to_thread(
                self._environment, input.identity, input.context, input.application_name, input.environment_name
            )
            current = await asyncio.to_thread(env.describe)
            state = await self._version(input, env, current, beat, lines)
            if state.updated or current.get("VersionLabel") == input.version_label:
                lines.append(f"following the update to version {input.version_label} of {input.environment_name} "
                             "(begun by an earlier attempt)")  # fmt: skip
            else:
                current = await self._wait_ready(env, current)
                if current.get("VersionLabel") != input.version_label:
                    await asyncio.to_thread(env.update, input.version_label)
                    beat.set(state.model_copy(update={"updated": True}))
                    lines.append(f"updating {input.environment_name} to version {input.version_label}")
                    log.info("beanstalk.updating", version=input.version_label, previous=state.previous_label)
            final = await self._follow(env, input.version_label, state.started)
            summary = f"environment {input.environment_name} on version {input.version_label}: {_state(final)}"
            lines.append(summary)
        except ApplicationError as exc:
            lines.append(exc.message)
            raise
        except asyncio.CancelledError:  # a stop or an abandon: the update must not go on unseen
            if env is not None:
                await asyncio.shield(self._abort(env, input.version_label, beat.state.updated, lines))
            raise
        finally:
            beating.cancel()
            await self._write(input.context, lines)
        log.info("beanstalk.deployed", version=input.version_label)
        return ActionOutcome(output_variables={"VersionLabel": input.version_label}, summary=summary)

    @activity.defn(name=COMPENSATION_ACTIVITY)
    async def elastic_beanstalk_compensate(self, input: BeanstalkCompensation) -> ActionOutcome:
        lines: list[str] = []
        beat = _Heartbeat(UpdateHeartbeat(version_label=input.version_label, started=time.time()))
        beating = asyncio.create_task(beat.forever())
        try:
            summary = await self._compensate(input, beat, lines)
            lines.append(summary)
        except ApplicationError as exc:
            lines.append(exc.message)
            raise
        finally:
            beating.cancel()
            await self._write(input.context, lines)
        return ActionOutcome(summary=summary)

    async def _compensate(self, input: BeanstalkCompensation, beat: _Heartbeat, lines: list[str]) -> str:
        env = await asyncio.to_thread(
            self._environment, input.identity, input.context, input.application_name, input.environment_name
        )
        version = await asyncio.to_thread(env.version, input.version_label)
        if version is None:
            return f"nothing to undo: the action created no version {input.version_label}"
        previous = previous_from_description(version.get("Description"))
        if previous is None:
            return f"nothing to undo: {input.environment_name} ran no version before {input.version_label}"
        current = await asyncio.to_thread(env.describe)
        label = current.get("VersionLabel")
        if label not in (input.version_label, previous):
            return f"nothing to undo: {input.environment_name} runs version {label}, not the action's: left as it is"
        if label == input.version_label:
            current = await self._wait_ready(env, current)
            await asyncio.to_thread(env.update, previous)
            lines.append(f"updating {input.environment_name} back to version {previous}")
        final = await self._follow(env, previous, beat.state.started, require_healthy=False)
        return f"environment {input.environment_name} back on version {previous}: {_state(final)}"

    async def _abort(self, env: _Environment, label: str, updated: bool, lines: list[str]) -> None:
        """AbortEnvironmentUpdate when the environment is updating to the action's version (or the action's update
        call answered); a failure is logged, never raised: the cancellation goes on either way."""
        try:
            current = await asyncio.to_thread(env.describe)
            if current.get("Status") != "Updating" or not (updated or current.get("VersionLabel") == label):
                return
            await asyncio.to_thread(env.abort)
            lines.append(f"stopped: aborted the update of {env.name} to version {label} (Elastic Beanstalk rolls it "
                         "back to the version before)")  # fmt: skip
        except ApplicationError as exc:
            _log_action(env).warning("beanstalk.abort_failed", error=exc.message)

    # --- parts --------------------------------------------------------------------------------------------------

    def _environment(self, identity: AwsIdentity, context: ActionContext, application: str, name: str) -> _Environment:
        client = self.sessions.client(identity, "elasticbeanstalk", context.action_name)
        return _Environment(client, context.action_name, self.sessions.role(identity), application, name)

    async def _version(
        self, input: BeanstalkInput, env: _Environment, current: dict[str, Any], beat: _Heartbeat, lines: list[str]
    ) -> UpdateHeartbeat:
        """The attempt's version, found or created (recording the environment's version before it)."""
        found = await asyncio.to_thread(env.version, input.version_label)
        if found is None:
            previous = current.get("VersionLabel")
            bucket, key = await asyncio.to_thread(self._bundle, input)
            description = describe_version(previous, input.context)
            found = await asyncio.to_thread(env.create_version, input.version_label, description, bucket, key)
            lines.append(f"version {input.version_label} of {input.application_name} from s3://{bucket}/{key} "
                         f"(previous: {previous or 'none'})")  # fmt: skip
        else:
            lines.append(f"found version {input.version_label} (made by an earlier attempt)")
        state = beat.state.model_copy(update={"previous_label": previous_from_description(found.get("Description"))})
        beat.set(state)
        return state

    def _bundle(self, input: BeanstalkInput) -> tuple[str, str]:
        action = input.context.action_name
        try:
            ref = replicate_for_action(self.store, input.source_bundle, input.context.artifact_stores)
        except ArtifactError as exc:
            raise refused(f"action '{action}': {exc}", "ArtifactError") from None
        located = parse_object_url(ref.location)
        if located is None:
            raise refused(
                f"action '{action}': Elastic Beanstalk reads its source bundle from S3, but input artifact "
                f"'{ref.name}' is in this worker's local artifact store: set CONVEYOR_ARTIFACT_STORE=s3://<bucket>/"
                "<prefix> (or declare the pipeline's artifactStore with CONVEYOR_AWS=true)"
            )
        return located

    async def _wait_ready(self, env: _Environment, current: dict[str, Any]) -> dict[str, Any]:
        """Elastic Beanstalk refuses an update while another is under way: wait for it to end."""
        while current.get("Status") != READY:
            await asyncio.sleep(self.settings.beanstalk_poll_seconds)
            current = await asyncio.to_thread(env.describe)
        return current

    async def _follow(
        self, env: _Environment, label: str, started: float, *, require_healthy: bool = True
    ) -> dict[str, Any]:
        action = env.action
        where = f"environment {env.name}"
        while True:
            current = await asyncio.to_thread(env.describe)
            failures = await asyncio.to_thread(env.errors_since, started)
            if failures:
                named = "; ".join(shorten(m, 300) for m in failures[:MAX_EVENTS_NAMED])
                more = f" (and {len(failures) - MAX_EVENTS_NAMED} more)" if len(failures) > MAX_EVENTS_NAMED else ""
                raise refused(f"action '{action}': {where} updating to version {label}: ERROR event: {named}{more}",
                               "DeploymentFailed")  # fmt: skip
            if current.get("Status") == READY:
                if current.get("VersionLabel") != label:
                    raise refused(
                        f"action '{action}': {where} is Ready on version {current.get('VersionLabel')}, not {label}: "
                        "the deployment was rolled back",
                        "DeploymentFailed",
                    )
                if current.get("Health") == "Red":
                    raise refused(f"action '{action}': {where} on version {label} is {_state(current)}",
                                   "DeploymentFailed")  # fmt: skip
                healthy = current.get("Health") in HEALTHY or current.get("HealthStatus") in HEALTHY_STATUS
                if healthy or not require_healthy:
                    return current
            await asyncio.sleep(self.settings.beanstalk_poll_seconds)

    async def _write(self, context: ActionContext, lines: list[str]) -> None:
        if lines:
            await asyncio.to_thread(write_action_log, self.settings, context, lines)


def _heartbeat_state() -> UpdateHeartbeat | None:
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        return UpdateHeartbeat.model_validate(details[0])
    except ValidationError:
        return None


class _Heartbeat:
    """Beats well inside the heartbeat timeout, every beat carrying the update's state (the version label)."""

    def __init__(self, state: UpdateHeartbeat) -> None:
        self.state = state
        activity.heartbeat(self._details())

    def set(self, state: UpdateHeartbeat) -> None:
        self.state = state
        activity.heartbeat(self._details())

    def _details(self) -> dict[str, Any]:
        return self.state.model_dump(mode="json", by_alias=True)

    async def forever(self) -> None:
        timeout = activity.info().heartbeat_timeout
        interval = (
            HEARTBEAT_SECONDS if timeout is None else max(0.1, min(HEARTBEAT_SECONDS, timeout.total_seconds() / 3))
        )
        while True:
            activity.heartbeat(self._details())
            await asyncio.sleep(interval)


def _log(context: ActionContext) -> Any:
    return structlog.get_logger().bind(
        pipeline=context.pipeline_name, execution=context.execution_id, stage=context.stage_name,
        action=context.action_name,
    )  # fmt: skip


def _log_action(env: _Environment) -> Any:
    return structlog.get_logger().bind(action=env.action, environment=env.name)


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the ElasticBeanstalk contract (conveyor.providers.elastic_beanstalk)."""
    provider = BeanstalkProvider(settings, store)
    return [provider.elastic_beanstalk, provider.elastic_beanstalk_compensate]
