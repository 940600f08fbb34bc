"""AccessDenied through moto's IAM enforcement. The switch is process-wide, so this module runs its own moto server
and turns enforcement off again in `finally`: the session's server (tests/aws.py) never sees it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.providers.s3 import S3Provider
from conveyor.aws.identity import AwsIdentity
from conveyor.model import ActionContext
from conveyor.providers.s3 import S3DeployInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import LocalArtifactStore
from tests.aws import moto_server

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/read-only"
CONTEXT = ActionContext(pipeline_name="shop", execution_id="exec-1", stage_name="Prod", action_name="Publish")


@pytest.fixture(scope="module")
def enforcing_moto() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def _auth(endpoint: str, body: bytes) -> None:
    request = urllib.request.Request(
        endpoint + "/moto-api/reset-auth", data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).read()


def _client(endpoint: str, service: str, key: str = "testing", secret: str = "testing"):  # type: ignore[no-untyped-def]
    return boto3.client(
        service, region_name=REGION, endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret
    )


@pytest.fixture
def worker_user(enforcing_moto: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An IAM user that may only assume roles, as the worker's credentials; a role that may only read S3; IAM
    enforcement on for the test, off again afterwards."""
    reset = urllib.request.Request(enforcing_moto + "/moto-api/reset", data=b"", method="POST")
    urllib.request.urlopen(reset, timeout=10).read()
    iam = _client(enforcing_moto, "iam")
    iam.create_user(UserName="worker")
    iam.put_user_policy(
        UserName="worker",
        PolicyName="assume",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}
        ),
    )
    keys = iam.create_access_key(UserName="worker")["AccessKey"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
    iam.create_role(RoleName="read-only", AssumeRolePolicyDocument=json.dumps(trust))
    iam.put_role_policy(
        RoleName="read-only",
        PolicyName="read",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}
        ),
    )
    _client(enforcing_moto, "s3").create_bucket(Bucket="web")
    for name, value in {
        "AWS_ENDPOINT_URL": enforcing_moto,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": keys["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": keys["SecretAccessKey"],
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "MOTO_ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)
    _auth(enforcing_moto, b"0")
    try:
        yield
    finally:
        _auth(enforcing_moto, b"inf")


@pytest.mark.parametrize(
    ("role", "who"), [(ROLE, f"role {ROLE}"), (None, "the worker's credentials")], ids=["role", "worker"]
)
async def test_access_denied_names_the_action_the_role_and_the_call(
    worker_user: None, tmp_path: Path, role: str | None, who: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = LocalArtifactStore(settings.artifacts_dir)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("hi")
    deploy = S3DeployInput(
        context=CONTEXT,
        identity=AwsIdentity(role_arn=role, session_name="conveyor-shop-exec-1"),
        bucket="web",
        extract=True,
        artifact=store.put("Site", tmp_path / "site", ["**/*"]),
    )
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(S3Provider(settings, store).s3_deploy, deploy)
    error = raised.value
    assert error.message == f"action 'Publish': access denied calling s3:PutObject on s3://web/index.html as {who}"
    assert error.type == "AccessDenied" and error.non_retryable
    assert error.__cause__ is None  # botocore's error (with its request) is not chained into the failure
