"""The S3 artifact store and action logs in the store, against a real moto server on loopback.

What moto does not enforce (SSE-KMS) or does not show (how many requests, multipart) is read from moto's request
recorder, on a moto server of this module's own: the recorder's file is chosen by an environment variable at the
server's start, so that server runs as a subprocess.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig
from temporalio.client import Client

from conveyor.client import ConveyorClient
from conveyor.devserver import free_port
from conveyor.model import ActionStatus, ArtifactLocation, ArtifactRef, ExecutionStatus
from conveyor.settings import S3Location, Settings, SettingsError
from conveyor.stores.archive import ArtifactError
from conveyor.stores.artifacts import store_from_settings
from conveyor.stores.logs import ActionLogName, S3LogWriter, action_log_reader, open_action_log
from conveyor.stores.s3 import S3ArtifactStore
from conveyor.worker import build_worker
from tests.aws import CREDENTIALS, REGION, Aws
from tests.helpers import pipeline

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "conveyor-artifacts"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def make_tree(root: Path) -> Path:
    (root / "dist").mkdir(parents=True)
    (root / "dist" / "app.whl").write_bytes(b"wheel")
    (root / "bin").mkdir()
    (root / "bin" / "run").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "run").chmod(0o755)
    return root


def hex_of(ref: ArtifactRef) -> str:
    return ref.digest.removeprefix("sha256:")


# --- a moto server with its request recorder -------------------------------------------------------------------


@dataclass
class Recorder:
    endpoint: str
    path: Path

    def post(self, path: str) -> None:
        request = urllib.request.Request(self.endpoint + path, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def requests(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def to(self, method: str, key: str) -> list[dict[str, Any]]:
        """The recorded requests of `method` whose path is the object `key` of BUCKET."""
        return [
            r for r in self.requests() if r["method"] == method and r["url"].split("?")[0].endswith(f"/{BUCKET}/{key}")
        ]


@pytest.fixture(scope="module")
def recording_moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    path = tmp_path_factory.mktemp("moto-recorder") / "requests.jsonl"
    port = free_port()
    env = {**os.environ, "MOTO_RECORDER_FILEPATH": str(path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the recording moto server did not start") from None
            time.sleep(0.1)
    yield endpoint, path
    process.terminate()
    process.wait(10)


@pytest.fixture
def recorder(recording_moto: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """The recording moto server, wiped, recording from now on, and this process's boto3 pointed at it."""
    endpoint, path = recording_moto
    for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION, **CREDENTIALS}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    found = Recorder(endpoint, path)
    found.post("/moto-api/reset")
    found.post("/moto-api/recorder/reset-recording")
    found.post("/moto-api/recorder/start-recording")
    Aws(endpoint).client("s3").create_bucket(Bucket=BUCKET)
    return found


# --- the store ---------------------------------------------------------------------------------------------------


def test_round_trip_under_a_prefix_with_content_addressed_keys(aws: Aws, tmp_path: Path) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    store = S3ArtifactStore(S3Location(bucket=BUCKET, prefix="team/ci"))

    ref = store.put("Build", make_tree(tmp_path / "src"), ["**/*"])
    key = f"team/ci/artifacts/sha256/{hex_of(ref)[:2]}/{hex_of(ref)}.zip"
    assert ref.location == f"s3://{BUCKET}/{key}"
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == ref.size

    out = tmp_path / "out"
    store.extract(ref, out)
    assert (out / "dist" / "app.whl").read_bytes() == b"wheel"
    assert os.access(out / "bin" / "run", os.X_OK)


def test_documents_and_coordinator_states(aws: Aws) -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    store = S3ArtifactStore(S3Location(bucket=BUCKET, prefix="p"))
    text = '{"name":"shop"}'
    digest = f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
    store.put_document(digest, text)
    store.put_document(digest, text)  # already there
    assert store.get_document(digest) == text
    with pytest.raises(ArtifactError, match="does not match its digest"):
        store.put_document(digest, text + " ")
    missing = "sha256:" + "0" * 64
    with pytest.raises(ArtifactError, match=rf"missing from the store: s3://{BUCKET}/p/documents/sha256/00/"):
        store.get_document(missing)

    assert store.get_coordinator_state("shop") is None
    store.put_coordinator_state("shop", "one")
    store.put_coordinator_state("shop", "two")
    assert store.get_coordinator_state("shop") == "two"
    with pytest.raises(ArtifactError, match="invalid pipeline name"):
        store.get_coordinator_state("../etc")


def test_a_second_put_of_the_same_tree_does_not_upload(recorder: Recorder, tmp_path: Path) -> None:
    store = S3ArtifactStore(S3Location(bucket=BUCKET))
    first = store.put("Build", make_tree(tmp_path / "one"), ["**/*"])
    second = store.put("Build", make_tree(tmp_path / "two"), ["**/*"])
    assert first == second
    key = f"artifacts/sha256/{hex_of(first)[:2]}/{hex_of(first)}.zip"
    # The first put finds nothing; the second finds it, marks it used for garbage collection and looks again.
    assert len(recorder.to("HEAD", key)) == 3
    assert len(recorder.to("PUT", key)) == 1
    assert len(recorder.to("PUT", f"gc/used/artifacts/{hex_of(first)[:2]}/{hex_of(first)}")) == 1


def test_sse_kms_is_requested_on_every_write(recorder: Recorder, tmp_path: Path) -> None:
    store = S3ArtifactStore(S3Location(bucket=BUCKET, prefix="enc"), KMS_KEY)
    ref = store.put("Build", make_tree(tmp_path / "src"), ["**/*"])
    store.put_coordinator_state("shop", "{}")
    key = f"enc/artifacts/sha256/{hex_of(ref)[:2]}/{hex_of(ref)}.zip"
    for request in [*recorder.to("PUT", key), *recorder.to("PUT", "enc/coordinators/shop.json")]:
        headers = {name.lower(): value for name, value in request["headers"].items()}
        assert headers["x-amz-server-side-encryption"] == "aws:kms"
        assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == KMS_KEY
    assert len(recorder.to("PUT", key)) == 1
    head = Aws(recorder.endpoint).client("s3").head_object(Bucket=BUCKET, Key=key)
    assert head["ServerSideEncryption"] == "aws:kms"


def test_without_a_key_no_encryption_header_is_sent(recorder: Recorder, tmp_path: Path) -> None:
    ref = S3ArtifactStore(S3Location(bucket=BUCKET)).put("Build", make_tree(tmp_path / "src"), ["**/*"])
    (put,) = recorder.to("PUT", f"artifacts/sha256/{hex_of(ref)[:2]}/{hex_of(ref)}.zip")
    assert not any(name.lower().startswith("x-amz-server-side-encryption") for name in put["headers"])


def test_an_artifact_above_the_threshold_is_uploaded_in_parts(recorder: Recorder, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "blob.bin").write_bytes(os.urandom(11 * 1024 * 1024))  # incompressible: the zip is as big
    mib5 = 5 * 1024 * 1024  # S3's smallest part
    # One part at a time: moto's recorder appends each request to its file unlocked, so parts recorded
    # concurrently can interleave their lines (the upload itself would be fine).
    transfer = TransferConfig(multipart_threshold=mib5, multipart_chunksize=mib5, max_concurrency=1)
    store = S3ArtifactStore(S3Location(bucket=BUCKET), KMS_KEY, transfer=transfer, tmp_dir=tmp_path)

    ref = store.put("Big", src, ["**/*"])
    key = f"artifacts/sha256/{hex_of(ref)[:2]}/{hex_of(ref)}.zip"
    created = [r for r in recorder.to("POST", key) if r["url"].endswith("?uploads")]
    assert len(created) == 1
    headers = {name.lower(): value for name, value in created[0]["headers"].items()}
    assert headers["x-amz-server-side-encryption"] == "aws:kms"
    assert headers["x-amz-server-side-encryption-aws-kms-key-id"] == KMS_KEY
    parts = [r for r in recorder.to("PUT", key) if "partNumber=" in r["url"]]
    assert len(parts) == 3
    assert all(len(base64.b64decode(p["body"])) <= mib5 for p in parts)  # streamed in parts, never whole

    out = tmp_path / "out"
    store.extract(ref, out)  # downloaded (ranged, in order) through the hashing writer
    assert (out / "blob.bin").read_bytes() == (src / "blob.bin").read_bytes()


def test_a_changed_object_is_refused_on_read(aws: Aws, tmp_path: Path) -> None:
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    store = S3ArtifactStore(S3Location(bucket=BUCKET))
    ref = store.put("Build", make_tree(tmp_path / "src"), ["**/*"])
    key = ref.location.removeprefix(f"s3://{BUCKET}/")
    other = S3ArtifactStore(S3Location(bucket=BUCKET, prefix="x")).put(
        "Other", make_tree(tmp_path / "other") / "dist", ["**/*"]
    )
    body = s3.get_object(Bucket=BUCKET, Key=other.location.removeprefix(f"s3://{BUCKET}/"))["Body"].read()
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)  # a valid zip, but not this artifact

    out = tmp_path / "out"
    with pytest.raises(ArtifactError, match=rf"artifact 'Build' is corrupt or was changed: s3://{BUCKET}/{key}"):
        store.extract(ref, out)
    assert not out.exists() or not any(out.iterdir())


def test_errors_name_the_artifact_bucket_and_key(aws: Aws, tmp_path: Path) -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    store = S3ArtifactStore(S3Location(bucket=BUCKET))
    ref = store.put("Build", make_tree(tmp_path / "src"), ["**/*"])
    aws.client("s3").delete_object(Bucket=BUCKET, Key=ref.location.removeprefix(f"s3://{BUCKET}/"))
    with pytest.raises(ArtifactError, match=rf"artifact 'Build' is missing from the store: {ref.location}"):
        store.extract(ref, tmp_path / "out")

    nowhere = S3ArtifactStore(S3Location(bucket="no-such-bucket"))
    with pytest.raises(ArtifactError, match="artifact 'Build': s3://no-such-bucket/artifacts/.*does not exist"):
        nowhere.put("Build", make_tree(tmp_path / "again"), ["**/*"])
    elsewhere = ref.model_copy(update={"location": f"s3://{BUCKET}/somewhere/else.zip"})
    with pytest.raises(ArtifactError, match="is not an S3 archive of digest"):
        store.extract(elsewhere, tmp_path / "out2")


def test_the_configured_store_reads_any_ref_where_its_location_says(aws: Aws, tmp_path: Path) -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    local = store_from_settings(Settings(data_dir=tmp_path / "data"))
    local_ref = local.put("Local", make_tree(tmp_path / "a"), ["**/*"])
    assert local_ref.location.startswith("file://")

    configured = store_from_settings(
        Settings(data_dir=tmp_path / "data", artifact_store=S3Location(bucket=BUCKET, prefix="ci"))
    )
    s3_ref = configured.put("Remote", make_tree(tmp_path / "b"), ["**/*"])
    assert s3_ref.location.startswith(f"s3://{BUCKET}/ci/artifacts/")
    configured.extract(local_ref, tmp_path / "from-local")  # written before the store moved to S3
    local.extract(s3_ref, tmp_path / "from-s3")  # a local worker reads what an S3 one wrote
    assert (tmp_path / "from-local" / "dist" / "app.whl").exists()
    assert (tmp_path / "from-s3" / "dist" / "app.whl").exists()


def test_a_declared_store_is_used_only_on_a_worker_configured_for_aws(aws: Aws, tmp_path: Path) -> None:
    aws.client("s3").create_bucket(Bucket="declared-bucket")
    declared = [ArtifactLocation(bucket="declared-bucket", kms_key="alias/pipe")]
    offline = store_from_settings(Settings(data_dir=tmp_path / "data"))
    assert offline.for_outputs(declared) is offline
    online = store_from_settings(Settings(data_dir=tmp_path / "data", aws=True))
    chosen = online.for_outputs(declared)
    assert isinstance(chosen, S3ArtifactStore) and chosen.kms_key == "alias/pipe"
    assert online.for_outputs([]) is online

    regions = [
        ArtifactLocation(bucket="declared-bucket", region=REGION),
        ArtifactLocation(bucket="other-bucket", region="eu-west-1"),
    ]
    picked = online.for_outputs(regions)
    assert isinstance(picked, S3ArtifactStore) and picked.location.bucket == "declared-bucket"


# --- settings ----------------------------------------------------------------------------------------------------


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVEYOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CONVEYOR_ARTIFACT_STORE", "s3://my-bucket/team/ci/")
    monkeypatch.setenv("CONVEYOR_ARTIFACT_KMS_KEY", "alias/conveyor")
    monkeypatch.setenv("CONVEYOR_AWS", "true")
    found = Settings.from_env()
    assert found.artifact_store == S3Location(bucket="my-bucket", prefix="team/ci")
    assert found.artifact_kms_key == "alias/conveyor" and found.aws is True

    for name, value, message in [
        ("CONVEYOR_ARTIFACT_STORE", "my-bucket", "CONVEYOR_ARTIFACT_STORE='my-bucket': write an S3 URL"),
        ("CONVEYOR_ARTIFACT_STORE", "s3://My_Bucket", "not a valid S3 bucket name"),
        ("CONVEYOR_AWS", "maybe", "CONVEYOR_AWS='maybe': write true or false"),
    ]:
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(SettingsError, match=message):
                Settings.from_env()
    monkeypatch.delenv("CONVEYOR_ARTIFACT_STORE")
    with pytest.raises(SettingsError, match="CONVEYOR_ARTIFACT_KMS_KEY='alias/conveyor' applies to the S3"):
        Settings.from_env()
    monkeypatch.delenv("CONVEYOR_ARTIFACT_KMS_KEY")
    monkeypatch.delenv("CONVEYOR_AWS")
    found = Settings.from_env()
    assert found.artifact_store is None and found.aws is False


# --- logs --------------------------------------------------------------------------------------------------------


def test_s3_log_chunks_read_back_in_order_across_attempts(aws: Aws, tmp_path: Path) -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    settings = Settings(data_dir=tmp_path, artifact_store=S3Location(bucket=BUCKET, prefix="ci"))
    name = ActionLogName("shop", "exec-1", "Build", "Compile")
    reader = action_log_reader(settings, name)
    assert reader.read_new() == b"" and not reader.found()

    first = open_action_log(settings, name, "0001-0001")
    assert isinstance(first, S3LogWriter)
    first.write("one\n")
    first.flush()
    assert reader.read_new() == b"one\n" and reader.found()
    first.write("two\n")
    first.write("three\n")
    assert reader.read_new() == b""  # buffered until the next flush
    first.close()
    second = open_action_log(settings, name, "0002-0001")
    second.write("retry\n")
    second.close()
    assert reader.read_new() == b"two\nthree\nretry\n"
    assert reader.read_new() == b""
    assert action_log_reader(settings, name).read_new() == b"one\ntwo\nthree\nretry\n"
    keys = [o["Key"] for o in aws.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert "ci/logs/shop/exec-1/Build/Compile/0001-0001/00000002.log" in keys
    assert "ci/logs/shop/exec-1/Build/Compile/0001-0001/end" in keys


def test_an_s3_log_opened_again_in_the_same_attempt_continues_after_its_chunks(aws: Aws, tmp_path: Path) -> None:
    """A provider may write its log in two goes within one attempt: the second writer must not overwrite the first's
    chunks (it numbered from 1 again, and the first lines were lost)."""
    aws.client("s3").create_bucket(Bucket=BUCKET)
    settings = Settings(data_dir=tmp_path, artifact_store=S3Location(bucket=BUCKET, prefix="ci"))
    name = ActionLogName("shop", "exec-2", "Deploy", "Ship")
    for lines in (["first\n", "second\n"], ["third\n"]):
        writer = open_action_log(settings, name, "0001-0001")
        for line in lines:
            writer.write(line)
            writer.flush()
        writer.close()
    assert action_log_reader(settings, name).read_new() == b"first\nsecond\nthird\n"


# --- end to end: a worker on S3, `conveyor logs` in another process ----------------------------------------------


@pytest.fixture
def s3_settings(settings: Settings, aws: Aws, tmp_path: Path) -> Settings:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    return settings.model_copy(
        update={"data_dir": tmp_path / "worker-data", "artifact_store": S3Location(bucket=BUCKET, prefix="ci")}
    )


def cli_environment(settings: Settings, aws: Aws, data_dir: Path) -> dict[str, str]:
    """Another host: the same Temporal and S3 store, its own (empty) data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "TEMPORAL_", "AWS_"))}
    assert settings.temporal_address and settings.artifact_store
    env |= aws.environment | {
        "CONVEYOR_DATA_DIR": str(data_dir),
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "CONVEYOR_TASK_QUEUE": settings.task_queue,
        "CONVEYOR_ARTIFACT_STORE": f"s3://{BUCKET}/{settings.artifact_store.prefix}",
        "PYTHONPATH": str(ROOT),
    }
    return env


E2E = """
name: s3-{suffix}
stages:
  - name: Build
    actions:
      - name: Compile
        provider: Commands
        commands:
          - mkdir -p dist && echo built > dist/app.txt
          - echo first tick
          # Until the test has seen the action running (a fixed sleep raced a loaded machine's CLI start-up).
          - for i in $(seq 600); do test -e {gate} && break; sleep 0.1; done
          - echo second tick
        outputArtifacts: [{{name: App, files: ["dist/**"]}}]
  - name: Test
    actions:
      - name: Check
        provider: Commands
        commands: ["grep built dist/app.txt"]
        inputArtifacts: [{{name: App}}]
"""


async def test_a_pipeline_on_s3_and_its_logs_followed_from_another_process(
    temporal_client: Client, s3_settings: Settings, aws: Aws, tmp_path: Path
) -> None:
    client = ConveyorClient(temporal_client, s3_settings)
    async with build_worker(temporal_client, s3_settings):
        gate = tmp_path / "gate"
        ref, _ = await client.start(pipeline(E2E.format(suffix=uuid.uuid4().hex[:8], gate=gate)))
        env = cli_environment(s3_settings, aws, tmp_path / "other-host")
        follow = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "conveyor",
            "logs",
            str(ref),
            "Build",
            "Compile",
            "--follow",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert follow.stdout is not None
        seen = b""
        try:
            while b"first tick" not in seen:
                line = await asyncio.wait_for(follow.stdout.readline(), 30)
                assert line, f"logs --follow ended early: {seen!r}"
                seen += line
            _, running = await client.action_state(ref, "Build", "Compile")
            assert running.status == ActionStatus.IN_PROGRESS  # read from S3 while the action runs
            gate.touch()
            rest, err = await asyncio.wait_for(follow.communicate(), 30)  # ends when the action does
        finally:
            if follow.returncode is None:
                follow.kill()
        assert follow.returncode == 0, err.decode()
        followed = (seen + rest).decode()
        assert "first tick" in followed and followed.rstrip().endswith("second tick")

        final = await asyncio.wait_for(client.wait(ref), 60)
        assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
        build = final.stage("Build")
        assert build is not None
        (app,) = build.actions[0].output_artifacts
        assert app.location.startswith(f"s3://{BUCKET}/ci/artifacts/sha256/")
        assert not (s3_settings.data_dir / "logs").exists()  # nothing on the worker's disk

    printed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "conveyor", "logs", str(ref), "Build", "Compile"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert printed.returncode == 0, printed.stderr.decode()
    assert printed.stdout.decode() == followed
    assert printed.stdout.decode().startswith("[conveyor] attempt 1 started")


DECLARED = """
name: declared-{suffix}
artifactStore: {{type: S3, location: declared-bucket, encryptionKey: {{id: alias/pipe, type: KMS}}}}
stages:
  - name: Build
    actions:
      - name: Compile
        provider: Commands
        commands: ["echo built > app.txt"]
        outputArtifacts: [{{name: App, files: ["app.txt"]}}]
  - name: Test
    actions:
      - {{name: Check, provider: Commands, commands: ["grep built app.txt"], inputArtifacts: [{{name: App}}]}}
"""


@pytest.mark.parametrize("on_aws", [False, True])
async def test_a_declared_artifact_store_applies_only_when_the_worker_is_configured_for_aws(
    temporal_client: Client, settings: Settings, aws: Aws, tmp_path: Path, on_aws: bool
) -> None:
    aws.client("s3").create_bucket(Bucket="declared-bucket")
    worker_settings = settings.model_copy(update={"data_dir": tmp_path / "data", "aws": on_aws})
    client = ConveyorClient(temporal_client, worker_settings)
    async with build_worker(temporal_client, worker_settings):
        ref, _ = await client.start(pipeline(DECLARED.format(suffix=uuid.uuid4().hex[:8])))
        final = await asyncio.wait_for(client.wait(ref), 60)
    assert final.status == ExecutionStatus.SUCCEEDED, final.status_summary
    build = final.stage("Build")
    assert build is not None
    (app,) = build.actions[0].output_artifacts
    if on_aws:
        assert app.location.startswith("s3://declared-bucket/artifacts/sha256/")
        key = app.location.removeprefix("s3://declared-bucket/")
        head = aws.client("s3").head_object(Bucket="declared-bucket", Key=key)
        assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"].endswith("alias/pipe")
    else:
        assert app.location.startswith("file://")  # offline: the embedded default
        assert "Contents" not in aws.client("s3").list_objects_v2(Bucket="declared-bucket")


def test_logs_of_an_action_that_left_none_in_the_bucket_is_a_message(aws: Aws, tmp_path: Path) -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    store = S3Location(bucket=BUCKET, prefix="ci")
    env = cli_environment(
        Settings(data_dir=tmp_path, temporal_address="127.0.0.1:1", artifact_store=store), aws, tmp_path
    )
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "logs", "pipe/e-1", "Build", "Compile"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done
    assert f"no log for pipe/e-1 Build/Compile in s3://{BUCKET}/ci/logs/pipe/e-1/Build/Compile/" in done.stderr
    assert "another CONVEYOR_ARTIFACT_STORE" in done.stderr and "Traceback" not in done.stderr
