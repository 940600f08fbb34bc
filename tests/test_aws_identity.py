"""Which identity an action's AWS calls use: the session name rule, the role selection, AssumeRole into a second
account (moto: credentials from sts.assume_role of a role in account 111111111111 act in that account)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment

from activities.aws.session import AwsSessions
from activities.providers.s3 import S3Provider
from conveyor.aws.identity import SESSION_NAME_LIMIT, AwsIdentity, session_name
from conveyor.model import ActionContext
from conveyor.providers.s3 import S3DeployInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import LocalArtifactStore
from tests.aws import ACCOUNT, Aws

SECOND_ACCOUNT = "111111111111"
DEPLOYER = f"arn:aws:iam::{SECOND_ACCOUNT}:role/deployer"
STS_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    ("pipeline", "execution", "expected"),
    [
        ("shop", UUID, f"conveyor-shop-{UUID}"),  # fits: as is
        ("a" * 18, UUID, f"conveyor-{'a' * 18}-{UUID}"),  # exactly 64
        ("a" * 19, UUID, None),  # 65: shortened
        ("shop", "exec/1 two", None),  # characters STS refuses: replaced, and a hash added
    ],
)
def test_session_names_fit_sts_and_say_which_execution(pipeline: str, execution: str, expected: str | None) -> None:
    name = session_name(pipeline, execution)
    assert STS_NAME.fullmatch(name), name
    assert len(name) <= SESSION_NAME_LIMIT
    if expected is not None:
        assert name == expected
    else:
        prefix = re.sub(r"[^\w+=,.@-]", "-", f"conveyor-{pipeline[:15]}-{execution[:28]}", flags=re.ASCII)
        assert name.startswith(prefix + "-") and re.fullmatch(r"[0-9a-f]{10}", name.rsplit("-", 1)[1]), name


def test_shortened_session_names_of_two_executions_differ() -> None:
    long_pipeline = "a-very-long-pipeline-name-for-the-storefront"
    first, second = f"{UUID[:-1]}1", f"{UUID[:-1]}2"  # differ only past what a shortened name keeps
    assert session_name(long_pipeline, first) != session_name(long_pipeline, second)
    assert session_name("shop", "exec/1") != session_name("shop", "exec:1")  # both replaced to exec-1


@pytest.mark.parametrize(
    ("action_role", "pipeline_role", "aws", "expected"),
    [
        ("arn:action", "arn:pipeline", True, "arn:action"),
        ("arn:action", "arn:pipeline", False, "arn:action"),  # the action's own roleArn always applies
        (None, "arn:pipeline", True, "arn:pipeline"),
        (None, "arn:pipeline", False, None),  # not configured for AWS: an imported declaration runs as the worker
        (None, None, True, None),
    ],
)
def test_the_role_an_action_uses(
    action_role: str | None, pipeline_role: str | None, aws: bool, expected: str | None
) -> None:
    identity = AwsIdentity(role_arn=action_role, pipeline_role_arn=pipeline_role, session_name="conveyor-p-e")
    assert identity.role_for(aws) == expected


def test_settings_read_conveyor_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CONVEYOR_AWS", "true")
    assert Settings.from_env().aws
    monkeypatch.setenv("CONVEYOR_AWS", "")
    assert not Settings.from_env().aws


def _caller_account(sessions: AwsSessions, identity: AwsIdentity) -> str:
    account: str = sessions.session(identity, "Deploy").client("sts").get_caller_identity()["Account"]
    return account


@pytest.mark.parametrize("aws_mode", [True, False])
async def test_a_deploy_with_the_pipelines_role_lands_in_the_second_account(
    aws: Aws, tmp_path: Path, aws_mode: bool
) -> None:
    second = _assumed_s3(aws)
    second.create_bucket(Bucket="second-site")
    settings = Settings(data_dir=tmp_path / "data", aws=aws_mode)
    store = LocalArtifactStore(settings.artifacts_dir)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<h1>hi</h1>")
    ref = store.put("Site", tmp_path / "site", ["**/*"])
    provider = S3Provider(settings, store)
    context = ActionContext(pipeline_name="shop", execution_id=UUID, stage_name="Prod", action_name="Deploy")
    identity = AwsIdentity(pipeline_role_arn=DEPLOYER, session_name=session_name("shop", UUID))
    deploy = S3DeployInput(context=context, identity=identity, bucket="second-site", extract=True, artifact=ref)
    await ActivityEnvironment().run(provider.s3_deploy, deploy)

    assert [o["Key"] for o in second.list_objects_v2(Bucket="second-site")["Contents"]] == ["index.html"]
    # The calls ran as the second account's role only when the worker is configured for AWS.
    assert _caller_account(provider.sessions, identity) == (SECOND_ACCOUNT if aws_mode else ACCOUNT)
    assert bool(provider.sessions._assumed) == aws_mode  # noqa: SLF001 - the worker's cache of assumed roles
    if aws_mode:
        (cached,) = provider.sessions._assumed  # noqa: SLF001
        assert cached == (DEPLOYER, session_name("shop", UUID), None)


def _assumed_s3(aws: Aws):  # type: ignore[no-untyped-def]
    """An S3 client acting in the second account, as the test's own AssumeRole."""
    import boto3

    credentials = aws.client("sts").assume_role(RoleArn=DEPLOYER, RoleSessionName="test")["Credentials"]
    return boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=aws.endpoint,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )
