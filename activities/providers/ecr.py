"""The ECR source provider's activities: an image by tag (or digest override) as `imageDetail.json`, and its
poll (the tag's current digest)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.running import action_workspace, write_action_log
from activities.aws.session import AwsSessions, aws_errors
from conveyor.aws.identity import AwsIdentity
from conveyor.model import ActionOutcome, SourceRevision
from conveyor.providers.contract import PolledRevision, PollRequest
from conveyor.providers.ecr import ACTIVITY, DEFAULT_TAG, IMAGE_DETAIL_FILE, EcrSourceInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, store_for_outputs

if TYPE_CHECKING:
    from mypy_boto3_ecr.type_defs import ImageDetailTypeDef


class EcrProvider:
    """Activities of the ECR source contract; one instance per worker."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)

    @activity.defn(name=ACTIVITY)
    async def ecr_source(self, input: EcrSourceInput) -> ActionOutcome:
        async with action_workspace(self.settings, input.context) as workspace:
            outcome = await asyncio.to_thread(self._fetch, input, workspace)
        ctx = input.context
        structlog.get_logger().bind(
            pipeline=ctx.pipeline_name, execution=ctx.execution_id, stage=ctx.stage_name, action=ctx.action_name
        ).info("ecr.fetched", digest=outcome.output_variables["ImageDigest"])
        return outcome

    def _fetch(self, input: EcrSourceInput, workspace: Path) -> ActionOutcome:
        action = input.context.action_name
        detail, region = describe_image(
            self.sessions, input.identity, action, input.repository, input.tag, input.digest
        )
        document = image_detail_document(detail, region)
        artifacts = []
        if input.output_artifact:
            (workspace / "out").mkdir()
            (workspace / "out" / IMAGE_DETAIL_FILE).write_text(json.dumps(document, indent=4) + "\n")
            try:
                outputs = store_for_outputs(self.store, input.context.artifact_stores)
                artifacts.append(outputs.put(input.output_artifact, workspace / "out", [IMAGE_DETAIL_FILE]))
            except ArtifactError as exc:
                raise ApplicationError(str(exc), type="ArtifactError", non_retryable=True) from exc
        digest, uri = document["ImageDigest"], document["ImageURI"]
        write_action_log(self.settings, input.context, [f"image {uri}"])
        return ActionOutcome(
            output_variables={
                "RegistryId": document["RegistryId"],
                "RepositoryName": document["RepositoryName"],
                "ImageTag": input.tag,
                "ImageDigest": digest,
                "ImageURI": uri,
            },
            output_artifacts=artifacts,
            summary=f"{input.repository}:{input.tag} {digest}" if not input.digest else f"{input.repository}@{digest}",
            source_revision=SourceRevision(action_name=action, revision_id=digest, revision_summary=uri),
        )


def describe_image(
    sessions: AwsSessions, identity: AwsIdentity, action: str, repository: str, tag: str, digest: str | None
) -> tuple[ImageDetailTypeDef, str]:
    """The image (by digest when given, else by tag) and the region it was read in."""
    client = sessions.ecr(identity, action)
    image_id: dict[str, str] = {"imageDigest": digest} if digest else {"imageTag": tag}
    target = f"{repository}@{digest}" if digest else f"{repository}:{tag}"
    with aws_errors(action, "ecr:DescribeImages", sessions.role(identity), target=target):
        response = client.describe_images(repositoryName=repository, imageIds=[image_id])  # type: ignore[list-item]
    details = response.get("imageDetails", [])
    if not details:
        raise ApplicationError(f"action '{action}': no image {target} in ECR", type="AwsNotFound", non_retryable=True)
    return details[0], client.meta.region_name


def image_detail_document(detail: ImageDetailTypeDef, region: str) -> dict[str, Any]:
    """imageDetail.json as CodePipeline's ECR source writes it (sizes as strings, the push time in its format)."""
    registry, repository, digest = detail["registryId"], detail["repositoryName"], detail["imageDigest"]
    pushed = detail.get("imagePushedAt")
    return {
        "ImageSizeInBytes": str(detail.get("imageSizeInBytes", 0)),
        "ImageDigest": digest,
        "Version": "1.0",
        "ImagePushedAt": pushed.strftime("%a %b %d %H:%M:%S UTC %Y") if pushed else "",
        "RegistryId": registry,
        "RepositoryName": repository,
        "ImageURI": f"{registry}.dkr.ecr.{region}.amazonaws.com/{repository}@{digest}",
        "ImageTags": list(detail.get("imageTags", [])),
    }


async def current_revision(settings: Settings, request: PollRequest) -> PolledRevision:
    """The poll: the tag's current digest (an execution starts for a digest never seen)."""
    assert request.identity is not None, "an ECR source's poll carries its identity"
    repository = request.configuration["RepositoryName"]
    tag = request.configuration.get("ImageTag") or DEFAULT_TAG
    detail, _ = await asyncio.to_thread(
        describe_image, AwsSessions(settings), request.identity, request.action_name, repository, tag, None
    )
    digest = detail["imageDigest"]
    return PolledRevision(revision_id=digest, detail=f"{repository}:{tag} at {digest[:19]}")


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the ECR contract (conveyor.providers.ecr)."""
    return [EcrProvider(settings, store).ecr_source]
