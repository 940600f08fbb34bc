"""Garbage collection: what no retained execution can still use is removed from the data directory.

Mark, then sweep. Retained executions are every open one (running, waiting for an approval, failed
with its retry window open), every one closed within `CONVEYOR_RETAIN_DAYS`, every rollback target (per
pipeline and stage, the newest-started STANDARD execution that succeeded in it, as visibility lists it,
and the coordinator's own fact) and the target a retained ROLLBACK execution re-runs. The mark is every
artifact digest their states name (actions' outputs, what actions kept for their compensation,
approvals' bound artifacts; a stage in progress is read live from its workflow, so an artifact packed by
an action before a waiting approval counts) and every document (pipeline declaration) any coordinator's versions name.

The sweep removes a store entry that is not marked AND unused for the minimum age
(`CONVEYOR_GC_MIN_AGE_MINUTES`): the store's listing is taken before the mark, a store hit refreshes an
entry's last use and `delete` checks it again, so an artifact packed a moment ago by a running action
that no state names yet, or one a put has just deduplicated against, is never removed. Logs of
executions no longer retained, workspaces a killed worker left behind, Lambda jobs' documents and providers'
attempt records (conveyor.stores.records) of executions no longer open, and CloudFormation templates uploaded to
the S3 store (`templates/`, put again at every use) go by the same minimum age.

Only executions of the task queue (`CONVEYOR_TASK_QUEUE`) count: their workers write this store.
Used by `conveyor gc` (in the command's process) and by the `collect_garbage` activity (the daily
schedule, conveyor.gc_schedule).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path

from pydantic import Field
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError

from conveyor import search_attributes as sa
from conveyor.coordinators import SavedStateUnreadable, read_coordinator_state
from conveyor.interface import Query, WorkflowType, split_execution_workflow_id, stage_workflow_id
from conveyor.memo import state_from_memo
from conveyor.model import CamelModel, ExecutionState, StageState, StageStatus
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactStore, StoredKind, StoreEntry
from conveyor.stores.event_record import stale_event_documents
from conveyor.stores.jobs import job_store
from conveyor.stores.logs import s3_log_store
from conveyor.stores.records import kept_by_open_attempts, record_backend, stale_attempts, stale_under
from conveyor.visibility import EXECUTIONS, quote

QUERY_TIMEOUT = timedelta(seconds=5)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class GcKind(StrEnum):
    ARTIFACT = "artifact"
    DOCUMENT = "document"
    LOG = "log"
    WORKSPACE = "workspace"
    JOB = "job document"  # a Lambda job's ticket, result, attempt record or uploaded output (conveyor.stores.jobs)
    RECORD = "attempt record"  # what an action attempt recorded before its AWS call (conveyor.stores.records)
    TEMPLATE = "uploaded template"  # a CloudFormation template over the TemplateBody limit, put in the S3 store
    EVENTS = "event record"  # a batch of an execution's events, or a dead letter (conveyor.stores.event_record)


class Removed(CamelModel):
    kind: GcKind
    name: str  # a digest, or a path relative to the data directory
    size: int


class GcRequest(CamelModel):
    """Input of the `collect_garbage` activity."""

    dry_run: bool = False


class GcSummary(CamelModel):
    """What a run did, in numbers (the scheduled workflow's result; the removed items go to the worker's log)."""

    dry_run: bool = False
    removed: dict[GcKind, int] = Field(default_factory=dict)
    bytes_freed: int = 0
    retained_executions: int = 0
    notes: list[str] = Field(default_factory=list)


class GcReport(CamelModel):
    dry_run: bool = False
    removed: list[Removed] = Field(default_factory=list)
    retained_executions: int = 0
    notes: list[str] = Field(default_factory=list)  # what was kept whole, and why

    @property
    def bytes_freed(self) -> int:
        return sum(item.size for item in self.removed)

    def summary(self) -> GcSummary:
        counts: dict[GcKind, int] = {}
        for item in self.removed:
            counts[item.kind] = counts.get(item.kind, 0) + 1
        return GcSummary(
            dry_run=self.dry_run,
            removed=counts,
            bytes_freed=self.bytes_freed,
            retained_executions=self.retained_executions,
            notes=self.notes,
        )


@dataclass
class Marks:
    executions: set[tuple[str, str]] = field(default_factory=set)  # (pipeline, execution id) retained
    open_executions: set[str] = field(default_factory=set)  # execution ids whose workflow is open
    artifacts: set[str] = field(default_factory=set)
    documents: set[str] | None = field(default_factory=set)  # None: unknown, keep every document
    keep_used_since: datetime | None = None  # a running stage's outputs are unknown: keep what it may have stored
    notes: list[str] = field(default_factory=list)


async def collect_garbage(
    client: Client, settings: Settings, store: ArtifactStore, *, dry_run: bool = False, now: datetime | None = None
) -> GcReport:
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(minutes=settings.gc_min_age_minutes)
    entries = await asyncio.to_thread(lambda: list(store.entries()))  # before the mark: see the module docstring
    retain_since = now - timedelta(days=settings.retain_days)
    marks = await mark(client, store, settings.task_queue, retain_since=retain_since)
    removed = await asyncio.to_thread(sweep, store, settings, entries, marks, cutoff=cutoff, dry_run=dry_run)
    return GcReport(dry_run=dry_run, removed=removed, retained_executions=len(marks.executions), notes=marks.notes)


# --- mark ------------------------------------------------------------------------------------------


@dataclass
class _Listed:
    pipeline: str
    execution_id: str
    workflow: WorkflowExecution
    state: ExecutionState | None

    @property
    def is_open(self) -> bool:
        return self.workflow.status == WorkflowExecutionStatus.RUNNING


async def mark(client: Client, store: ArtifactStore, task_queue: str, *, retain_since: datetime) -> Marks:
    """The executions of `task_queue` (whose workers write this store) that are retained, and what they use."""
    marks = Marks()
    on_queue = f" AND TaskQueue = '{quote(task_queue)}'"
    listed: dict[tuple[str, str], _Listed] = {}
    newest_success: dict[tuple[str, str], _Listed] = {}  # (pipeline, stage) -> rollback target
    async for wf in client.list_workflows(EXECUTIONS + on_queue):
        pipeline, execution_id = split_execution_workflow_id(wf.id)
        pipeline = wf.typed_search_attributes.get(sa.PIPELINE_NAME) or pipeline
        item = _Listed(pipeline, execution_id, wf, state_from_memo(await wf.memo()))
        listed[(pipeline, execution_id)] = item
        if item.is_open:
            marks.open_executions.add(execution_id)
        if item.is_open or (wf.close_time is not None and wf.close_time >= retain_since):
            marks.executions.add((pipeline, execution_id))
        if item.state is not None and item.state.execution_type != "STANDARD":
            continue  # a rollback target is a STANDARD execution
        for stage in wf.typed_search_attributes.get(sa.PIPELINE_STAGES_SUCCEEDED) or []:
            best = newest_success.get((pipeline, stage))
            if best is None or wf.start_time > best.workflow.start_time:
                newest_success[(pipeline, stage)] = item
    marks.executions |= {(item.pipeline, item.execution_id) for item in newest_success.values()}

    pipelines = {pipeline for pipeline, _ in listed}
    async for wf in client.list_workflows(f"WorkflowType = '{WorkflowType.COORDINATOR.value}'" + on_queue):
        pipelines.add(wf.id)
    for pipeline in sorted(pipelines):
        await _mark_coordinator(client, store, pipeline, marks)

    for pipeline, execution_id in list(marks.executions):  # what a retained rollback re-runs
        found = listed.get((pipeline, execution_id))
        if found is not None and found.state is not None and found.state.rollback_of:
            marks.executions.add((pipeline, found.state.rollback_of))

    for key in marks.executions:
        found = listed.get(key)
        if found is None or found.state is None:
            continue  # past the namespace's retention: nothing left that could use its artifacts
        state = await _live(client, found, marks) if found.is_open else found.state
        marks.artifacts |= set(referenced_digests(state))
    return marks


async def _mark_coordinator(client: Client, store: ArtifactStore, pipeline: str, marks: Marks) -> None:
    """Every version's document, and the coordinator's rollback facts; unreadable: keep every document."""
    try:
        state = await read_coordinator_state(client, pipeline, store.get_coordinator_state, rpc_timeout=QUERY_TIMEOUT)
    except (RPCError, TimeoutError, SavedStateUnreadable) as err:
        marks.documents = None
        marks.notes.append(f"every pipeline declaration kept: the coordinator of '{pipeline}' did not answer ({err})")
        return
    if state is None:
        return
    if marks.documents is not None:
        marks.documents |= {version.digest for version in state.versions}
    for lock in state.stages:
        if lock.last_succeeded is not None:
            marks.executions.add((pipeline, lock.last_succeeded.execution_id))


async def _live(client: Client, item: _Listed, marks: Marks) -> ExecutionState:
    """An open execution's state with its stages in progress read from their workflows: the memo has a
    stage's actions only once the stage ends, and an approval can wait for days after a build packed.
    A stage that does not answer (no worker, a stuck workflow task) keeps every entry used since it began."""
    assert item.state is not None
    state = item.state.model_copy(deep=True)
    for index, stage in enumerate(state.stages):
        if stage.status not in (StageStatus.IN_PROGRESS, StageStatus.STOPPING):
            continue
        workflow_id = stage_workflow_id(item.pipeline, item.execution_id, stage.stage_name)
        try:
            state.stages[index] = await client.get_workflow_handle(workflow_id).query(
                Query.STATE, result_type=StageState, rpc_timeout=QUERY_TIMEOUT
            )
        except (RPCError, TimeoutError) as err:
            since = stage.started_at or _EPOCH
            marks.keep_used_since = min(marks.keep_used_since or since, since)
            marks.notes.append(
                f"execution {item.pipeline}/{item.execution_id} is in stage {stage.stage_name}, which did not answer "
                f"({err}): every artifact used since {since.isoformat()} kept"
            )
    return state


def referenced_digests(state: ExecutionState) -> Iterable[str]:
    for stage in state.stages:
        for action in stage.actions:
            yield from (ref.digest for ref in action.output_artifacts)
            yield from (ref.digest for ref in action.compensation_artifacts)  # a stack's saved state, say
            if action.approval_request is not None:
                yield from action.approval_request.artifacts.values()


# --- sweep -----------------------------------------------------------------------------------------


def sweep(
    store: ArtifactStore,
    settings: Settings,
    entries: list[StoreEntry],
    marks: Marks,
    *,
    cutoff: datetime,
    dry_run: bool,
) -> list[Removed]:
    removed: list[Removed] = []
    in_use = marks.artifacts | kept_by_open_attempts(record_backend(settings), marks.open_executions)
    for entry in entries:
        marked = in_use if entry.kind == StoredKind.ARTIFACT else marks.documents
        if marked is None or entry.digest in marked or entry.last_used >= cutoff:
            continue
        if entry.kind == StoredKind.ARTIFACT and marks.keep_used_since and entry.last_used >= marks.keep_used_since:
            continue
        if dry_run or store.delete(entry, unused_since=cutoff):
            removed.append(Removed(kind=GcKind(entry.kind.value), name=entry.digest, size=entry.size))
    removed += _sweep_logs(settings, marks, cutoff, dry_run)
    removed += _sweep_s3_logs(settings, marks, cutoff, dry_run)
    removed += _sweep_workspaces(settings, marks, cutoff, dry_run)
    removed += _sweep_jobs(settings, marks, cutoff, dry_run)
    removed += _sweep_records(settings, marks, cutoff, dry_run)
    removed += _sweep_events(settings, marks, cutoff, dry_run)
    return removed


def _sweep_events(settings: Settings, marks: Marks, cutoff: datetime, dry_run: bool) -> list[Removed]:
    """events/ and event-dead-letters/ of executions no longer retained: kept as long as their logs."""
    backend = record_backend(settings)
    stale = stale_event_documents(backend, marks.executions, cutoff)
    if not dry_run:
        backend.delete([doc.relative for doc in stale])
    return [Removed(kind=GcKind.EVENTS, name=backend.where(d.relative), size=d.size) for d in stale]


UPLOADED_TEMPLATES = "templates/"  # activities.providers.cloudformation puts large templates here, by digest


def _sweep_records(settings: Settings, marks: Marks, cutoff: datetime, dry_run: bool) -> list[Removed]:
    """Attempt records of every kind older than the cutoff, unless their execution is open (its action, or its
    compensation, may still read them); uploaded templates older than the cutoff (CloudFormation reads one at the
    call that names it, and every use puts it again)."""
    backend = record_backend(settings)
    records = stale_attempts(backend, marks.open_executions, cutoff)
    templates = stale_under(backend, UPLOADED_TEMPLATES, cutoff) if settings.artifact_store is not None else []
    if not dry_run:
        backend.delete([doc.relative for doc in records + templates])
    return [Removed(kind=GcKind.RECORD, name=backend.where(d.relative), size=d.size) for d in records] + [
        Removed(kind=GcKind.TEMPLATE, name=backend.where(d.relative), size=d.size) for d in templates
    ]


def _sweep_jobs(settings: Settings, marks: Marks, cutoff: datetime, dry_run: bool) -> list[Removed]:
    """Lambda jobs' documents (`jobs/` in the configured store) older than the cutoff, unless their execution is
    open: a job is answered only while its action waits."""
    jobs = job_store(settings)
    stale = jobs.stale(marks.open_executions, cutoff)
    if not dry_run:
        jobs.delete(stale)
    return [Removed(kind=GcKind.JOB, name=jobs.where(doc), size=doc.size) for doc in stale]


def _sweep_logs(settings: Settings, marks: Marks, cutoff: datetime, dry_run: bool) -> list[Removed]:
    """logs/<pipeline>/<execution>/: removed once the execution is no longer retained."""
    removed: list[Removed] = []
    root = settings.logs_dir
    for pipeline_dir in _subdirectories(root):
        for execution_dir in _subdirectories(pipeline_dir):
            if (pipeline_dir.name, execution_dir.name) in marks.executions:
                continue
            removed += _remove_tree(settings, GcKind.LOG, execution_dir, cutoff, dry_run)
    return removed  # an empty pipeline directory stays: a worker may be creating a log in it


def _sweep_s3_logs(settings: Settings, marks: Marks, cutoff: datetime, dry_run: bool) -> list[Removed]:
    """logs/<pipeline>/<execution>/ in the S3 store: removed once the execution is no longer retained and none of
    its log objects changed since the cutoff (a log still being written is never removed)."""
    store = s3_log_store(settings)
    if store is None:
        return []
    removed: list[Removed] = []
    for (pipeline, execution_id), logs in sorted(store.execution_logs().items()):
        if (pipeline, execution_id) in marks.executions or (logs.last_modified and logs.last_modified >= cutoff):
            continue
        if not dry_run:
            store.delete_keys(logs.keys)
        removed.append(Removed(kind=GcKind.LOG, name=store.url(f"logs/{pipeline}/{execution_id}/"), size=logs.size))
    return removed


def _sweep_workspaces(settings: Settings, marks: Marks, cutoff: datetime, dry_run: bool) -> list[Removed]:
    """Workspaces are removed after every action; one left here is a killed worker's, unless its execution
    is open (a long action may not write to its workspace for a while)."""
    removed: list[Removed] = []
    owners = [_key_form(execution_id) + "_" for execution_id in marks.open_executions]
    for workspace in _subdirectories(settings.workspaces_dir):
        if any(_key_form(workspace.name).startswith(owner) for owner in owners):
            continue
        removed += _remove_tree(settings, GcKind.WORKSPACE, workspace, cutoff, dry_run)
    return removed


_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def _key_form(text: str) -> str:
    """A workspace's name is its action's idempotency key (`<execution>/<stage>/...`) with unsafe characters
    replaced: compared with every other character as `_`, whatever that replacement set is."""
    return _NOT_ALNUM.sub("_", text)


def _subdirectories(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []


def _remove_tree(settings: Settings, kind: GcKind, path: Path, cutoff: datetime, dry_run: bool) -> list[Removed]:
    newest, size = _newest_and_size(path)
    if newest >= cutoff.timestamp():
        return []
    if not dry_run:
        shutil.rmtree(path, ignore_errors=True)
    return [Removed(kind=kind, name=str(path.relative_to(settings.data_dir)), size=size)]


def _newest_and_size(path: Path) -> tuple[float, int]:
    newest, size = path.lstat().st_mtime, 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            newest = max(newest, st.st_mtime)
            if name in filenames:
                size += st.st_size
    return newest, size
