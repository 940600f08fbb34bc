"""The CodeDeploy providers' activities: one deployment per action attempt, followed to its end with heartbeats;
and the compensation, which redeploys the revision the group had before.

- No idempotency token in CreateDeployment: the description names the attempt (`[conveyor:<marker>]`). Before
  creating, the activity takes the deployment id from its heartbeat details or looks for the attempt's deployment
  among the group's (ListDeployments, BatchGetDeployments), so a retried activity follows the deployment an earlier
  worker created and never starts a second one. A cancellation arriving while CreateDeployment is on its way still
  stops the deployment it made.
- Before creating, the group's last successful deployment's revision is kept in the artifact store (for the
  compensation); the action hands its reference back, with its success or its failure, and records it in the store
  before CreateDeployment (`DeploymentRecord`, at the attempt's `attempt_record`): the compensation of an action
  abandoned mid-deployment, which hands back nothing, reads it there.
- A stop or an abandon (a cancellation through the heartbeat) and the action's timeout call StopDeployment with
  autoRollbackEnabled, so CodeDeploy rolls back what it had deployed where the group allows it.
- CodeDeployToECS registers its task definition once per attempt too: the ARN is kept in the heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import structlog
from botocore.exceptions import ParamValidationError
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.running import action_workspace, write_action_log
from activities.aws.session import AwsSessions, aws_errors, refused
from conveyor.aws.identity import AwsIdentity
from conveyor.model import (
    COMPENSATION_ARTIFACTS_DETAIL,
    EXTERNAL_DETAIL,
    ActionContext,
    ActionOutcome,
    ArtifactRef,
    CamelModel,
)
from conveyor.providers.codedeploy import (
    ACTIVITY,
    COMPENSATION_ACTIVITY,
    ECS_ACTIVITY,
    IMAGE_DETAIL_FILE,
    TASK_DEFINITION_PLACEHOLDER,
    CodeDeployCompensation,
    CodeDeployInput,
    EcsRevision,
    attempt_marker,
    attempt_record,
)
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, replicate_for_action, store_for_outputs
from conveyor.stores.entries import StoredKind
from conveyor.stores.records import AttemptRecord, AttemptRecords, RecordKind, RecordStoreError, record_backend
from conveyor.stores.s3 import parse_object_url

if TYPE_CHECKING:
    from mypy_boto3_codedeploy import CodeDeployClient

HEARTBEAT_SECONDS = 2.0
SUCCEEDED = "Succeeded"
ENDED_BADLY = frozenset({"Failed", "Stopped"})
PREVIOUS_REVISION_FILE = "previous-revision.json"
LAMBDA_PLATFORM = "Lambda"
LAMBDA_APPSPECS = ("appspec.yml", "appspec.yaml", "appspec.json")
KEPT_TOUCH_SECONDS = 600.0  # well inside garbage collection's minimum age (CONVEYOR_GC_MIN_AGE_MINUTES)
_DESCRIPTION_LIMIT = 400  # CodeDeploy takes descriptions up to 512 characters; the marker follows this part
# What DescribeTaskDefinition gives back but RegisterTaskDefinition refuses: a template copied from a describe works.
_TASK_DEFINITION_OUTPUT_FIELDS = (
    "taskDefinitionArn",
    "revision",
    "status",
    "requiresAttributes",
    "compatibilities",
    "registeredAt",
    "registeredBy",
    "deregisteredAt",
)


class DeploymentHeartbeat(CamelModel):
    """What a retried activity of the attempt needs: the deployment to follow, what the action kept."""

    deployment_id: str | None = None
    previous: ArtifactRef | None = None  # the group's revision before the deployment
    task_definition_arn: str | None = None  # CodeDeployToECS: registered once per attempt


class DeploymentRecord(AttemptRecord):
    """What an action attempt records before CreateDeployment: the group's revision before it, as kept (None: the
    group had no successful deployment)."""

    previous: ArtifactRef | None = None


class PreviousRevision(CamelModel):
    deployment_id: str
    revision: dict[str, Any]


def marker_text(marker: str) -> str:
    return f"[conveyor:{marker}]"


def description(context: ActionContext, marker: str, what: str = "deploy") -> str:
    text = f"Conveyor {what}: {context.pipeline_name} {context.execution_id} {context.stage_name}/{context.action_name}"
    return f"{text[:_DESCRIPTION_LIMIT]} {marker_text(marker)}"


class _Beat:
    """The heartbeat, every few seconds, with the attempt's details as they grow."""

    def __init__(self, details: DeploymentHeartbeat) -> None:
        self.details = details
        self.send()

    def send(self) -> None:
        activity.heartbeat(self.details.model_dump(mode="json", by_alias=True))

    async def forever(self) -> None:
        timeout = activity.info().heartbeat_timeout
        interval = (
            HEARTBEAT_SECONDS if timeout is None else max(0.1, min(HEARTBEAT_SECONDS, timeout.total_seconds() / 3))
        )
        while True:
            self.send()
            await asyncio.sleep(interval)


def _heartbeat_details() -> DeploymentHeartbeat:
    details = activity.info().heartbeat_details
    if not details:
        return DeploymentHeartbeat()
    try:
        return DeploymentHeartbeat.model_validate(details[0])
    except ValidationError:
        return DeploymentHeartbeat()


class _Group:
    """CodeDeploy calls on one deployment group, with AWS errors as the action's."""

    def __init__(self, client: CodeDeployClient, action: str, role: str | None, application: str, group: str) -> None:
        self.client, self.action, self.role = client, action, role
        self.application, self.group = application, group

    @contextlib.contextmanager
    def errors(self, call: str, target: str | None = None) -> Iterator[None]:
        with aws_errors(self.action, f"codedeploy:{call}", self.role, target=target or self.where):
            yield

    @property
    def where(self) -> str:
        return f"deployment group {self.application}/{self.group}"

    def check(self) -> None:
        """The group exists (a clear error before anything is kept or registered)."""
        try:
            with self.errors("GetDeploymentGroup"):
                self.client.get_deployment_group(applicationName=self.application, deploymentGroupName=self.group)
        except ApplicationError as exc:
            if exc.type == "AwsError" and "DoesNotExist" in exc.message:
                raise refused(
                    f"action '{self.action}': {self.where} does not exist (check ApplicationName and "
                    f"DeploymentGroupName, and the action's region and role): {exc.message}",
                    "AwsNotFound",
                ) from None
            raise

    def platform(self) -> str:
        """The application's compute platform: Server, Lambda or ECS."""
        with self.errors("GetApplication", f"application {self.application}"):
            platform: str = self.client.get_application(applicationName=self.application)["application"].get(
                "computePlatform", "Server"
            )
        return platform

    def deployments(self, statuses: list[str] | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """The group's deployments (newest first), optionally only those of `statuses` or created after `since`."""
        arguments: dict[str, Any] = {"applicationName": self.application, "deploymentGroupName": self.group}
        if statuses:
            arguments["includeOnlyStatuses"] = statuses
        if since is not None:
            arguments["createTimeRange"] = {"start": since}
        ids: list[str] = []
        with self.errors("ListDeployments"):
            while True:
                page = self.client.list_deployments(**arguments)
                ids += page.get("deployments", [])
                if not page.get("nextToken"):
                    break
                arguments["nextToken"] = page["nextToken"]
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), 25):  # BatchGetDeployments takes 25 ids
            with self.errors("BatchGetDeployments"):
                batch = self.client.batch_get_deployments(deploymentIds=ids[start : start + 25])["deploymentsInfo"]
            found += [cast(dict[str, Any], d) for d in batch]  # plain mappings from here on
        return sorted(found, key=lambda d: d["createTime"], reverse=True)

    def of_attempt(self, marker: str, since: datetime) -> dict[str, Any] | None:
        """The deployment whose description names the attempt, if one was created."""
        text = marker_text(marker)
        return next((d for d in self.deployments(since=since) if text in (d.get("description") or "")), None)

    def last_success(self) -> dict[str, Any] | None:
        """The group's last successful deployment, as the group records it (one call, however long its history)."""
        with self.errors("GetDeploymentGroup"):
            info = self.client.get_deployment_group(applicationName=self.application, deploymentGroupName=self.group)
        last = info.get("deploymentGroupInfo", {}).get("lastSuccessfulDeployment") or {}
        return self.get(last["deploymentId"]) if last.get("deploymentId") else None

    def previous_success(self, before: datetime | None, excluding: str | None) -> dict[str, Any] | None:
        """The group's newest Succeeded deployment created before `before` (before any deployment of ours: the
        group's last success)."""
        if before is None:
            return self.last_success()
        # The attempt's deployment exists already (found again after a lost worker): its predecessor, from the list.
        for deployment in self.deployments(statuses=[SUCCEEDED]):
            if deployment["deploymentId"] == excluding:
                continue
            if before is None or deployment["createTime"] < before:
                return deployment
        return None

    def create(self, revision: dict[str, Any], config: str | None, text: str) -> str:
        arguments: dict[str, Any] = {
            "applicationName": self.application,
            "deploymentGroupName": self.group,
            "revision": revision,
            "description": text,
        }
        if config:
            arguments["deploymentConfigName"] = config
        with self.errors("CreateDeployment"):
            deployment_id: str = self.client.create_deployment(**arguments)["deploymentId"]
        return deployment_id

    def get(self, deployment_id: str) -> dict[str, Any]:
        with self.errors("GetDeployment", f"deployment {deployment_id}"):
            info = cast(dict[str, Any], self.client.get_deployment(deploymentId=deployment_id)["deploymentInfo"])
        return info

    def stop(self, deployment_id: str) -> None:
        with self.errors("StopDeployment", f"deployment {deployment_id}"):
            self.client.stop_deployment(deploymentId=deployment_id, autoRollbackEnabled=True)


class CodeDeployProvider:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)

    # --- the activities -------------------------------------------------------------------------------------

    @activity.defn(name=ACTIVITY)
    async def codedeploy(self, input: CodeDeployInput) -> ActionOutcome:
        return await self._deploy(input)

    @activity.defn(name=ECS_ACTIVITY)
    async def codedeploy_ecs(self, input: CodeDeployInput) -> ActionOutcome:
        return await self._deploy(input)

    @activity.defn(name=COMPENSATION_ACTIVITY)
    async def codedeploy_compensate(self, input: CodeDeployCompensation) -> ActionOutcome:
        previous = input.previous or await asyncio.to_thread(self._recorded_previous, input)
        if not previous:
            return ActionOutcome(summary="nothing to undo: the group had no earlier successful deployment")
        kept = await asyncio.to_thread(self._read_previous, previous[0], input.context.action_name)
        group = await asyncio.to_thread(self._group, input.context, input.identity, input)
        marker = attempt_marker(input.context, "compensate")
        beat = _Beat(_heartbeat_details())
        text = description(input.context, marker, f"redeploy of {kept.deployment_id}'s revision")

        async def revision() -> dict[str, Any]:
            return kept.revision

        deployment_id = await self._find_or_create(input.context, group, beat, marker, text, revision,
                                                   input.deployment_config)  # fmt: skip
        await self._log(input.context, [f"redeploying the revision of {kept.deployment_id} as {deployment_id}"])
        info = await self._follow(input.context, group, beat, deployment_id, input.timeout_seconds)
        self._raise_unless_succeeded(input.context, group, info)
        return ActionOutcome(
            output_variables={"DeploymentId": deployment_id},
            summary=f"redeployed the revision of {kept.deployment_id} to {group.where} ({deployment_id})",
        )

    # --- deploying --------------------------------------------------------------------------------------------

    async def _deploy(self, input: CodeDeployInput) -> ActionOutcome:
        context = input.context
        group = await asyncio.to_thread(self._group, context, input.identity, input)
        beat = _Beat(_heartbeat_details())
        kept: list[ArtifactRef] = []
        try:
            deployment_id = beat.details.deployment_id
            bundle: dict[str, Any] | None = None
            if deployment_id is None:
                await asyncio.to_thread(group.check)
                if input.ecs is None:  # a local store or a missing appspec is refused before anything is made
                    bundle = await self._bundle_revision(input, await asyncio.to_thread(group.platform))
                found = await asyncio.to_thread(group.of_attempt, input.marker, _since())
                if found is not None:
                    deployment_id = found["deploymentId"]
                    beat.details.deployment_id = deployment_id
                    await self._log(context, [f"found deployment {deployment_id} (created by an earlier attempt)"])
            else:
                await self._log(context, [f"following deployment {deployment_id} (created by an earlier attempt)"])
            if beat.details.previous is None:
                beat.details.previous = await asyncio.to_thread(self._keep_previous, input, group, deployment_id)
                beat.send()
            kept = [beat.details.previous] if beat.details.previous else []
            if deployment_id is None:
                previous = beat.details.previous
                record = DeploymentRecord(
                    execution_id=context.execution_id, previous=previous, keeps=[previous] if previous else []
                )
                await asyncio.to_thread(self._record, context, record)

                async def revision() -> dict[str, Any]:
                    if input.ecs is None:
                        assert bundle is not None
                        return bundle
                    return await self._ecs_revision(input, input.ecs, beat)

                text = description(context, input.marker)
                deployment_id = await self._find_or_create(context, group, beat, input.marker, text, revision,
                                                           input.deployment_config, searched=True)  # fmt: skip
            info = await self._follow(context, group, beat, deployment_id, input.timeout_seconds)
            self._raise_unless_succeeded(context, group, info)
        except ApplicationError as exc:
            raise _with_details(exc, kept, beat.details.deployment_id) from None
        config = info.get("deploymentConfigName") or input.deployment_config or "the group's configuration"
        _log(context).info("codedeploy.succeeded", deployment=deployment_id)
        return ActionOutcome(
            output_variables={"DeploymentId": deployment_id},
            summary=f"deployment {deployment_id} to {group.where} succeeded ({config})",
            external_url=deployment_id,
            compensation_artifacts=kept,
        )

    def _group(self, context: ActionContext, identity: AwsIdentity, target: Any) -> _Group:
        client = self.sessions.client(identity, "codedeploy", context.action_name)
        role = self.sessions.role(identity)
        return _Group(client, context.action_name, role, target.application, target.deployment_group)

    async def _find_or_create(
        self,
        context: ActionContext,
        group: _Group,
        beat: _Beat,
        marker: str,
        text: str,
        revision: Callable[[], Any],
        config: str | None,
        *,
        searched: bool = False,
    ) -> str:
        """The attempt's deployment: from the heartbeat, found by its marker, or created (once)."""
        if beat.details.deployment_id is not None:
            return beat.details.deployment_id
        if not searched:
            found = await asyncio.to_thread(group.of_attempt, marker, _since())
            if found is not None:
                beat.details.deployment_id = found["deploymentId"]
                beat.send()
                return beat.details.deployment_id
        content = await revision()
        # A cancellation arriving while CreateDeployment is on its way must not leave the deployment running unseen.
        creating = asyncio.ensure_future(asyncio.to_thread(group.create, content, config, text))
        try:
            deployment_id: str = await asyncio.shield(creating)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._stop(context, group, await creating)
            raise
        beat.details.deployment_id = deployment_id
        beat.send()
        where = content.get("s3Location") or content.get("revisionType")
        await self._log(context, [f"created deployment {deployment_id} on {group.where} of revision {where}"])
        _log(context).info("codedeploy.created", deployment=deployment_id)
        return deployment_id

    # --- following, stopping -------------------------------------------------------------------------------

    async def _follow(
        self, context: ActionContext, group: _Group, beat: _Beat, deployment_id: str, timeout_seconds: int
    ) -> dict[str, Any]:
        beating = asyncio.create_task(beat.forever())
        deadline = time.monotonic() + timeout_seconds
        touched = time.monotonic()
        last = None
        try:
            while True:
                kept = beat.details.previous
                if kept is not None and time.monotonic() - touched > KEPT_TOUCH_SECONDS:
                    # Garbage collection sees the kept revision in the action's state only once the action ends.
                    await asyncio.to_thread(self.store.touch, StoredKind.ARTIFACT, kept.digest)
                    touched = time.monotonic()
                info = await asyncio.to_thread(group.get, deployment_id)
                status = info["status"]
                if status != last:
                    await self._log(context, [f"deployment {deployment_id} {status}"])
                    last = status
                if status == SUCCEEDED or status in ENDED_BADLY:
                    return info
                if time.monotonic() > deadline:
                    await asyncio.shield(self._stop(context, group, deployment_id))
                    raise ApplicationError(
                        f"action '{context.action_name}': deployment {deployment_id} did not finish within the "
                        f"action's timeout ({timeout_seconds} s): stopped it (rolled back where the group allows)",
                        type="ActionTimeout",
                        non_retryable=True,
                    )
                await asyncio.sleep(self.settings.codedeploy_poll_seconds)
        except asyncio.CancelledError:
            _log(context).warning("codedeploy.cancelled", deployment=deployment_id)
            await asyncio.shield(self._stop(context, group, deployment_id))
            raise
        finally:
            beating.cancel()

    async def _stop(self, context: ActionContext, group: _Group, deployment_id: str) -> None:
        """StopDeployment (rolling back); a failure is logged, never raised: the cancellation goes on either way."""
        try:
            await asyncio.to_thread(group.stop, deployment_id)
            await self._log(context, [f"stopped deployment {deployment_id} (autoRollbackEnabled)"])
        except ApplicationError as exc:
            _log(context).warning("codedeploy.stop_failed", deployment=deployment_id, error=str(exc))

    @staticmethod
    def _raise_unless_succeeded(context: ActionContext, group: _Group, info: dict[str, Any]) -> None:
        status = info["status"]
        if status == SUCCEEDED:
            return
        error = info.get("errorInformation") or {}
        code, message = error.get("code"), error.get("message")
        detail = "".join([f": {code}" if code else "", f": {message}" if message else ""])
        raise ApplicationError(
            f"action '{context.action_name}': deployment {info['deploymentId']} to {group.where} {status}{detail}",
            type="DeploymentFailed",
            non_retryable=True,
        )

    # --- the previous revision ----------------------------------------------------------------------------

    def _records(self) -> AttemptRecords:
        return AttemptRecords(record_backend(self.settings), RecordKind.CODEDEPLOY)

    def _record(self, context: ActionContext, record: DeploymentRecord) -> None:
        try:
            self._records().replace(attempt_record(context), record)
        except RecordStoreError as exc:
            raise ApplicationError(f"action '{context.action_name}': could not record the previous revision before "
                                   f"deploying: {exc}", type="AwsUnavailable") from None  # fmt: skip

    def _recorded_previous(self, input: CodeDeployCompensation) -> list[ArtifactRef]:
        """The kept revision the action's earliest attempt recorded before its deployment (an abandoned action
        handed back none); nothing when no attempt got as far as deploying."""
        for location in input.attempt_records:
            try:
                record = self._records().read(location, DeploymentRecord)
            except RecordStoreError as exc:
                raise ApplicationError(f"action '{input.context.action_name}': could not read the recorded previous "
                                       f"revision: {exc}", type="AwsUnavailable") from None  # fmt: skip
            if record is not None:
                return [record.previous] if record.previous else []
        return []

    def _keep_previous(self, input: CodeDeployInput, group: _Group, ours: str | None) -> ArtifactRef | None:
        """The revision of the group's last successful deployment before ours, kept in the store; None: none."""
        before = group.get(ours)["createTime"] if ours else None
        previous = group.previous_success(before, excluding=ours)
        if previous is None:
            return None
        kept = PreviousRevision(deployment_id=previous["deploymentId"], revision=previous["revision"])
        try:
            with tempfile.TemporaryDirectory(dir=self._tmp()) as tmp:
                (Path(tmp) / PREVIOUS_REVISION_FILE).write_text(kept.model_dump_json(by_alias=True))
                target = store_for_outputs(self.store, input.context.artifact_stores)
                return target.put(f"{input.context.action_name}-previous-revision", Path(tmp), [PREVIOUS_REVISION_FILE])
        except ArtifactError as exc:
            raise refused(f"action '{input.context.action_name}': could not keep the previous revision: {exc}",
                           "ArtifactError") from None  # fmt: skip

    def _read_previous(self, ref: ArtifactRef, action: str) -> PreviousRevision:
        try:
            with tempfile.TemporaryDirectory(dir=self._tmp()) as tmp:
                self.store.extract(ref, Path(tmp) / "kept")
                return PreviousRevision.model_validate_json((Path(tmp) / "kept" / PREVIOUS_REVISION_FILE).read_text())
        except (ArtifactError, OSError, ValidationError) as exc:
            raise refused(f"action '{action}': the kept previous revision is not readable: {exc}",
                           "ArtifactError") from None  # fmt: skip

    def _tmp(self) -> Path:
        path = self.settings.data_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- revisions ----------------------------------------------------------------------------------------

    async def _bundle_revision(self, input: CodeDeployInput, platform: str) -> dict[str, Any]:
        """EC2/on-premises: the input artifact's zip where CodeDeploy reads it, an S3 revision bundle. Lambda: the
        artifact's appspec (CodeDeploy takes no zip for Lambda), as an AppSpecContent revision."""
        assert input.bundle is not None, "a CodeDeploy action carries its revision bundle"
        if platform == LAMBDA_PLATFORM:
            async with action_workspace(self.settings, input.context) as workspace:
                content = await asyncio.to_thread(self._lambda_appspec, input, input.bundle, workspace)
            return _appspec_content(content)
        return await asyncio.to_thread(self._s3_bundle, input, input.bundle)

    def _lambda_appspec(self, input: CodeDeployInput, ref: ArtifactRef, workspace: Path) -> str:
        action = input.context.action_name
        root = workspace / "bundle"
        try:
            self.store.extract(ref, root)
        except ArtifactError as exc:
            raise refused(f"action '{action}': {exc}", "ArtifactError") from None
        for name in LAMBDA_APPSPECS:
            if (root / name).is_file():
                return (root / name).read_text(encoding="utf-8", errors="replace")
        raise refused(
            f"action '{action}': a Lambda deployment's input artifact '{ref.name}' holds its AppSpec at the root: "
            f"none of {', '.join(LAMBDA_APPSPECS)} found"
        )

    def _s3_bundle(self, input: CodeDeployInput, bundle: ArtifactRef) -> dict[str, Any]:
        action = input.context.action_name
        try:
            ref = replicate_for_action(self.store, bundle, input.context.artifact_stores)
        except ArtifactError as exc:
            raise refused(f"action '{action}': {exc}", "ArtifactError") from None
        located = parse_object_url(ref.location)
        if located is None:
            raise refused(
                f"action '{action}': CodeDeploy reads the revision bundle '{ref.name}' from S3, but this worker's "
                "artifact store is local: set CONVEYOR_ARTIFACT_STORE=s3://<bucket>/<prefix> (or declare the "
                "pipeline's artifactStore and run the worker with CONVEYOR_AWS=true)"
            )
        bucket, key = located
        return {"revisionType": "S3", "s3Location": {"bucket": bucket, "key": key, "bundleType": "zip"}}

    async def _ecs_revision(self, input: CodeDeployInput, ecs: EcsRevision, beat: _Beat) -> dict[str, Any]:
        """The appspec naming the task definition registered (once per attempt) from the template and images."""
        async with action_workspace(self.settings, input.context) as workspace:
            taskdef, appspec = await asyncio.to_thread(self._read_templates, input, ecs, workspace)
        arn = beat.details.task_definition_arn
        if arn is None:
            arn = await asyncio.to_thread(self._register, input, taskdef)
            beat.details.task_definition_arn = arn
            beat.send()
            await self._log(input.context, [f"registered task definition {arn}"])
        return _appspec_content(appspec.replace(TASK_DEFINITION_PLACEHOLDER, arn))

    def _read_templates(self, input: CodeDeployInput, ecs: EcsRevision, workspace: Path) -> tuple[dict[str, Any], str]:
        action = input.context.action_name
        taskdef_text = self._file(action, ecs.task_definition_artifact, ecs.task_definition_path, workspace,
                                  "TaskDefinitionTemplatePath")  # fmt: skip
        by_container: dict[str, tuple[str, str]] = {}  # container name -> (image URI, artifact)
        for image in ecs.images:
            uri = self._image_uri(action, image.artifact, workspace)
            placeholder = f"<{image.placeholder}>"
            if placeholder in taskdef_text:
                taskdef_text = taskdef_text.replace(placeholder, uri)
            else:  # no placeholder: a plain task definition, its container named ImageNContainerName gets the image
                by_container[image.placeholder] = (uri, image.artifact.name)
        where = f"{ecs.task_definition_path} of artifact '{ecs.task_definition_artifact.name}'"
        try:
            taskdef = json.loads(taskdef_text)
        except json.JSONDecodeError as err:
            raise refused(f"action '{action}': {where} is not JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(taskdef, dict):
            raise refused(f"action '{action}': {ecs.task_definition_path} is not a task definition (a JSON object)")
        containers = [c for c in taskdef.get("containerDefinitions") or [] if isinstance(c, dict)]
        for name, (uri, artifact) in by_container.items():
            matching = [c for c in containers if c.get("name") == name]
            if not matching:
                names = ", ".join(str(c.get("name")) for c in containers) or "none"
                raise refused(
                    f"action '{action}': {where} has neither <{name}> nor a container named '{name}' (it has "
                    f"{names}): put <{name}> where the image of artifact '{artifact}' goes, or name the container"
                )
            for container in matching:
                container["image"] = uri
        appspec = self._file(action, ecs.appspec_artifact, ecs.appspec_path, workspace, "AppSpecTemplatePath")
        if TASK_DEFINITION_PLACEHOLDER not in appspec:
            raise refused(
                f"action '{action}': {ecs.appspec_path} of artifact '{ecs.appspec_artifact.name}' has no "
                f"{TASK_DEFINITION_PLACEHOLDER}: write `TaskDefinition: {TASK_DEFINITION_PLACEHOLDER}` in its "
                "TargetService properties"
            )
        return taskdef, appspec

    def _file(self, action: str, ref: ArtifactRef, path: str, workspace: Path, key: str) -> str:
        root = workspace / f"in-{ref.digest.removeprefix('sha256:')[:16]}"
        if not root.exists():
            try:
                self.store.extract(ref, root)
            except ArtifactError as exc:
                raise refused(f"action '{action}': {exc}", "ArtifactError") from None
        file = (root / path).resolve()
        if not file.is_relative_to(root.resolve()) or not file.is_file():
            raise refused(f"action '{action}': {key} '{path}' is not a file in input artifact '{ref.name}'")
        return file.read_text(encoding="utf-8", errors="replace")

    def _image_uri(self, action: str, ref: ArtifactRef, workspace: Path) -> str:
        text = self._file(action, ref, IMAGE_DETAIL_FILE, workspace, "imageDetail")
        try:
            uri = json.loads(text).get("ImageURI")
        except (json.JSONDecodeError, AttributeError):
            uri = None
        if not isinstance(uri, str) or not uri:
            raise refused(
                f"action '{action}': {IMAGE_DETAIL_FILE} of artifact '{ref.name}' has no ImageURI "
                '(it holds {"ImageURI": "<registry>/<repository>@<digest>"}, as an ECR source writes)'
            )
        return uri

    def _register(self, input: CodeDeployInput, taskdef: dict[str, Any]) -> str:
        action = input.context.action_name
        client = self.sessions.client(input.identity, "ecs", action)
        arguments = {k: v for k, v in taskdef.items() if k not in _TASK_DEFINITION_OUTPUT_FIELDS}
        try:
            with aws_errors(action, "ecs:RegisterTaskDefinition", self.sessions.role(input.identity),
                            target=f"family {arguments.get('family')}"):  # fmt: skip
                arn: str = client.register_task_definition(**arguments)["taskDefinition"]["taskDefinitionArn"]
        except ParamValidationError as err:
            raise refused(f"action '{action}': the task definition template is not one ECS takes: {err}") from None
        return arn

    async def _log(self, context: ActionContext, lines: list[str]) -> None:
        await asyncio.to_thread(write_action_log, self.settings, context, lines)


def _appspec_content(content: str) -> dict[str, Any]:
    digest = hashlib.sha256(content.encode()).hexdigest()
    return {"revisionType": "AppSpecContent", "appSpecContent": {"content": content, "sha256": digest}}


def _since() -> datetime:
    """Where the attempt's deployment may start: before the activity was first scheduled (with clock slack)."""
    return activity.info().scheduled_time - timedelta(minutes=10)


def _with_details(exc: ApplicationError, refs: list[ArtifactRef], deployment_id: str | None) -> ApplicationError:
    """The failure, carrying the previous revision (a failed deployment is compensated from it too) and the
    deployment's id (status shows it)."""
    if not refs and deployment_id is None:
        return exc
    detail: dict[str, Any] = {
        COMPENSATION_ARTIFACTS_DETAIL: [ref.model_dump(mode="json", by_alias=True) for ref in refs]
    }
    if deployment_id is not None:
        detail[EXTERNAL_DETAIL] = deployment_id
    return ApplicationError(
        exc.message, *exc.details, detail, type=exc.type, non_retryable=exc.non_retryable,
        next_retry_delay=exc.next_retry_delay,
    )  # fmt: skip


def _log(context: ActionContext) -> Any:
    return structlog.get_logger().bind(
        pipeline=context.pipeline_name, execution=context.execution_id, stage=context.stage_name,
        action=context.action_name,
    )  # fmt: skip


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the CodeDeploy contracts (conveyor.providers.codedeploy)."""
    provider = CodeDeployProvider(settings, store)
    return [provider.codedeploy, provider.codedeploy_ecs, provider.codedeploy_compensate]
