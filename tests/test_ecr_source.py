"""The ECR source provider against moto's ECR (put_image with a manifest): imageDetail.json, outputs, the digest
override, the poll."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.providers.ecr import EcrProvider, current_revision
from conveyor.aws.identity import AwsIdentity
from conveyor.model import ActionContext
from conveyor.providers.contract import PollRequest
from conveyor.providers.ecr import EcrSourceInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import LocalArtifactStore
from tests.aws import ACCOUNT, REGION, Aws

CONTEXT = ActionContext(pipeline_name="shop", execution_id="exec-1", stage_name="Source", action_name="Image")
IDENTITY = AwsIdentity(session_name="conveyor-shop-exec-1")


def push(aws: Aws, tag: str, layer: str) -> str:
    """put_image of a manifest; the digest moto gives it."""
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7023,
                       "digest": "sha256:" + "a" * 64},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 32654,
                        "digest": "sha256:" + layer * 64}],
        }
    )  # fmt: skip
    image = aws.client("ecr").put_image(repositoryName="web", imageManifest=manifest, imageTag=tag)["image"]
    digest: str = image["imageId"]["imageDigest"]
    return digest


@pytest.fixture
def provider(tmp_path: Path) -> EcrProvider:
    settings = Settings(data_dir=tmp_path / "data")
    return EcrProvider(settings, LocalArtifactStore(settings.artifacts_dir))


async def test_reads_the_tag_and_writes_image_detail_json(aws: Aws, provider: EcrProvider) -> None:
    aws.client("ecr").create_repository(repositoryName="web")
    old = push(aws, "v1", "b")
    digest = push(aws, "latest", "c")
    source = EcrSourceInput(context=CONTEXT, identity=IDENTITY, repository="web", output_artifact="Image")
    outcome = await ActivityEnvironment().run(provider.ecr_source, source)
    uri = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/web@{digest}"
    assert outcome.output_variables == {
        "RegistryId": ACCOUNT,
        "RepositoryName": "web",
        "ImageTag": "latest",
        "ImageDigest": digest,
        "ImageURI": uri,
    }
    assert outcome.source_revision is not None and outcome.source_revision.revision_id == digest
    (artifact,) = outcome.output_artifacts
    with zipfile.ZipFile(provider.store.path_for(artifact.digest)) as archive:  # type: ignore[attr-defined]
        assert archive.namelist() == ["imageDetail.json"]
        detail = json.loads(archive.read("imageDetail.json"))
    assert list(detail) == [
        "ImageSizeInBytes", "ImageDigest", "Version", "ImagePushedAt", "RegistryId", "RepositoryName", "ImageURI",
        "ImageTags",
    ]  # fmt: skip
    assert (detail["ImageURI"], detail["ImageDigest"], detail["Version"], detail["ImageTags"]) == (
        uri,
        digest,
        "1.0",
        ["latest"],
    )
    assert detail["ImageSizeInBytes"].isdigit() and detail["ImagePushedAt"].endswith(
        " UTC " + detail["ImagePushedAt"][-4:]
    )

    pinned = await ActivityEnvironment().run(provider.ecr_source, source.model_copy(update={"digest": old}))
    assert pinned.output_variables["ImageDigest"] == old


async def test_a_missing_image_or_repository_fails_without_retry(aws: Aws, provider: EcrProvider) -> None:
    aws.client("ecr").create_repository(repositoryName="web")
    source = EcrSourceInput(context=CONTEXT, identity=IDENTITY, repository="web", tag="nope")
    with pytest.raises(ApplicationError, match="ecr:DescribeImages on web:nope failed") as raised:
        await ActivityEnvironment().run(provider.ecr_source, source)
    assert raised.value.non_retryable
    with pytest.raises(ApplicationError, match="on other:latest") as missing:
        await ActivityEnvironment().run(
            provider.ecr_source, source.model_copy(update={"repository": "other", "tag": "latest"})
        )
    assert missing.value.type == "AwsNotFound"


async def test_the_poll_reads_the_tags_digest(aws: Aws, tmp_path: Path) -> None:
    aws.client("ecr").create_repository(repositoryName="web")
    push(aws, "latest", "b")
    request = PollRequest(
        pipeline_name="shop", action_name="Image", configuration={"RepositoryName": "web"}, identity=IDENTITY
    )
    first = await current_revision(Settings(data_dir=tmp_path), request)
    moved = push(aws, "latest", "c")
    second = await current_revision(Settings(data_dir=tmp_path), request)
    assert first.revision_id != second.revision_id == moved
