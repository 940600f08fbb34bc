"""The S3 providers' activities: the Source (a zip object of a versioned bucket, stored as it is) and the
Deploy (an artifact written to a bucket, extracted or as its zip), and the Source's poll (the latest version)."""

from __future__ import annotations

import asyncio
import mimetypes
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.running import action_workspace, write_action_log
from activities.aws.session import AwsSessions, aws_errors
from conveyor.model import ActionOutcome, SourceRevision
from conveyor.providers.contract import PolledRevision, PollRequest
from conveyor.providers.s3 import (
    DEPLOY_ACTIVITY,
    SOURCE_ACTIVITY,
    S3DeployInput,
    S3SourceInput,
    expand_object_key,
)
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, store_for_outputs

# The object metadata CodePipeline reads a source revision's summary from.
SUMMARY_METADATA = "codepipeline-artifact-revision-summary"
_CHUNK = 1024 * 1024


class S3Provider:
    """Activities of the S3 Source and Deploy contracts; one instance per worker."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)

    @activity.defn(name=SOURCE_ACTIVITY)
    async def s3_source(self, input: S3SourceInput) -> ActionOutcome:
        async with action_workspace(self.settings, input.context) as workspace:
            outcome = await asyncio.to_thread(self._fetch, input, workspace)
        _log(input.context).info("s3.fetched", version=outcome.output_variables["VersionId"])
        return outcome

    @activity.defn(name=DEPLOY_ACTIVITY)
    async def s3_deploy(self, input: S3DeployInput) -> ActionOutcome:
        # Placeholders come from the activity's first scheduling, not this attempt's clock: a retry writes the same key.
        scheduled = activity.info().scheduled_time
        async with action_workspace(self.settings, input.context) as workspace:
            outcome = await asyncio.to_thread(self._deploy, input, workspace, scheduled)
        _log(input.context).info("s3.deployed", summary=outcome.summary)
        return outcome

    # --- Source ---------------------------------------------------------------------------------------------

    def _fetch(self, input: S3SourceInput, workspace: Path) -> ActionOutcome:
        action = input.context.action_name
        where = f"s3://{input.bucket}/{input.key}"
        role = self.sessions.role(input.identity)
        client = self.sessions.s3(input.identity, action)
        archive = workspace / "object.zip"
        with aws_errors(action, "s3:GetObject", role, target=where):
            if input.version_id:
                response = client.get_object(Bucket=input.bucket, Key=input.key, VersionId=input.version_id)
            else:
                response = client.get_object(Bucket=input.bucket, Key=input.key)
            with archive.open("wb") as out:
                for chunk in response["Body"].iter_chunks(_CHUNK):
                    out.write(chunk)
        version = response.get("VersionId")
        if not version or version == "null":
            raise ApplicationError(
                f"action '{action}': bucket '{input.bucket}' is not versioned: an S3 source reads a versioned bucket "
                "(turn on versioning, then upload the object again)",
                type="ConfigurationError",
                non_retryable=True,
            )
        if not zipfile.is_zipfile(archive):
            raise ApplicationError(
                f"action '{action}': {where} (version {version}) is not a zip archive: S3ObjectKey names a .zip",
                type="ArtifactError",
                non_retryable=True,
            )
        artifacts = []
        if input.output_artifact:
            try:
                artifacts.append(
                    store_for_outputs(self.store, input.context.artifact_stores).put_archive(
                        input.output_artifact, archive
                    )
                )
            except ArtifactError as exc:
                raise ApplicationError(str(exc), type="ArtifactError", non_retryable=True) from exc
        etag = response.get("ETag", "").strip('"')
        summary = response.get("Metadata", {}).get(SUMMARY_METADATA) or f"{where} version {version}"
        write_action_log(
            self.settings, input.context, [f"downloaded {where} version {version} ({archive.stat().st_size} bytes)"]
        )
        return ActionOutcome(
            output_variables={"ETag": etag, "VersionId": version},
            output_artifacts=artifacts,
            summary=summary,
            source_revision=SourceRevision(action_name=action, revision_id=version, revision_summary=summary),
        )

    # --- Deploy ---------------------------------------------------------------------------------------------

    def _deploy(self, input: S3DeployInput, workspace: Path, scheduled: datetime) -> ActionOutcome:
        action = input.context.action_name
        role = self.sessions.role(input.identity)
        client = self.sessions.s3(input.identity, action)
        key = expand_object_key(input.object_key, scheduled, input.context) if input.object_key else None
        extra: dict[str, Any] = {}
        if input.kms_key_arn:
            extra |= {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": input.kms_key_arn}
        if input.canned_acl:
            extra["ACL"] = input.canned_acl
        if input.cache_control:
            extra["CacheControl"] = input.cache_control
        uploads: list[tuple[Path, str, str]] = []  # (file, key, content type)
        skipped: list[str] = []
        try:
            if input.extract:
                root = workspace / "artifact"
                self.store.extract(input.artifact, root)
                for path in sorted(root.rglob("*")):
                    relative = path.relative_to(root).as_posix()
                    if path.is_symlink():
                        skipped.append(relative)  # S3 has no links; the file it points at is uploaded itself
                    elif path.is_file():
                        object_key = f"{key.rstrip('/')}/{relative}" if key else relative
                        content_type = mimetypes.guess_type(relative)[0] or "application/octet-stream"
                        uploads.append((path, object_key, content_type))
            else:
                if key is None:  # validation requires ObjectKey without Extract; this guards a hand-made input
                    raise ApplicationError(
                        f"action '{action}': ObjectKey is required when Extract is false",
                        type="ConfigurationError",
                        non_retryable=True,
                    )
                archive = workspace / "artifact.zip"
                self.store.get_archive(input.artifact, archive)
                uploads.append((archive, key, "application/zip"))
        except ArtifactError as exc:
            raise ApplicationError(str(exc), type="ArtifactError", non_retryable=True) from exc
        lines = []
        for path, object_key, content_type in uploads:
            # PutObject of the same key and bytes is idempotent: a retried attempt writes the same objects.
            with (
                aws_errors(action, "s3:PutObject", role, target=f"s3://{input.bucket}/{object_key}"),
                path.open("rb") as body,
            ):
                client.put_object(Bucket=input.bucket, Key=object_key, Body=body, ContentType=content_type, **extra)
            lines.append(f"uploaded s3://{input.bucket}/{object_key} ({path.stat().st_size} bytes, {content_type})")
        lines += [f"skipped symlink {name}" for name in skipped]
        write_action_log(self.settings, input.context, lines)
        if input.extract:
            prefix = f"s3://{input.bucket}/{key.rstrip('/')}/" if key else f"s3://{input.bucket}/"
            summary = f"{len(uploads)} files of {input.artifact.name} to {prefix}"
        else:
            summary = f"{input.artifact.name} to s3://{input.bucket}/{key}"
        return ActionOutcome(summary=summary)


async def current_revision(settings: Settings, request: PollRequest) -> PolledRevision:
    """The poll: the object's latest version id (an execution starts for a version never seen)."""
    return await asyncio.to_thread(_latest_version, settings, request)


def _latest_version(settings: Settings, request: PollRequest) -> PolledRevision:
    assert request.identity is not None, "an S3 source's poll carries its identity"
    bucket, key = request.configuration["S3Bucket"], request.configuration["S3ObjectKey"]
    sessions = AwsSessions(settings)
    client = sessions.s3(request.identity, request.action_name)
    with aws_errors(
        request.action_name, "s3:HeadObject", sessions.role(request.identity), target=f"s3://{bucket}/{key}"
    ):
        head = client.head_object(Bucket=bucket, Key=key)
    version = head.get("VersionId")
    if not version or version == "null":
        raise ApplicationError(
            f"action '{request.action_name}': bucket '{bucket}' is not versioned: an S3 source polls object versions",
            type="ConfigurationError",
            non_retryable=True,
        )
    return PolledRevision(revision_id=version, detail=f"s3://{bucket}/{key} version {version}")


def _log(context: Any) -> Any:
    return structlog.get_logger().bind(
        pipeline=context.pipeline_name, execution=context.execution_id, stage=context.stage_name,
        action=context.action_name,
    )  # fmt: skip


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the S3 contracts (conveyor.providers.s3)."""
    provider = S3Provider(settings, store)
    return [provider.s3_source, provider.s3_deploy]
