"""The S3 deploy provider against moto: Extract true (each file, content types) and false (the zip as ObjectKey,
placeholders stable across retries), and the configuration rules validation enforces."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.providers.s3 import S3Provider
from conveyor.aws.identity import AwsIdentity
from conveyor.model import ActionContext, ArtifactRef
from conveyor.providers.s3 import S3DeployInput, expand_object_key
from conveyor.settings import Settings
from conveyor.spec import validate_pipeline
from conveyor.stores.artifacts import LocalArtifactStore
from tests.aws import Aws

CONTEXT = ActionContext(pipeline_name="shop", execution_id="exec-1", stage_name="Prod", action_name="Publish")
IDENTITY = AwsIdentity(session_name="conveyor-shop-exec-1")


@pytest.fixture
def provider(tmp_path: Path) -> S3Provider:
    settings = Settings(data_dir=tmp_path / "data")
    return S3Provider(settings, LocalArtifactStore(settings.artifacts_dir))


@pytest.fixture
def site(tmp_path: Path, provider: S3Provider) -> ArtifactRef:
    root = tmp_path / "site"
    (root / "css").mkdir(parents=True)
    (root / "index.html").write_text("<h1>shop</h1>")
    (root / "css" / "site.css").write_text("h1 {}")
    (root / "data.bin").write_bytes(b"\x00\x01")
    return provider.store.put("Site", root, ["**/*"])


def deploy(site: ArtifactRef, **extra: object) -> S3DeployInput:
    return S3DeployInput.model_validate(
        {"context": CONTEXT, "identity": IDENTITY, "bucket": "web", "artifact": site} | extra
    )


async def test_extract_uploads_each_file_with_its_content_type_and_settings(
    aws: Aws, provider: S3Provider, site: ArtifactRef
) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="web")
    kms = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    outcome = await ActivityEnvironment().run(
        provider.s3_deploy,
        deploy(site, extract=True, objectKey="v1/", kmsKeyArn=kms, cannedAcl="public-read", cacheControl="max-age=60"),
    )
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="web")["Contents"])
    assert keys == ["v1/css/site.css", "v1/data.bin", "v1/index.html"]
    index = s3.head_object(Bucket="web", Key="v1/index.html")
    assert index["ContentType"] == "text/html" and index["CacheControl"] == "max-age=60"
    assert index["ServerSideEncryption"] == "aws:kms" and index["SSEKMSKeyId"] == kms
    assert s3.head_object(Bucket="web", Key="v1/css/site.css")["ContentType"] == "text/css"
    assert s3.head_object(Bucket="web", Key="v1/data.bin")["ContentType"] == "application/octet-stream"
    grants = s3.get_object_acl(Bucket="web", Key="v1/index.html")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)
    assert outcome.summary == "3 files of Site to s3://web/v1/"
    log = provider.settings.logs_dir / "shop" / "exec-1" / "Prod" / "Publish.log"
    assert "uploaded s3://web/v1/index.html" in log.read_text()


async def test_without_extract_the_zip_is_written_as_object_key_with_stable_placeholders(
    aws: Aws, provider: S3Provider, site: ArtifactRef
) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket="web")
    request = deploy(site, extract=False, objectKey="builds/site-{datetime}-{uuid}.zip")
    await ActivityEnvironment().run(provider.s3_deploy, request)
    await ActivityEnvironment().run(provider.s3_deploy, request)  # the same activity again: the same key
    (only,) = s3.list_objects_v2(Bucket="web")["Contents"]
    assert re.fullmatch(r"builds/site-\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-[0-9a-f-]{36}\.zip", only["Key"]), only["Key"]
    stored = provider.store.path_for(site.digest)  # type: ignore[attr-defined]
    assert s3.get_object(Bucket="web", Key=only["Key"])["Body"].read() == stored.read_bytes()


def test_placeholders_derive_from_the_attempt_not_the_clock() -> None:
    when = datetime(2019, 1, 10, 7, 39, 57, tzinfo=UTC)
    key = expand_object_key("app-{datetime}-{uuid}.zip", when, CONTEXT)
    assert key.startswith("app-2019-01-10_07-39-57-") and uuid.UUID(key[24:-4])
    assert expand_object_key("app-{uuid}.zip", when, CONTEXT) == expand_object_key("app-{uuid}.zip", when, CONTEXT)
    retried = CONTEXT.model_copy(update={"action_attempt": 2})  # a declared retry is a new attempt: a new uuid
    assert expand_object_key("{uuid}", when, retried) != expand_object_key("{uuid}", when, CONTEXT)


@pytest.mark.parametrize(
    ("configuration", "message"),
    [
        (
            {"BucketName": "web", "Extract": "false"},
            "configuration.ObjectKey: provider 'S3': ObjectKey is required when Extract is false",
        ),
        ({"BucketName": "web"}, "provider 'S3' needs configuration key 'Extract'"),
        ({"BucketName": "web", "Extract": "yes"}, "'yes' is not a boolean"),
        ({"BucketName": "web", "Extract": "TRUE", "CannedACL": "everyone"}, "'everyone' is not a canned ACL"),
        ({"BucketName": "web", "Extract": "true", "S3Bucket": "x"}, "'S3Bucket' is not a configuration key"),
    ],
)
def test_validation_of_the_deploy_configuration(configuration: dict[str, str], message: str) -> None:
    declaration = {
        "name": "shop",
        "stages": [
            {
                "name": "Source",
                "actions": [
                    {
                        "name": "Fetch",
                        "provider": "S3",
                        "configuration": {"S3Bucket": "releases", "S3ObjectKey": "app.zip"},
                        "outputArtifacts": [{"name": "Site"}],
                    }
                ],
            },
            {
                "name": "Prod",
                "actions": [
                    {
                        "name": "Publish",
                        "actionTypeId": {"category": "Deploy", "owner": "AWS", "provider": "S3", "version": "1"},
                        "configuration": configuration,
                        "inputArtifacts": [{"name": "Site"}],
                    }
                ],
            },
        ],
    }
    report = validate_pipeline(declaration)
    assert [e for e in report.errors if message in e.render("p")], [e.render("p") for e in report.errors]
    fine = validate_pipeline(
        declaration
        | {"stages": [declaration["stages"][0], {**declaration["stages"][1], "actions": [{
            **declaration["stages"][1]["actions"][0], "configuration": {"BucketName": "web", "Extract": "true"}}]}]}
    )  # fmt: skip
    assert fine.ok, [e.render("p") for e in fine.errors]
