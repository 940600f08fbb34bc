"""boto3 clients shared between actions (activities/aws/session.py AwsSessions.client): one per credentials
identity, region, service and endpoint, refreshed with the assumed role's credentials; the caller's account asked
once. Against moto: AssumeRole into two accounts (credentials of a role in account N act in account N)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from activities.aws import session as aws_session
from activities.aws.session import REFRESH_BEFORE, ROLE_DURATION_SECONDS, AwsSessions
from conveyor.aws.identity import AwsIdentity
from conveyor.settings import Settings
from tests.aws import ACCOUNT, Aws
from tests.aws_contract import assumed_role_credentials

FIRST, SECOND = "111111111111", "222222222222"


def _role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/deployer"


def _assumed(session_name: str, account: str = FIRST) -> list[str]:
    """The access key ids STS gave for `session_name` of a role in `account` (one per AssumeRole)."""
    return [key for name, key, _, _ in assumed_role_credentials(account) if name == session_name]


def _key_id(client: Any) -> str:
    key: str = client._request_signer._credentials.access_key  # noqa: SLF001 - which credentials sign its calls
    return key


def _counting(client: Any, operation: str) -> list[str]:
    """The `operation` calls this client makes from now on (botocore's own event hook)."""
    calls: list[str] = []
    client.meta.events.register(f"before-call.*.{operation}", lambda **_: calls.append(operation))
    return calls


def test_actions_of_one_identity_share_a_client_and_identities_or_regions_do_not(aws: Aws, settings: Settings) -> None:
    sessions = AwsSessions(settings)
    worker = AwsIdentity(session_name="conveyor-p-e1")
    first = AwsIdentity(role_arn=_role(FIRST), session_name="conveyor-p-e1")
    second = AwsIdentity(role_arn=_role(SECOND), session_name="conveyor-p-e1")

    s3 = sessions.client(first, "s3", "A")
    assert sessions.client(first, "s3", "B") is s3  # another action of the same identity
    assert len(_assumed("conveyor-p-e1")) == 1
    assert sessions.client(first, "lambda", "A") is not s3
    assert sessions.client(second, "s3", "A") is not s3  # another account
    assert sessions.client(first.model_copy(update={"region": "eu-west-1"}), "s3", "A") is not s3
    assert sessions.client(first.model_copy(update={"session_name": "conveyor-p-e2"}), "s3", "A") is not s3
    assert len(_assumed("conveyor-p-e2")) == 1  # another execution: a session of its own (CloudTrail names it)
    assert sessions.client(worker, "s3", "A") is sessions.client(worker, "s3", "B") is not s3
    # Once per role and region (a session per region, as before).
    assert (len(_assumed("conveyor-p-e1")), len(_assumed("conveyor-p-e1", SECOND))) == (2, 1)

    # The shared clients act in their own accounts.
    s3.create_bucket(Bucket="in-first")
    assert [b["Name"] for b in sessions.client(first, "s3", "C").list_buckets()["Buckets"]] == ["in-first"]
    assert sessions.client(second, "s3", "C").list_buckets()["Buckets"] == []
    assert sessions.client(worker, "s3", "C").list_buckets()["Buckets"] == []


def test_a_client_follows_the_environment_boto3_reads(
    aws: Aws, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = AwsSessions(settings)
    identity = AwsIdentity(session_name="conveyor-p-e")
    client = sessions.client(identity, "lambda", "A")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    moved = sessions.client(identity, "lambda", "A")
    assert moved is not client and moved.meta.region_name == "eu-west-1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_LAMBDA", "http://127.0.0.1:9")
    assert sessions.client(identity, "lambda", "A").meta.endpoint_url == "http://127.0.0.1:9"
    monkeypatch.delenv("AWS_ENDPOINT_URL_LAMBDA")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert sessions.client(identity, "lambda", "A") is client


def test_clients_are_made_again_with_the_role_assumed_again_before_it_expires(aws: Aws, settings: Settings) -> None:
    now = [datetime.now(UTC)]
    sessions = AwsSessions(settings, clock=lambda: now[0])
    identity = AwsIdentity(role_arn=_role(FIRST), session_name="conveyor-p-refresh")
    client = sessions.client(identity, "stepfunctions", "A")
    (key,) = _assumed("conveyor-p-refresh")
    assert _key_id(client) == key

    now[0] += timedelta(seconds=ROLE_DURATION_SECONDS) - REFRESH_BEFORE - timedelta(minutes=1)
    assert sessions.client(identity, "stepfunctions", "A") is client  # still well before expiry

    now[0] += timedelta(minutes=2)  # within REFRESH_BEFORE of the expiry
    renewed = sessions.client(identity, "stepfunctions", "A")
    first_key, second_key = _assumed("conveyor-p-refresh")
    assert renewed is not client and _key_id(renewed) == second_key != first_key
    assert renewed.list_state_machines()["stateMachines"] == []  # signs with the new credentials


def test_least_recently_used_roles_are_dropped_past_the_limit(
    aws: Aws, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aws_session, "MAX_ASSUMED", 2)
    sessions = AwsSessions(settings)
    a, b, c = (AwsIdentity(role_arn=_role(FIRST), session_name=f"conveyor-p-lru{n}") for n in "abc")
    sessions.client(a, "s3", "X")
    sessions.client(b, "s3", "X")
    sessions.client(a, "s3", "X")  # a used last: b goes first
    sessions.client(c, "s3", "X")
    assert [name for _, name, _ in sessions._assumed] == ["conveyor-p-lrua", "conveyor-p-lruc"]  # noqa: SLF001
    sessions.client(b, "s3", "X")
    assert len(_assumed("conveyor-p-lrub")) == 2 and len(_assumed("conveyor-p-lrua")) == 1


def test_the_callers_account_is_asked_once_per_identity(aws: Aws, settings: Settings) -> None:
    sessions = AwsSessions(settings)
    worker = AwsIdentity(session_name="conveyor-p-e")
    calls = _counting(sessions.client(worker, "sts", "A"), "GetCallerIdentity")
    assert sessions.account(worker, "A") == sessions.account(worker, "B") == ACCOUNT
    assert calls == ["GetCallerIdentity"]
    # An assumed role's calls run in the role's account: what STS says for its credentials, without asking.
    role = AwsIdentity(role_arn=_role(SECOND), session_name="conveyor-p-e")
    assert sessions.client(role, "sts", "A").get_caller_identity()["Account"] == SECOND
    role_calls = _counting(sessions.client(role, "sts", "A"), "GetCallerIdentity")
    assert sessions.account(role, "A") == SECOND and role_calls == []
