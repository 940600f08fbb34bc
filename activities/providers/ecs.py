"""The ECS provider's activities: the deploy (register a revision, update the service, follow the deployment) and
its compensation (the service back on the task definition the action found).

- Once per action attempt: RegisterTaskDefinition has no idempotency token, so the revision is tagged with the
  attempt and the task definition it replaces; before registering, a retried activity looks for that tag among the
  family's newest revisions. UpdateService is made only while no deployment of that revision exists. The revision,
  the previous task definition and the deployment id are kept in the heartbeat details.
- Followed with DescribeServices every `ecs_poll_seconds`: COMPLETED succeeds; FAILED, or a newer deployment rolling
  back to the previous task definition (the circuit breaker) or running another, fails at the next poll.
- A stop or an abandon (a cancellation through the heartbeat) stops following: the deployment goes on in ECS, and
  the log says so; a rollback of the stage puts the previous task definition back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.running import action_workspace, write_action_log
from activities.aws.session import AwsSessions, refused
from activities.ecs.images import ImageDefinitionsError, new_revision_request, parse_image_definitions
from activities.ecs.service import EcsService, Registered, Verdict, deployment_of, family_of, progress
from conveyor.model import ActionOutcome, CamelModel
from conveyor.providers.ecs import ACTIVITY, COMPENSATION_ACTIVITY, EcsCompensation, EcsDeployInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, replicate_for_action

HEARTBEAT_SECONDS = 2.0


class EcsHeartbeat(CamelModel):
    """What a retried attempt follows instead of registering or updating again."""

    task_definition: str | None = None
    previous_task_definition: str | None = None
    deployment_id: str | None = None


class EcsProvider:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)

    # --- the deploy -------------------------------------------------------------------------------------------

    @activity.defn(name=ACTIVITY)
    async def ecs_deploy(self, input: EcsDeployInput) -> ActionOutcome:
        images = await self._images(input)
        service = self._service(input)
        beat = _Heartbeat(_heartbeat())
        beating = asyncio.create_task(beat.forever())
        lines: list[str] = []
        try:
            current = await service.describe()
            registered = await self._registered(input, service, current, images, beat, lines)
            deployment_id = beat.state.deployment_id
            if deployment_id is None:
                deployment_id = await self._update(service, current, registered, beat, lines)
            seconds = min(input.deployment_timeout_minutes * 60, input.timeout_seconds)
            deadline, minutes = _started() + seconds, seconds / 60
            try:
                final = await self._follow(service, registered, deployment_id, beat, lines, deadline, minutes)
            except asyncio.CancelledError:
                lines.append(
                    f"stopped following deployment {beat.state.deployment_id or '(not listed yet)'}: ECS goes on "
                    f"deploying {registered.arn} to service {input.service} (a rollback of the stage puts "
                    f"{registered.previous} back)"
                )
                raise
            log = _log(input)
            log.info("ecs.deployed", task_definition=registered.arn, deployment=final)
            return ActionOutcome(
                output_variables={"TaskDefinitionArn": registered.arn, "DeploymentId": final},
                summary=f"service {input.service} runs {_short(registered.arn)} (deployment {final} completed)",
            )
        finally:
            beating.cancel()
            await asyncio.shield(asyncio.to_thread(write_action_log, self.settings, input.context, lines))

    async def _images(self, input: EcsDeployInput) -> dict[str, str]:
        async with action_workspace(self.settings, input.context) as workspace:
            return await asyncio.to_thread(self._read_images, input, workspace)

    def _read_images(self, input: EcsDeployInput, workspace: Path) -> dict[str, str]:
        action, ref = input.context.action_name, input.artifact
        root = workspace / "input"
        try:
            ref = replicate_for_action(self.store, ref, input.context.artifact_stores)
            self.store.extract(ref, root)
        except ArtifactError as exc:
            raise refused(f"action '{action}': {exc}", "ArtifactError") from None
        file = (root / input.file_name).resolve()
        if not file.is_relative_to(root.resolve()) or not file.is_file():
            raise refused(
                f"action '{action}': FileName '{input.file_name}' is not a file in input artifact '{ref.name}' "
                "(write it in the action that makes the artifact, or set FileName)"
            )
        try:
            return parse_image_definitions(file.read_bytes(), f"{input.file_name} of artifact '{ref.name}'")
        except ImageDefinitionsError as exc:
            raise refused(f"action '{action}': {exc}") from None

    async def _registered(
        self,
        input: EcsDeployInput,
        service: EcsService,
        current: dict[str, Any],
        images: dict[str, str],
        beat: _Heartbeat,
        lines: list[str],
    ) -> Registered:
        """This attempt's revision: from the heartbeat, found by its tag, or registered now."""
        state = beat.state
        if state.task_definition and state.previous_task_definition:
            lines.append(f"following {state.task_definition} (registered by an earlier try of this attempt)")
            return Registered(arn=state.task_definition, previous=state.previous_task_definition)
        running: str = current["taskDefinition"]
        # Only a retried try can have registered already: the first skips the search (a listing and up to 20
        # descriptions, most of an ECS action's cost over the bare calls in `python -m bench --scenarios invoke`).
        first_try = activity.info().attempt == 1
        found = None if first_try else await service.find_registered(family_of(running), input.attempt_marker)
        if found is not None:
            lines.append(
                f"found {found.arn}, registered by an earlier try of this attempt (replacing {found.previous})"
            )
        else:
            definition, tags = await service.task_definition(running)
            try:
                request = new_revision_request(definition, tags, images, input.attempt_marker, input.file_name)
            except ImageDefinitionsError as exc:
                raise refused(f"action '{input.context.action_name}': {exc}") from None
            arn = await service.register(request)
            found = Registered(arn=arn, previous=running)
            changed = ", ".join(f"{name}={uri}" for name, uri in images.items())
            lines.append(f"registered {arn} from {running}: images {changed}")
        beat.update(task_definition=found.arn, previous_task_definition=found.previous)
        return found

    async def _update(
        self, service: EcsService, current: dict[str, Any], registered: Registered, beat: _Heartbeat, lines: list[str]
    ) -> str | None:
        """UpdateService, unless a deployment of the revision exists (an earlier try made the call)."""
        existing = deployment_of(current, registered.arn)
        if existing is not None:
            lines.append(f"following deployment {existing.get('id')} (started by an earlier try of this attempt)")
        else:
            updated = await service.update(registered.arn)
            existing = deployment_of(updated, registered.arn)
            lines.append(f"updated service {service.name} to {registered.arn}")
        deployment_id = existing.get("id") if existing else None
        if deployment_id:
            beat.update(deployment_id=deployment_id)
        return deployment_id

    async def _follow(
        self,
        service: EcsService,
        registered: Registered,
        deployment_id: str | None,
        beat: _Heartbeat,
        lines: list[str],
        deadline: float,
        minutes: float,
    ) -> str:
        action, said = service.action, ""
        while True:
            found = progress(await service.describe(), deployment_id, registered.arn, registered.previous)
            if found.deployment_id and found.deployment_id != deployment_id:
                deployment_id = found.deployment_id
                beat.update(deployment_id=deployment_id)
            if found.detail != said:
                lines.append(found.detail)
                said = found.detail
            if found.verdict == Verdict.COMPLETED:
                assert deployment_id is not None
                return deployment_id
            if found.verdict != Verdict.IN_PROGRESS:
                raise ApplicationError(
                    f"action '{action}': service {service.name}: {found.detail}",
                    type="DeploymentFailed",
                    non_retryable=True,
                )
            if time.time() > deadline:
                raise ApplicationError(
                    f"action '{action}': service {service.name}: {found.detail} after DeploymentTimeout "
                    f"({minutes:g} minutes); ECS goes on with it (a rollback of the stage puts {registered.previous} "
                    "back)",
                    type="DeploymentTimeout",
                    non_retryable=True,
                )
            await asyncio.sleep(self.settings.ecs_poll_seconds)

    # --- the compensation -------------------------------------------------------------------------------------

    @activity.defn(name=COMPENSATION_ACTIVITY)
    async def ecs_compensate(self, input: EcsCompensation) -> ActionOutcome:
        service = self._service(input)
        beat = _Heartbeat(_heartbeat())
        beating = asyncio.create_task(beat.forever())
        lines: list[str] = []
        try:
            return await self._compensate(input, service, beat, lines)
        finally:
            beating.cancel()
            await asyncio.shield(asyncio.to_thread(write_action_log, self.settings, input.context, lines))

    async def _compensate(
        self, input: EcsCompensation, service: EcsService, beat: _Heartbeat, lines: list[str]
    ) -> ActionOutcome:
        current = await service.describe()
        running: str = current["taskDefinition"]
        ours = await service.find_registered(family_of(running), input.attempt_marker)
        if ours is None:
            lines.append(f"service {input.service}: the action registered no task definition: nothing to undo")
            return ActionOutcome(summary=f"nothing to undo on service {input.service}")
        # Going back is a deployment of the previous revision, followed like the action's own.
        back = Registered(arn=ours.previous, previous=ours.arn)
        if running == ours.arn:
            # The service's own task definition says no earlier try made this call (it would name the previous).
            updated = await service.update(ours.previous)
            started = deployment_of(updated, ours.previous)
            deployment_id = started.get("id") if started else None
            lines.append(f"updated service {input.service} back to {ours.previous}")
        elif running == ours.previous:
            rollback = deployment_of(current, ours.previous)
            if rollback is None or rollback.get("rolloutState") != "IN_PROGRESS":
                lines.append(f"service {input.service} already runs {ours.previous}: nothing to undo")
                return ActionOutcome(summary=f"service {input.service} already on {_short(ours.previous)}")
            deployment_id = rollback.get("id")
            lines.append(f"following deployment {deployment_id} back to {ours.previous}")
        else:
            lines.append(
                f"service {input.service} runs {running}, deployed after the action's {ours.arn}: left as it is"
            )
            return ActionOutcome(summary=f"service {input.service} was deployed again since: left on {_short(running)}")
        deadline = _started() + input.timeout_seconds
        final = await self._follow(service, back, deployment_id, beat, lines, deadline, input.timeout_seconds / 60)
        return ActionOutcome(
            summary=f"service {input.service} back on {_short(ours.previous)} (deployment {final} completed)"
        )

    # --- shared -----------------------------------------------------------------------------------------------

    def _service(self, input: EcsDeployInput | EcsCompensation) -> EcsService:
        client = self.sessions.client(input.identity, "ecs", input.context.action_name)
        return EcsService(client, input.cluster, input.service, input.context.action_name,
                          self.sessions.role(input.identity))  # fmt: skip


def _started() -> float:
    """When the activity was first scheduled (a retried attempt keeps the first's deadline), as a time.time()."""
    scheduled = activity.info().scheduled_time
    if scheduled is None:
        return time.time()
    return min(time.time(), scheduled.astimezone(UTC).timestamp())


def _short(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _heartbeat() -> EcsHeartbeat:
    details = activity.info().heartbeat_details
    if not details:
        return EcsHeartbeat()
    try:
        return EcsHeartbeat.model_validate(details[0])
    except ValidationError:
        return EcsHeartbeat()


class _Heartbeat:
    """Beats well inside the heartbeat timeout; every beat carries what the attempt has done so far."""

    def __init__(self, state: EcsHeartbeat) -> None:
        self.state = state
        activity.heartbeat(self._details())

    def _details(self) -> dict[str, Any]:
        return self.state.model_dump(mode="json", by_alias=True)

    def update(self, **changes: str) -> None:
        self.state = self.state.model_copy(update=changes)
        activity.heartbeat(self._details())

    async def forever(self) -> None:
        timeout = activity.info().heartbeat_timeout
        interval = (
            HEARTBEAT_SECONDS if timeout is None else max(0.1, min(HEARTBEAT_SECONDS, timeout.total_seconds() / 3))
        )
        while True:
            activity.heartbeat(self._details())
            await asyncio.sleep(interval)


def _log(input: EcsDeployInput) -> Any:
    context = input.context
    return structlog.get_logger().bind(
        pipeline=context.pipeline_name, execution=context.execution_id, stage=context.stage_name,
        action=context.action_name,
    )  # fmt: skip


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the ECS contract (conveyor.providers.ecs)."""
    provider = EcsProvider(settings, store)
    return [provider.ecs_deploy, provider.ecs_compensate]
