"""Garbage collection (conveyor.gc) on the real dev server, with a data directory of the test's own:
what open executions, rollback targets and current versions use is kept, the rest goes once it is older
than the minimum age (set by os.utime, never by sleeping)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.worker import Worker

from conveyor.client import ConveyorClient
from conveyor.gc import GcKind, GcReport, GcSummary, Marks, collect_garbage, sweep
from conveyor.gc_schedule import SCHEDULE_ID, ensure_gc_schedule
from conveyor.interface import WorkflowType
from conveyor.model import ExecutionState, ExecutionStatus
from conveyor.settings import S3Location, Settings
from conveyor.stores.artifacts import LocalArtifactStore, StoredKind
from conveyor.stores.jobs import (
    JobAttempt,
    JobResult,
    JobResultKind,
    JobStore,
    JobTicket,
    attempt_hash,
    job_hash,
    job_store,
    new_job_id,
)
from conveyor.stores.logs import ActionLogName, attempt_label, open_action_log, s3_log_store
from conveyor.stores.s3 import S3ArtifactStore
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.helpers import pipeline, waiting_token
from tests.test_cli import cli_env
from tests.test_cli import conveyor as run_cli
from workflows.gc import GarbageCollectionWorkflow

HOURS_AGO = 2  # older than the minimum age (1 hour)

GATED = """
name: gc-open
conveyor: {retryWindowMinutes: 0}
variables: [{name: Content, defaultValue: one}]
stages:
  - name: Build
    actions:
      - name: Pack
        provider: Commands
        commands: ["mkdir -p out && echo '#{variables.Content}' > out/app.txt"]
        outputArtifacts: [{name: App, files: ["out/**/*"]}]
      - name: Gate
        provider: Manual
        runOrder: 2
  - name: Deploy
    actions:
      - name: Ship
        provider: Commands
        inputArtifacts: [{name: App}]
        commands: ["cat out/app.txt"]
"""

RELEASE = """
name: gc-release
variables: [{name: Content, defaultValue: one}]
stages:
  - name: Build
    actions:
      - name: Pack
        provider: Commands
        commands: ["mkdir -p out && echo '#{variables.Content}' > out/app.txt"]
        outputArtifacts: [{name: App, files: ["out/**/*"]}]
  - name: Deploy
    actions:
      - name: Ship
        provider: Commands
        inputArtifacts: [{name: App}]
        commands: ["cat out/app.txt"]
"""


@pytest.fixture
def gc_settings(tmp_path: Path, settings: Settings) -> Settings:
    """Retain nothing by age: only open executions and rollback targets (and their documents) stay."""
    return settings.model_copy(update={"data_dir": tmp_path / "data", "retain_days": 0.0})


@pytest_asyncio.fixture
async def gc_worker(temporal_client: Client, gc_settings: Settings) -> AsyncIterator[Worker]:
    async with build_worker(temporal_client, gc_settings) as running:
        yield running


@pytest.fixture
def client(temporal_client: Client, gc_settings: Settings) -> ConveyorClient:
    return ConveyorClient(temporal_client, gc_settings)


def store_of(settings: Settings) -> LocalArtifactStore:
    return LocalArtifactStore(settings.artifacts_dir)


def age(*roots: Path, hours: float = HOURS_AGO) -> None:
    """Every file and directory under the roots last used `hours` ago."""
    then = time.time() - hours * 3600
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [*dirnames, *filenames]:
                os.utime(os.path.join(dirpath, name), (then, then), follow_symlinks=False)
        os.utime(root, (then, then))


def artifact(tmp: Path, store: LocalArtifactStore, content: str) -> str:
    source = tmp / f"src-{uuid.uuid4().hex[:8]}"
    source.mkdir()
    (source / "f.txt").write_text(content)
    return store.put("Loose", source, ["**/*"]).digest


def document(store: LocalArtifactStore, text: str) -> str:
    digest = f"sha256:{hashlib.sha256(text.encode()).hexdigest()}"
    store.put_document(digest, text)
    return digest


def removed(report: GcReport, kind: GcKind) -> set[str]:
    return {item.name for item in report.removed if item.kind == kind}


def output_digest(state: ExecutionState) -> str:
    build = state.stage("Build")
    assert build is not None and build.actions[0].output_artifacts, state
    return build.actions[0].output_artifacts[0].digest


async def test_an_open_execution_keeps_what_it_needs_until_it_closes_and_falls_out_of_retention(
    client: ConveyorClient, gc_worker: Worker, gc_settings: Settings, temporal_client: Client, tmp_path: Path
) -> None:
    store = store_of(gc_settings)
    declaration = pipeline(GATED)
    ref, _ = await client.start(declaration, variables={"Content": uuid.uuid4().hex})
    token = await waiting_token(client, ref, "Build", "Gate")  # Pack has packed; the stage waits, open
    packed = output_digest(await client.state(ref))
    logs = gc_settings.logs_dir / ref.pipeline_name / ref.execution_id
    own_workspace = gc_settings.workspaces_dir / f"{ref.execution_id}_Build_1_Pack-0123abcd"
    lost_workspace = gc_settings.workspaces_dir / "gone-exec_Build_1_Pack-89abcdef"
    for workspace in (own_workspace, lost_workspace):
        (workspace / "attempt-1-1" / "src").mkdir(parents=True)
        (workspace / "attempt-1-1" / "src" / "left.txt").write_text("left behind by a killed worker")
    orphan_document = document(store, '{"name": "nobody"}')
    age(gc_settings.data_dir)
    fresh = artifact(tmp_path, store, "packed a moment ago; no state names it yet")

    report = await collect_garbage(temporal_client, gc_settings, store)
    assert packed not in removed(report, GcKind.ARTIFACT) and store.path_for(packed).is_file()
    assert fresh not in removed(report, GcKind.ARTIFACT) and store.path_for(fresh).is_file()
    assert removed(report, GcKind.DOCUMENT) == {orphan_document}
    assert logs.is_dir() and own_workspace.is_dir()
    assert removed(report, GcKind.WORKSPACE) == {"workspaces/gone-exec_Build_1_Pack-89abcdef"}
    assert not lost_workspace.exists()

    await client.decide(ref, "Build", "Gate", approve=False, token=token, summary="no")
    final = await asyncio.wait_for(client.wait(ref), 30)
    assert final.status == ExecutionStatus.FAILED

    async def closed() -> None:  # retry window 0: the workflow closes, as visibility will list it
        while (await temporal_client.get_workflow_handle(ref.workflow_id).describe()).close_time is None:
            await asyncio.sleep(0.2)

    await asyncio.wait_for(closed(), 15)
    age(store.path_for(packed), gc_settings.logs_dir)  # the fresh artifact stays young

    dry = await collect_garbage(temporal_client, gc_settings, store, dry_run=True)
    assert packed in removed(dry, GcKind.ARTIFACT) and dry.dry_run
    assert store.path_for(packed).is_file() and logs.is_dir() and own_workspace.is_dir()  # a dry run removes nothing

    report = await visible(temporal_client, gc_settings, store, lambda r: packed in removed(r, GcKind.ARTIFACT))
    assert not store.path_for(packed).exists()
    assert not logs.exists() and not own_workspace.exists()
    assert f"logs/{ref.pipeline_name}/{ref.execution_id}" in removed(report, GcKind.LOG)
    assert store.path_for(fresh).is_file()  # still younger than the minimum age


async def visible(
    client: Client, settings: Settings, store: LocalArtifactStore, done: object, *, dry_run: bool = False
) -> GcReport:
    """gc until `done(report)`: visibility lists a closed execution as closed a moment after it closes."""
    assert callable(done)
    for _ in range(50):
        report = await collect_garbage(client, settings, store, dry_run=dry_run)
        if done(report):
            return report
        await asyncio.sleep(0.2)
    raise AssertionError(f"gc never got there: {report}")


async def test_rollback_targets_current_versions_and_store_hits_are_kept(
    client: ConveyorClient, gc_worker: Worker, gc_settings: Settings, temporal_client: Client, tmp_path: Path
) -> None:
    store = store_of(gc_settings)
    declaration = pipeline(RELEASE)
    applied = await client.apply(declaration)
    digests = []
    for content in ("first release", "second release"):
        ref, _ = await client.start(declaration, variables={"Content": f"{content} {uuid.uuid4().hex}"})
        final = await asyncio.wait_for(client.wait(ref), 30)
        assert final.status == ExecutionStatus.SUCCEEDED
        digests.append(output_digest(final))
    older, target = digests  # the second is the last to succeed in Build and Deploy: the rollback target
    hit, missed = artifact(tmp_path, store, "hit"), artifact(tmp_path, store, "missed")
    orphan_document = document(store, '{"name": "orphan"}')
    age(gc_settings.data_dir)
    assert artifact(tmp_path, store, "hit") == hit  # a deduplicated put: a store hit refreshes the entry

    report = await visible(temporal_client, gc_settings, store, lambda r: older in removed(r, GcKind.ARTIFACT))
    assert target not in removed(report, GcKind.ARTIFACT) and store.path_for(target).is_file()
    assert not store.path_for(older).exists()
    assert hit not in removed(report, GcKind.ARTIFACT) and store.path_for(hit).is_file()
    assert missed in removed(report, GcKind.ARTIFACT) and not store.path_for(missed).exists()
    assert removed(report, GcKind.DOCUMENT) == {orphan_document}
    assert store.document_path(applied.version.digest).is_file()  # the current version's declaration
    assert json.loads(store.get_document(applied.version.digest))["name"] == declaration["name"]


async def test_delete_keeps_an_entry_used_after_it_was_listed(gc_settings: Settings, tmp_path: Path) -> None:
    """Dedupe against delete: an entry listed as old, then hit by a put, survives the delete."""
    store = store_of(gc_settings)
    digest = artifact(tmp_path, store, "raced")
    age(gc_settings.artifacts_dir)
    (entry,) = [e for e in store.entries() if e.digest == digest]
    cutoff = datetime.fromtimestamp(time.time() - 3600, UTC)
    assert artifact(tmp_path, store, "raced") == digest  # the hit, after the listing
    assert store.delete(entry, unused_since=cutoff) is False
    assert store.path_for(digest).is_file()
    age(gc_settings.artifacts_dir)
    assert store.delete(entry, unused_since=cutoff) is True
    assert not store.path_for(digest).exists()
    assert artifact(tmp_path, store, "raced") == digest and store.path_for(digest).is_file()  # stored again


async def test_the_command_prints_what_it_removes_and_the_bytes_freed(
    gc_settings: Settings, temporal_client: Client, tmp_path: Path
) -> None:
    store = store_of(gc_settings)
    digest = artifact(tmp_path, store, "x" * 5000)
    size = store.path_for(digest).stat().st_size
    age(gc_settings.data_dir)
    env = cli_env(gc_settings.data_dir, gc_settings.temporal_address, gc_settings.task_queue) | {
        "CONVEYOR_RETAIN_DAYS": "0"
    }
    dry = await run_cli("gc", "--dry-run", env=env)
    assert dry.code == 0, str(dry)
    assert f"would remove artifact {digest}, {size} bytes" in dry.out
    assert f"would free {size} bytes" in dry.out and store.path_for(digest).is_file()
    done = await run_cli("gc", env=env)
    assert done.code == 0, str(done)
    assert f"removed artifact {digest}, {size} bytes" in done.out
    assert (
        "removed 1 artifact, 0 pipeline declarations, 0 log directories, 0 workspaces, 0 job documents, "
        f"0 attempt records, 0 uploaded templates; freed {size} "
        "bytes" in done.out
    )
    assert not store.path_for(digest).exists()
    bad = await run_cli("gc", env=env | {"CONVEYOR_GC_MIN_AGE_MINUTES": "soon"})
    assert bad.code == 2 and "CONVEYOR_GC_MIN_AGE_MINUTES='soon'" in bad.err


async def test_the_daily_schedule_runs_gc_on_a_worker(
    gc_worker: Worker, gc_settings: Settings, temporal_client: Client, tmp_path: Path
) -> None:
    store = store_of(gc_settings)
    digest = artifact(tmp_path, store, "scheduled away")
    age(gc_settings.data_dir)
    await ensure_gc_schedule(temporal_client, gc_settings.task_queue, "17 3 * * *")
    schedule = temporal_client.get_schedule_handle(SCHEDULE_ID)
    try:
        assert not await ensure_gc_schedule(temporal_client, gc_settings.task_queue)  # exists: left as it is
        await schedule.trigger()

        async def result() -> GcSummary:
            while True:
                async for wf in temporal_client.list_workflows(
                    f"WorkflowType = '{WorkflowType.GC.value}' AND TaskQueue = '{gc_settings.task_queue}'"
                ):
                    handle = temporal_client.get_workflow_handle_for(
                        GarbageCollectionWorkflow.run, wf.id, run_id=wf.run_id
                    )
                    return await handle.result()
                await asyncio.sleep(0.2)

        summary = await asyncio.wait_for(result(), 30)
    finally:
        await schedule.delete()
    assert summary.removed == {GcKind.ARTIFACT: 1} and summary.bytes_freed > 0
    assert not store.path_for(digest).exists()


def test_the_s3_store_lists_refreshes_and_deletes_its_entries(aws: Aws, gc_settings: Settings, tmp_path: Path) -> None:
    """The same operations on S3 (moto): entries with their last use (LastModified, or a newer used-marker), a
    store hit writing the marker, delete re-checking both; the sweep keeps what is marked."""
    aws.client("s3").create_bucket(Bucket="gc-bucket")
    store = S3ArtifactStore(S3Location(bucket="gc-bucket", prefix="ci"), tmp_dir=tmp_path / "tmp")

    def put(content: str) -> str:
        source = tmp_path / f"src-{uuid.uuid4().hex[:8]}"
        source.mkdir()
        (source / "f.txt").write_text(content)
        return store.put("App", source, ["**/*"]).digest

    kept, hit, unused = put("kept"), put("hit"), put("unused")
    orphan_document = f"sha256:{hashlib.sha256(b'{}').hexdigest()}"
    store.put_document(orphan_document, "{}")
    time.sleep(1.1)  # S3 times have a second's resolution
    cutoff = datetime.now(UTC)
    time.sleep(1.1)
    assert put("hit") == hit  # a store hit after the cutoff
    entries = list(store.entries())
    assert {(e.kind, e.digest) for e in entries} == {
        *((StoredKind.ARTIFACT, d) for d in (kept, hit, unused)),
        (StoredKind.DOCUMENT, orphan_document),
    }
    assert next(e for e in entries if e.digest == hit).last_used >= cutoff
    marks = Marks(artifacts={kept})
    report = sweep(store, gc_settings, entries, marks, cutoff=cutoff, dry_run=False)
    assert {item.name for item in report} == {unused, orphan_document}
    assert {e.digest for e in store.entries()} == {kept, hit}
    stale = next(e for e in entries if e.digest == kept)
    assert store.touch(StoredKind.ARTIFACT, kept) and not store.delete(stale, unused_since=cutoff)  # used since
    assert not store.touch(StoredKind.ARTIFACT, unused)  # gone


def test_action_logs_in_the_s3_store_go_with_their_execution(aws: Aws, gc_settings: Settings) -> None:
    """Logs chunked into S3 (conveyor logs from any host): an execution that is no longer retained loses them once
    none changed since the cutoff; a retained execution's, and a log written after the cutoff, stay."""
    aws.client("s3").create_bucket(Bucket="gc-logs")
    settings = gc_settings.model_copy(update={"artifact_store": S3Location(bucket="gc-logs", prefix="ci")})

    def write(execution_id: str) -> None:
        log = open_action_log(settings, ActionLogName("shop", execution_id, "Build", "Compile"), attempt_label(1, 1))
        log.write("x" * 100 + "\n")
        log.close()

    write("gone")
    write("retained")
    time.sleep(1.1)  # S3 times have a second's resolution
    cutoff = datetime.now(UTC)
    time.sleep(1.1)
    write("fresh")
    store = s3_log_store(settings)
    assert store is not None
    marks = Marks(executions={("shop", "retained")})
    dry = sweep(store, settings, [], marks, cutoff=cutoff, dry_run=True)
    assert [(item.kind, item.name) for item in dry] == [(GcKind.LOG, "s3://gc-logs/ci/logs/shop/gone/")]
    assert set(store.execution_logs()) == {("shop", "gone"), ("shop", "retained"), ("shop", "fresh")}  # dry run
    removed = sweep(store, settings, [], marks, cutoff=cutoff, dry_run=False)
    assert [item.name for item in removed] == ["s3://gc-logs/ci/logs/shop/gone/"] and removed[0].size > 100
    assert set(store.execution_logs()) == {("shop", "retained"), ("shop", "fresh")}


# --- Lambda jobs' documents (conveyor.stores.jobs) --------------------------------------------------------------


def lambda_job(jobs: JobStore, execution_id: str, *, answered: bool = True) -> tuple[str, str]:
    """A job as the Lambda activity and serve leave it: ticket, attempt record, answer. (job hash, attempt hash)"""
    hashed = job_hash(new_job_id())
    attempt = attempt_hash(f"{execution_id}/Invoke/1/Deploy", 1)
    ticket = JobTicket(pipeline_name="shop", execution_id=execution_id, stage_name="Invoke", action_name="Deploy",
                       function_name="deployer")  # fmt: skip
    jobs.put_ticket(hashed, ticket)
    jobs.put_attempt(attempt, JobAttempt(job_hash=hashed, invocation=1))
    if answered:
        assert jobs.put_result(hashed, JobResult(kind=JobResultKind.SUCCEEDED))
    return hashed, attempt


def test_lambda_job_documents_go_by_age_unless_their_execution_is_open(gc_settings: Settings) -> None:
    """A closed execution's job documents older than the minimum age go; an open execution's stay (its action may
    still be waiting for the function's answer), and so does a job newer than the minimum age."""
    jobs = job_store(gc_settings)
    closed, closed_attempt = lambda_job(jobs, "closed-exec")
    waiting, waiting_attempt = lambda_job(jobs, "open-exec", answered=False)
    root = gc_settings.artifacts_dir / "jobs"
    age(root)
    fresh, _ = lambda_job(jobs, "another-closed-exec")  # newer than the minimum age
    marks = Marks(open_executions={"open-exec"})
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    dry = sweep(store_of(gc_settings), gc_settings, [], marks, cutoff=cutoff, dry_run=True)
    expected = {
        str(root / f"tickets/{closed}.json"),
        str(root / f"results/{closed}.json"),
        str(root / f"attempts/{closed_attempt}.json"),
    }
    assert {item.name for item in dry if item.kind == GcKind.JOB} == expected
    assert jobs.ticket(closed) is not None  # a dry run
    done = sweep(store_of(gc_settings), gc_settings, [], marks, cutoff=cutoff, dry_run=False)
    assert {item.name for item in done if item.kind == GcKind.JOB} == expected and all(i.size > 0 for i in done)
    assert jobs.ticket(closed) is None and jobs.result(closed) is None and jobs.attempt(closed_attempt) is None
    assert jobs.ticket(waiting) is not None and jobs.attempt(waiting_attempt) is not None
    assert jobs.ticket(fresh) is not None and jobs.result(fresh) is not None


def test_lambda_job_documents_in_the_s3_store_and_their_uploaded_outputs_are_swept(
    aws: Aws, gc_settings: Settings
) -> None:
    """On S3 (moto): a closed execution's ticket, result, attempt record and the output zip its function uploaded
    under the attempt go; the open execution's stay."""
    aws.client("s3").create_bucket(Bucket="gc-jobs")
    settings = gc_settings.model_copy(update={"artifact_store": S3Location(bucket="gc-jobs", prefix="ci")})
    jobs = job_store(settings)
    closed, closed_attempt = lambda_job(jobs, "closed-exec")
    waiting, waiting_attempt = lambda_job(jobs, "open-exec")
    s3 = aws.client("s3")
    for attempt in (closed_attempt, waiting_attempt):
        s3.put_object(Bucket="gc-jobs", Key=f"ci/jobs/outputs/{attempt}/Built.zip", Body=b"PK")
    cutoff = datetime.now(UTC) + timedelta(minutes=1)  # everything older (S3 times have a second's resolution)
    removed = sweep(store_of(settings), settings, [], Marks(open_executions={"open-exec"}), cutoff=cutoff,
                    dry_run=False)  # fmt: skip
    names = {item.name for item in removed if item.kind == GcKind.JOB}
    assert names == {
        f"s3://gc-jobs/ci/jobs/tickets/{closed}.json",
        f"s3://gc-jobs/ci/jobs/results/{closed}.json",
        f"s3://gc-jobs/ci/jobs/attempts/{closed_attempt}.json",
        f"s3://gc-jobs/ci/jobs/outputs/{closed_attempt}/Built.zip",
    }
    left = {o["Key"] for o in s3.list_objects_v2(Bucket="gc-jobs", Prefix="ci/jobs/")["Contents"]}
    assert left == {
        f"ci/jobs/tickets/{waiting}.json",
        f"ci/jobs/results/{waiting}.json",
        f"ci/jobs/attempts/{waiting_attempt}.json",
        f"ci/jobs/outputs/{waiting_attempt}/Built.zip",
    }


# --- providers' attempt records and uploaded templates (conveyor.stores.records) -----------------------------------


def test_attempt_records_of_every_kind_go_by_age_unless_their_execution_is_open(gc_settings: Settings) -> None:
    """CloudFormation's and CodeDeploy's attempt records: a closed execution's older than the minimum age go; an open
    execution's stay (its compensation may read one), and so does a newer one."""
    from conveyor.stores.records import AttemptRecord, AttemptRecords, RecordKind, attempt_hash, record_backend

    backend = record_backend(gc_settings)
    names = {}
    for kind in RecordKind:
        for owner in ("closed-exec", "open-exec"):
            names[(kind, owner)] = attempt_hash(kind, f"{owner}/Deploy/1/Release", 1)
            AttemptRecords(backend, kind).create(names[(kind, owner)], AttemptRecord(execution_id=owner))
    age(gc_settings.artifacts_dir)
    fresh = attempt_hash(RecordKind.CODEDEPLOY, "fresh", 1)
    AttemptRecords(backend, RecordKind.CODEDEPLOY).create(fresh, AttemptRecord(execution_id="closed-exec"))
    marks = Marks(open_executions={"open-exec"})
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    expected = {
        str(gc_settings.artifacts_dir / f"{kind.value}/{names[(kind, 'closed-exec')]}.json") for kind in RecordKind
    }
    dry = sweep(store_of(gc_settings), gc_settings, [], marks, cutoff=cutoff, dry_run=True)
    assert {item.name for item in dry if item.kind == GcKind.RECORD} == expected
    done = sweep(store_of(gc_settings), gc_settings, [], marks, cutoff=cutoff, dry_run=False)
    assert {item.name for item in done if item.kind == GcKind.RECORD} == expected
    left = {p.name for p in gc_settings.artifacts_dir.rglob("*.json")}
    assert left == {f"{names[(kind, 'open-exec')]}.json" for kind in RecordKind} | {f"{fresh}.json"}


def test_an_open_executions_attempt_record_keeps_the_artifacts_its_compensation_may_read(
    gc_settings: Settings, tmp_path: Path
) -> None:
    """An abandoned action hands nothing back, so no action state names its saved stack or previous revision: the
    attempt record does, and keeps it while the execution is open; once closed, it goes like any other."""
    from conveyor.stores.records import AttemptRecord, AttemptRecords, RecordKind, attempt_hash, record_backend

    store = store_of(gc_settings)
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "stack.json").write_text('{"template": "before"}')
    saved = store.put("Saved", tmp_path / "saved", ["stack.json"])
    AttemptRecords(record_backend(gc_settings), RecordKind.CLOUDFORMATION).create(
        attempt_hash(RecordKind.CLOUDFORMATION, "open-exec/Deploy/1/Stack", 1),
        AttemptRecord(execution_id="open-exec", keeps=[saved]),
    )
    age(gc_settings.artifacts_dir)
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    entries = list(store.entries())
    kept = sweep(store, gc_settings, entries, Marks(open_executions={"open-exec"}), cutoff=cutoff, dry_run=True)
    assert saved.digest not in {item.name for item in kept}
    closed = sweep(store, gc_settings, entries, Marks(), cutoff=cutoff, dry_run=True)
    assert saved.digest in {item.name for item in closed}


def test_uploaded_templates_in_the_s3_store_go_by_age(aws: Aws, gc_settings: Settings) -> None:
    """A CloudFormation template put under templates/ (over the TemplateBody limit) goes once older than the
    cutoff; one put since stays (every use puts it again)."""
    aws.client("s3").create_bucket(Bucket="gc-templates")
    settings = gc_settings.model_copy(update={"artifact_store": S3Location(bucket="gc-templates", prefix="ci")})
    s3 = aws.client("s3")
    s3.put_object(Bucket="gc-templates", Key="ci/templates/sha256/ab/old.template", Body=b"x" * 10)
    time.sleep(1.1)  # S3 times have a second's resolution
    cutoff = datetime.now(UTC)
    time.sleep(1.1)
    s3.put_object(Bucket="gc-templates", Key="ci/templates/sha256/cd/new.template", Body=b"y")
    removed = sweep(store_of(settings), settings, [], Marks(), cutoff=cutoff, dry_run=False)
    assert [(i.kind, i.name, i.size) for i in removed if i.kind == GcKind.TEMPLATE] == [
        (GcKind.TEMPLATE, "s3://gc-templates/ci/templates/sha256/ab/old.template", 10)
    ]
    left = [o["Key"] for o in s3.list_objects_v2(Bucket="gc-templates", Prefix="ci/templates/")["Contents"]]
    assert left == ["ci/templates/sha256/cd/new.template"]
