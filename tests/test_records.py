"""conveyor.stores.records: per-attempt records in the configured store, locally and in S3 (moto), and their sweep."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.settings import S3Location, Settings
from conveyor.stores.records import (
    AttemptRecord,
    AttemptRecords,
    LocalRecordBackend,
    RecordBackend,
    RecordKind,
    RecordStoreError,
    S3RecordBackend,
    attempt_hash,
    record_backend,
    stale_attempts,
    stale_under,
)
from tests.aws import Aws

BUCKET = "records"


class Deploying(AttemptRecord):
    deployment: str


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> RecordBackend:
    configured = settings.model_copy(update={"data_dir": tmp_path / "data"})
    if request.param == "s3":
        aws: Aws = request.getfixturevalue("aws")
        aws.client("s3").create_bucket(Bucket=BUCKET)
        configured = configured.model_copy(update={"artifact_store": S3Location(bucket=BUCKET, prefix="ci")})
    chosen = record_backend(configured)
    assert isinstance(chosen, S3RecordBackend if request.param == "s3" else LocalRecordBackend)
    return chosen


def test_create_is_once_and_replace_overwrites(backend: RecordBackend) -> None:
    records = AttemptRecords(backend, RecordKind.CODEDEPLOY)
    name = attempt_hash(RecordKind.CODEDEPLOY, "exec/Deploy/1/Release", 1)
    assert records.read(name, Deploying) is None
    assert records.create(name, Deploying(execution_id="e1", deployment="d-1"))
    assert not records.create(name, Deploying(execution_id="e1", deployment="d-2"))  # the first one stands
    assert records.read(name, Deploying) == Deploying(execution_id="e1", deployment="d-1")
    records.replace(name, Deploying(execution_id="e1", deployment="d-3"))
    assert records.read(name, Deploying) == Deploying(execution_id="e1", deployment="d-3")
    assert backend.where(records.path(name)).endswith(f"codedeploy/attempts/{name}.json")
    (listed,) = backend.listing("codedeploy/")
    assert listed.relative == f"codedeploy/attempts/{name}.json" and listed.size > 0


def test_an_unreadable_record_reads_as_none_and_a_bad_name_is_refused(backend: RecordBackend) -> None:
    records = AttemptRecords(backend, RecordKind.CLOUDFORMATION)
    name = attempt_hash(RecordKind.CLOUDFORMATION, "k", 2)
    backend.replace(records.path(name), b"{not json")
    assert records.read(name, Deploying) is None
    with pytest.raises(ValueError, match="64 hex digits"):
        records.path("../escape")


def test_attempt_hashes_differ_by_kind_key_and_attempt() -> None:
    names = {
        attempt_hash(RecordKind.CODEDEPLOY, "k", 1),
        attempt_hash(RecordKind.CODEDEPLOY, "k", 2),
        attempt_hash(RecordKind.CLOUDFORMATION, "k", 1),
        attempt_hash(RecordKind.CODEDEPLOY, "j", 1),
    }
    assert len(names) == 4


def test_stale_attempts_keeps_open_executions_and_fresh_records(backend: RecordBackend) -> None:
    """Every kind by one rule: older than the cutoff and not of an open execution (an unreadable one goes too)."""
    cloudformation = AttemptRecords(backend, RecordKind.CLOUDFORMATION)
    codedeploy = AttemptRecords(backend, RecordKind.CODEDEPLOY)
    closed, running, broken = (attempt_hash(RecordKind.CODEDEPLOY, k, 1) for k in ("closed", "open", "broken"))
    codedeploy.create(closed, Deploying(execution_id="closed-exec", deployment="d-1"))
    cloudformation.create(closed, AttemptRecord(execution_id="closed-exec"))
    codedeploy.create(running, Deploying(execution_id="open-exec", deployment="d-2"))
    backend.replace(codedeploy.path(broken), b"garbage")
    time.sleep(1.1)  # S3 times have a second's resolution
    cutoff = datetime.now(UTC)
    time.sleep(1.1)
    fresh = attempt_hash(RecordKind.CODEDEPLOY, "fresh", 1)
    codedeploy.create(fresh, Deploying(execution_id="closed-exec", deployment="d-3"))
    stale = {doc.relative for doc in stale_attempts(backend, {"open-exec"}, cutoff)}
    assert stale == {codedeploy.path(closed), cloudformation.path(closed), codedeploy.path(broken)}
    assert stale_under(backend, "codedeploy/", cutoff - timedelta(hours=1)) == []


def test_an_s3_failure_names_the_object(aws: Aws) -> None:
    backend = S3RecordBackend(S3Location(bucket="no-such-bucket", prefix="ci"), None)
    with pytest.raises(RecordStoreError, match="s3://no-such-bucket/ci/codedeploy/attempts/"):
        backend.replace(f"codedeploy/attempts/{'0' * 64}.json", b"{}")


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    backend = LocalRecordBackend(tmp_path)
    backend.create("cloudformation/attempts/a.json", b"1")
    backend.replace("cloudformation/attempts/a.json", b"2")
    assert os.listdir(tmp_path / "cloudformation/attempts") == ["a.json"]
