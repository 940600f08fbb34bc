"""The `aws` CodeBuild runner: StartBuild on the real project, followed until the build ends.

- Inputs go to the build as S3 source overrides from the S3 artifact store (an input kept in the worker's local
  store is uploaded there first); outputs come back as S3 artifact overrides, downloaded and re-stored
  content-addressed (put_archive), so later actions read them like any other artifact.
- Never two builds for one action attempt: the idempotency token is derived from the attempt, the build id is kept in
  the heartbeat, and a retried activity with no heartbeat (its worker died between StartBuild and the first beat)
  first looks for a build carrying the attempt's marker variable (activities/codebuild/aws_build.py).
- BatchGetBuilds every `Settings.codebuild_poll_seconds`, a heartbeat on every poll and between them; the phases,
  the CloudWatch deep link and the build's end go to the action log. A stop or an abandon (a cancellation) stops
  the build, waits a bounded time for it to end, then lets the cancellation through.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.session import AwsSessions, aws_errors, refused
from activities.codebuild.aws_build import (
    S3Prefix,
    attempt_marker,
    build_phases,
    exported_variables,
    failure_message,
    finished,
    outputs_prefix,
    start_build_request,
    started_by,
)
from conveyor.model import PHASES_DETAIL, ActionOutcome, ArtifactRef, CamelModel
from conveyor.providers.codebuild import CodeBuildInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import (
    ArtifactError,
    ArtifactStore,
    ConfiguredArtifactStore,
    replicate_for_action,
    store_for_outputs,
)
from conveyor.stores.logs import ActionLogName, ActionLogWriter, attempt_label, open_action_log
from conveyor.stores.s3 import S3ArtifactStore, parse_object_url

if TYPE_CHECKING:
    from mypy_boto3_codebuild import CodeBuildClient
    from mypy_boto3_codebuild.type_defs import BuildTypeDef
    from mypy_boto3_s3 import S3Client

HEARTBEAT_SECONDS = 2.0
STOP_WAIT_SECONDS = 60.0  # how long a stopped build is followed until it reports its end
LOOKUP_PAGES = 3  # ListBuildsForProject pages (100 builds each, newest first) searched for an earlier attempt's build
LOOKUP_MARGIN = timedelta(minutes=5)  # clock skew allowed when deciding a build is older than the activity


class BuildHeartbeat(CamelModel):
    """What the activity's heartbeat carries: the build it follows."""

    build_id: str


class AwsRunner:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)

    async def run(self, input: CodeBuildInput) -> ActionOutcome:
        ctx = input.context
        log = structlog.get_logger().bind(
            pipeline=ctx.pipeline_name, execution=ctx.execution_id, stage=ctx.stage_name, action=ctx.action_name
        )
        name = ActionLogName(ctx.pipeline_name, ctx.execution_id, ctx.stage_name, ctx.action_name)
        label = attempt_label(ctx.action_attempt, activity.info().attempt)
        writer = await asyncio.to_thread(open_action_log, self.settings, name, label)
        try:
            return await self._run(input, _BuildLog(writer), log)
        finally:
            with contextlib.suppress(Exception):  # the log's end never changes the action's result
                await asyncio.shield(asyncio.to_thread(writer.close))

    async def _run(self, input: CodeBuildInput, build_log: _BuildLog, log: Any) -> ActionOutcome:
        store = self._s3_store(input)
        build_id = _heartbeat_build_id()
        beat = _Heartbeat(build_id)
        beating = asyncio.create_task(beat.forever())  # also while inputs upload: a large one takes a while
        try:
            codebuild = await asyncio.to_thread(self._codebuild, input)
            if build_id is not None:
                await build_log.write(f"[conveyor] following build {build_id} (started by an earlier attempt)")
            else:
                build_id = await self._find_or_start(codebuild, input, store, build_log, log)
                beat.follow(build_id)
            try:
                build = await self._follow(codebuild, input, build_id, build_log)
            except asyncio.CancelledError:
                log.warning("codebuild.cancelled", build=build_id)
                await asyncio.shield(self._stop(codebuild, input, build_id, build_log))
                raise
        finally:
            beating.cancel()
        if build.get("buildStatus") != "SUCCEEDED":
            link = build.get("logs", {}).get("deepLink")
            where = f"; build logs: {link}" if link else ""
            raise ApplicationError(
                f"action '{input.context.action_name}': {failure_message(build)}{where}",
                {PHASES_DETAIL: [phase.model_dump(mode="json") for phase in build_phases(build)]},  # for status
                type="BuildFailed",
                non_retryable=True,
            )
        artifacts = await asyncio.to_thread(self._collect_artifacts, input, store)
        log.info("codebuild.succeeded", build=build_id)
        return ActionOutcome(
            output_variables=exported_variables(build),
            output_artifacts=artifacts,
            summary=f"build {build_id} succeeded",
            external_url=build.get("logs", {}).get("deepLink"),
            phases=build_phases(build),
        )

    # --- where things are -----------------------------------------------------------------------------

    def _s3_store(self, input: CodeBuildInput) -> S3ArtifactStore:
        """The S3 store the build reads its inputs from and writes its outputs to: the pipeline's declared one (on a
        worker configured for AWS), else the worker's configured S3 store."""
        try:
            store = store_for_outputs(self.store, input.context.artifact_stores)
        except ArtifactError as exc:
            raise refused(f"action '{input.context.action_name}': {exc}", "ArtifactError") from None
        if isinstance(store, ConfiguredArtifactStore):
            store = store.default
        if isinstance(store, S3ArtifactStore):
            return store
        raise refused(
            f"action '{input.context.action_name}': the aws CodeBuild runner passes artifacts to CodeBuild through S3, "
            "but this worker's artifact store is local: set CONVEYOR_ARTIFACT_STORE=s3://<bucket>/<prefix>, or "
            "declare the pipeline's artifactStore and run the worker with CONVEYOR_AWS=true"
        )

    def _codebuild(self, input: CodeBuildInput) -> CodeBuildClient:
        return self.sessions.client(input.identity, "codebuild", input.context.action_name)

    def _s3(self, input: CodeBuildInput) -> S3Client:
        return self.sessions.s3(input.identity, input.context.action_name)

    def _errors(self, input: CodeBuildInput, call: str) -> contextlib.AbstractContextManager[None]:
        return aws_errors(
            input.context.action_name, call, self.sessions.role(input.identity), target=input.project_name
        )

    # --- one build per action attempt -----------------------------------------------------------------

    async def _find_or_start(
        self, codebuild: CodeBuildClient, input: CodeBuildInput, store: S3ArtifactStore, build_log: _BuildLog, log: Any
    ) -> str:
        since = activity.info().scheduled_time - LOOKUP_MARGIN
        found = await asyncio.to_thread(self._find_started_build, codebuild, input, since)
        if found is not None:
            await build_log.write(f"[conveyor] found build {found} started by an earlier attempt")
            return found
        # A cancellation arriving while StartBuild is on its way must not leave the build running unseen.
        starting = asyncio.ensure_future(asyncio.to_thread(self._start_build, codebuild, input, store))
        try:
            build_id = await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                started = await starting
                await self._stop(codebuild, input, started, build_log)
            raise
        log.info("codebuild.started", build=build_id)
        await build_log.write(f"[conveyor] started build {build_id} of project {input.project_name}")
        return build_id

    def _find_started_build(self, codebuild: CodeBuildClient, input: CodeBuildInput, since: datetime) -> str | None:
        """The build an earlier activity of this attempt started (its marker variable), among the project's builds
        started since this activity was first scheduled."""
        marker = attempt_marker(input.context)
        token: str | None = None
        for _ in range(LOOKUP_PAGES):
            with self._errors(input, "codebuild:ListBuildsForProject"):
                page = (
                    codebuild.list_builds_for_project(
                        projectName=input.project_name, sortOrder="DESCENDING", nextToken=token
                    )
                    if token
                    else codebuild.list_builds_for_project(projectName=input.project_name, sortOrder="DESCENDING")
                )
            ids = page.get("ids", [])
            if not ids:
                return None
            with self._errors(input, "codebuild:BatchGetBuilds"):
                builds = codebuild.batch_get_builds(ids=ids[:100])["builds"]
            for build in builds:
                if started_by(build, marker):
                    return build["id"]
            if any(b.get("startTime") is not None and b["startTime"] < since for b in builds):
                return None  # older than this activity: an earlier attempt's build would be newer
            token = page.get("nextToken")
            if not token:
                return None
        return None

    def _start_build(self, codebuild: CodeBuildClient, input: CodeBuildInput, store: S3ArtifactStore) -> str:
        sources = [self._s3_source(ref, store, input) for ref in input.input_artifacts]
        outputs = outputs_prefix(store.location.bucket, store.location.prefix, input.context)
        request = start_build_request(input, sources, outputs)
        with self._errors(input, "codebuild:StartBuild"):
            return codebuild.start_build(**request)["build"]["id"]

    def _s3_source(self, ref: ArtifactRef, store: S3ArtifactStore, input: CodeBuildInput) -> str:
        """`bucket/key` of the input's zip in S3; an input in the local store is uploaded to `store` first, one in
        another region's store is replicated to the action's region's (CodeBuild reads its own region's buckets)."""
        try:
            ref = replicate_for_action(self.store, ref, input.context.artifact_stores)
        except ArtifactError as exc:
            raise refused(f"input artifact '{ref.name}': {exc}", "ArtifactError") from None
        parsed = parse_object_url(ref.location)
        if parsed is None:
            with tempfile.TemporaryDirectory(dir=self._tmp_dir()) as tmp:
                archive = Path(tmp) / "artifact.zip"
                try:
                    self.store.get_archive(ref, archive)
                    parsed = parse_object_url(store.put_archive(ref.name, archive).location)
                except ArtifactError as exc:
                    raise refused(f"input artifact '{ref.name}': {exc}", "ArtifactError") from None
            assert parsed is not None  # the S3 store's refs are S3 URLs
        bucket, key = parsed
        return f"{bucket}/{key}"

    def _tmp_dir(self) -> Path:
        path = self.settings.data_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- following, stopping ---------------------------------------------------------------------------

    def _get_build(self, codebuild: CodeBuildClient, input: CodeBuildInput, build_id: str) -> BuildTypeDef:
        with self._errors(input, "codebuild:BatchGetBuilds"):
            builds = codebuild.batch_get_builds(ids=[build_id])["builds"]
        if not builds:
            raise refused(
                f"action '{input.context.action_name}': CodeBuild no longer knows build {build_id}", "AwsNotFound"
            )
        return builds[0]

    async def _follow(
        self, codebuild: CodeBuildClient, input: CodeBuildInput, build_id: str, build_log: _BuildLog
    ) -> BuildTypeDef:
        while True:
            build = await asyncio.to_thread(self._get_build, codebuild, input, build_id)
            await build_log.build(build)
            if finished(build):
                return build
            await asyncio.sleep(self.settings.codebuild_poll_seconds)

    async def _stop(
        self, codebuild: CodeBuildClient, input: CodeBuildInput, build_id: str, build_log: _BuildLog
    ) -> None:
        """StopBuild, then follow the build until it ends (at most STOP_WAIT_SECONDS); failures are logged, never
        raised: the cancellation goes on either way."""
        log = structlog.get_logger().bind(build=build_id)
        try:
            await build_log.write(f"[conveyor] stopping build {build_id}")
            with self._errors(input, "codebuild:StopBuild"):
                await asyncio.to_thread(codebuild.stop_build, id=build_id)
            deadline = time.monotonic() + STOP_WAIT_SECONDS
            while time.monotonic() < deadline:
                activity.heartbeat(BuildHeartbeat(build_id=build_id).model_dump(mode="json", by_alias=True))
                build = await asyncio.to_thread(self._get_build, codebuild, input, build_id)
                await build_log.build(build)
                if finished(build):
                    return
                await asyncio.sleep(self.settings.codebuild_poll_seconds)
            await build_log.write(f"[conveyor] build {build_id} had not stopped after {STOP_WAIT_SECONDS:.0f} s")
        except (ApplicationError, ClientError, BotoCoreError) as exc:
            log.warning("codebuild.stop_failed", error=str(exc))
            await build_log.write(f"[conveyor] could not stop build {build_id}: {exc}")

    # --- outputs ---------------------------------------------------------------------------------------

    def _collect_artifacts(self, input: CodeBuildInput, store: S3ArtifactStore) -> list[ArtifactRef]:
        """Each output artifact's zip, as the build wrote it, re-stored content-addressed in the outputs' store."""
        outputs = outputs_prefix(store.location.bucket, store.location.prefix, input.context)
        try:
            target = store_for_outputs(self.store, input.context.artifact_stores)
        except ArtifactError as exc:
            raise refused(str(exc), "ArtifactError") from None
        s3 = self._s3(input)
        refs: list[ArtifactRef] = []
        with tempfile.TemporaryDirectory(dir=self._tmp_dir()) as tmp:
            for name in input.output_artifacts:
                archive = Path(tmp) / f"{len(refs)}.zip"
                refs.append(self._restore(input, s3, target, outputs, name, archive))
        return refs

    def _restore(
        self, input: CodeBuildInput, s3: S3Client, target: ArtifactStore, outputs: S3Prefix, name: str, archive: Path
    ) -> ArtifactRef:
        key = outputs.key(name)
        try:
            with aws_errors(
                input.context.action_name,
                "s3:GetObject",
                self.sessions.role(input.identity),
                target=f"s3://{outputs.bucket}/{key}",
            ):
                s3.download_file(outputs.bucket, key, str(archive))
        except ApplicationError as exc:
            if exc.type != "AwsNotFound":
                raise
            raise refused(
                f"action '{input.context.action_name}': the build succeeded but wrote no output artifact '{name}' "
                f"(s3://{outputs.bucket}/{key}): list it in the buildspec's artifacts (secondary-artifacts with "
                f"identifier {name} for all but the first output)",
                "ArtifactError",
            ) from None
        try:
            return target.put_archive(name, archive)
        except ArtifactError as exc:
            raise refused(f"output artifact '{name}': {exc}", "ArtifactError") from None


class _BuildLog:
    """The action log's view of the build: what was started, each phase once it ends, where CloudWatch has the
    build's own output, how it ended."""

    def __init__(self, writer: ActionLogWriter) -> None:
        self.writer = writer
        self._phases: set[str] = set()
        self._link_written = False
        self._end_written = False

    async def write(self, line: str) -> None:
        await asyncio.to_thread(self._write, [line])

    async def build(self, build: BuildTypeDef) -> None:
        lines = []
        link = build.get("logs", {}).get("deepLink")
        if link and not self._link_written:
            lines.append(f"[conveyor] build logs: {link}")
            self._link_written = True
        for phase in build_phases(build):
            if phase.status is None or phase.name in self._phases:
                continue
            self._phases.add(phase.name)
            took = ""
            if phase.started_at and phase.finished_at:
                took = f" ({(phase.finished_at - phase.started_at).total_seconds():.0f} s)"
            lines.append(f"[conveyor] phase {phase.name} {phase.status}{took}")
        if finished(build) and not self._end_written:
            lines.append(f"[conveyor] build {build.get('id')} {build.get('buildStatus')}")
            self._end_written = True
        if lines:
            await asyncio.to_thread(self._write, lines)

    def _write(self, lines: list[str]) -> None:
        self.writer.write("".join(f"{line}\n" for line in lines))
        self.writer.flush()


def _heartbeat_build_id() -> str | None:
    """The build an earlier activity of this attempt heartbeated."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        return BuildHeartbeat.model_validate(details[0]).build_id
    except ValidationError:
        return None


class _Heartbeat:
    """Beats well inside the heartbeat timeout; once a build is known, every beat carries its id."""

    def __init__(self, build_id: str | None) -> None:
        self.details: list[dict[str, Any]] = []
        if build_id is not None:
            self.follow(build_id)

    def follow(self, build_id: str) -> None:
        self.details = [BuildHeartbeat(build_id=build_id).model_dump(mode="json", by_alias=True)]
        activity.heartbeat(*self.details)

    async def forever(self) -> None:
        timeout = activity.info().heartbeat_timeout
        interval = (
            HEARTBEAT_SECONDS if timeout is None else max(0.1, min(HEARTBEAT_SECONDS, timeout.total_seconds() / 3))
        )
        while True:
            activity.heartbeat(*self.details)
            await asyncio.sleep(interval)
