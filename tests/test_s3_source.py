"""The S3 source provider against moto: the latest version, a version override, bad objects, the poll."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.providers.s3 import S3Provider, current_revision
from conveyor.aws.identity import AwsIdentity
from conveyor.model import ActionContext
from conveyor.providers.contract import PollRequest
from conveyor.providers.s3 import S3SourceInput
from conveyor.settings import S3Location, Settings
from conveyor.stores.artifacts import LocalArtifactStore
from conveyor.stores.logs import ActionLogName, action_log_reader
from tests.aws import Aws

CONTEXT = ActionContext(pipeline_name="shop", execution_id="exec-1", stage_name="Source", action_name="Fetch")
IDENTITY = AwsIdentity(session_name="conveyor-shop-exec-1")


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@pytest.fixture
def provider(tmp_path: Path) -> S3Provider:
    settings = Settings(data_dir=tmp_path / "data")
    return S3Provider(settings, LocalArtifactStore(settings.artifacts_dir))


def versioned_bucket(aws: Aws, name: str = "releases") -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def source(**extra: object) -> S3SourceInput:
    return S3SourceInput.model_validate(
        {"context": CONTEXT, "identity": IDENTITY, "bucket": "releases", "key": "app.zip", "outputArtifact": "Src"}
        | extra
    )


async def test_fetches_the_latest_version_and_stores_the_zip_as_it_is(aws: Aws, provider: S3Provider) -> None:
    versioned_bucket(aws)
    s3 = aws.client("s3")
    s3.put_object(Bucket="releases", Key="app.zip", Body=zip_bytes({"v.txt": "1"}))
    body = zip_bytes({"v.txt": "2", "src/app.py": "print(2)"})
    latest = s3.put_object(
        Bucket="releases", Key="app.zip", Body=body, Metadata={"codepipeline-artifact-revision-summary": "release 2"}
    )
    outcome = await ActivityEnvironment().run(provider.s3_source, source())
    assert outcome.output_variables == {"VersionId": latest["VersionId"], "ETag": latest["ETag"].strip('"')}
    assert outcome.source_revision is not None
    assert (outcome.source_revision.revision_id, outcome.source_revision.revision_summary) == (
        latest["VersionId"],
        "release 2",
    )
    (artifact,) = outcome.output_artifacts
    stored = provider.store.path_for(artifact.digest)  # type: ignore[attr-defined]
    assert stored.read_bytes() == body  # not re-packed
    provider.store.extract(artifact, provider.settings.data_dir / "out")
    assert (provider.settings.data_dir / "out" / "src" / "app.py").read_text() == "print(2)"


async def test_the_version_override_fetches_an_older_version(aws: Aws, provider: S3Provider) -> None:
    versioned_bucket(aws)
    s3 = aws.client("s3")
    first = s3.put_object(Bucket="releases", Key="app.zip", Body=zip_bytes({"v.txt": "1"}))
    s3.put_object(Bucket="releases", Key="app.zip", Body=zip_bytes({"v.txt": "2"}))
    outcome = await ActivityEnvironment().run(provider.s3_source, source(versionId=first["VersionId"]))
    assert outcome.output_variables["VersionId"] == first["VersionId"]
    provider.store.extract(outcome.output_artifacts[0], provider.settings.data_dir / "out")
    assert (provider.settings.data_dir / "out" / "v.txt").read_text() == "1"


async def test_an_unversioned_bucket_or_a_non_zip_fails_clearly(aws: Aws, provider: S3Provider) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="releases")
    s3.put_object(Bucket="releases", Key="app.zip", Body=zip_bytes({"v.txt": "1"}))
    with pytest.raises(Exception) as raised:
        await ActivityEnvironment().run(provider.s3_source, source())
    error = raised.value
    assert isinstance(error, ApplicationError) and error.non_retryable and error.type == "ConfigurationError"
    assert "bucket 'releases' is not versioned" in str(error)

    s3.put_bucket_versioning(Bucket="releases", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket="releases", Key="app.zip", Body=b"not a zip")
    with pytest.raises(ApplicationError, match=r"s3://releases/app.zip \(version .+\) is not a zip archive"):
        await ActivityEnvironment().run(provider.s3_source, source())
    with pytest.raises(ApplicationError, match="action 'Fetch': s3:GetObject on s3://releases/gone.zip failed") as gone:
        await ActivityEnvironment().run(provider.s3_source, source(key="gone.zip"))
    assert gone.value.type == "AwsNotFound" and gone.value.non_retryable


async def test_the_poll_reads_the_latest_version(aws: Aws, tmp_path: Path) -> None:
    versioned_bucket(aws)
    s3 = aws.client("s3")
    s3.put_object(Bucket="releases", Key="app.zip", Body=zip_bytes({"v.txt": "1"}))
    second = s3.put_object(Bucket="releases", Key="app.zip", Body=zip_bytes({"v.txt": "2"}))
    request = PollRequest(
        pipeline_name="shop",
        action_name="Fetch",
        configuration={"S3Bucket": "releases", "S3ObjectKey": "app.zip"},
        identity=IDENTITY,
    )
    revision = await current_revision(Settings(data_dir=tmp_path), request)
    assert revision.revision_id == second["VersionId"]
    assert revision.detail == f"s3://releases/app.zip version {second['VersionId']}"


async def test_with_an_s3_store_the_action_log_is_in_the_store(aws: Aws, tmp_path: Path) -> None:
    """Logs go to the worker's configured store like every provider's: readable from another host, none on disk."""
    versioned_bucket(aws)
    aws.client("s3").create_bucket(Bucket="conveyor-store")
    aws.client("s3").put_object(Bucket="releases", Key="app.zip", Body=zip_bytes({"v.txt": "1"}))
    settings = Settings(data_dir=tmp_path / "data", artifact_store=S3Location(bucket="conveyor-store", prefix="ci"))
    provider = S3Provider(settings, LocalArtifactStore(settings.artifacts_dir))
    await ActivityEnvironment().run(provider.s3_source, source())
    other_host = settings.model_copy(update={"data_dir": tmp_path / "other-host"})
    reader = action_log_reader(other_host, ActionLogName("shop", "exec-1", "Source", "Fetch"))
    assert reader.found() and b"s3://releases/app.zip" in reader.read_new()
    assert not (settings.data_dir / "logs").exists()
