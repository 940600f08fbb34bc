"""The CloudFormation provider's activities: the action (every ActionMode) and its compensation.

- Every create/update/delete/execute call carries a ClientRequestToken derived from the action attempt. Before the
  call the operation (its kind, token and the stack's snapshot) is recorded in the store at a location derived from
  the action attempt (`attempt_record`); after it, it goes into the heartbeat details. A retried activity (its worker
  died) follows the operation it finds in the heartbeat, else the one recorded in the store (the worker may have died
  after the call, before a heartbeat carried it), else one whose token is in the stack's events (real CloudFormation
  records it there). The compensation of an action abandoned mid-operation reads its snapshot from that record.
- The stack is followed with DescribeStacks every `Settings.cloudformation_poll_seconds`, heartbeating.
- Before an operation changes an existing stack, its template and parameters are kept in the artifact store (the
  action returns only the reference, as a compensation artifact); the compensation puts them back, or deletes a stack
  the action created.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.running import action_workspace, write_action_log
from activities.aws.session import AwsSessions, aws_errors, refused
from conveyor.model import COMPENSATION_ARTIFACTS_DETAIL, ActionContext, ActionOutcome, ArtifactRef, CamelModel
from conveyor.providers.cloudformation import (
    ACTIVITY,
    COMPENSATION_ACTIVITY,
    ActionMode,
    ArtifactPath,
    CloudFormationCompensation,
    CloudFormationInput,
    action_mode,
    attempt_record,
    client_request_token,
    parameter_overrides_problem,
)
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, ConfiguredArtifactStore, store_for_outputs
from conveyor.stores.entries import StoredKind
from conveyor.stores.records import AttemptRecord as StoredAttempt
from conveyor.stores.records import AttemptRecords, RecordKind, RecordStoreError, record_backend
from conveyor.stores.s3 import S3ArtifactStore, StoreUnavailableError
from conveyor.text import shorten

_T = TypeVar("_T")
HEARTBEAT_SECONDS = 2.0
TEMPLATE_BODY_LIMIT = 51_200  # CloudFormation's TemplateBody limit; larger templates go through TemplateURL
TEMPLATE_URL_LIMIT = 1_048_576  # CloudFormation's limit for a template read from S3
MAX_CHANGES_LISTED = 20
FAILED_STATES = frozenset(
    {"CREATE_FAILED", "ROLLBACK_FAILED", "ROLLBACK_COMPLETE", "DELETE_FAILED", "UPDATE_ROLLBACK_FAILED"}
)
SUCCESS_STATES = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE", "DELETE_COMPLETE", "IMPORT_COMPLETE"})
NO_CHANGES = ("didn't contain changes", "no updates are to be performed", "no changes")
SNAPSHOT_FILE = "stack.json"
SNAPSHOT_TOUCH_SECONDS = 600.0  # well inside garbage collection's minimum age (CONVEYOR_GC_MIN_AGE_MINUTES)


class Operation(CamelModel):
    """The stack operation an attempt started: what a retried activity follows."""

    kind: str  # CREATE, UPDATE, DELETE, EXECUTE
    stack_id: str
    token: str
    started: float  # epoch seconds: events before it belong to earlier operations
    snapshot: ArtifactRef | None = None  # the stack as the attempt found it (for the compensation)


class AttemptRecord(StoredAttempt):
    """The operation an action attempt is about to start, recorded in the store before the call (a record of
    conveyor.stores.records: swept by `conveyor gc` once its execution is closed)."""

    kind: str  # CREATE, UPDATE, EXECUTE
    token: str
    stack_name: str
    started: float
    snapshot: ArtifactRef | None = None


class Snapshot(CamelModel):
    """A stack as an action found it, before changing it (kept in the artifact store for the compensation)."""

    stack_name: str
    existed: bool
    template: str | None = None
    parameters: dict[str, str] = {}
    capabilities: list[str] = []


def _no_changes(text: str | None) -> bool:
    return any(marker in (text or "").lower() for marker in NO_CHANGES)


class _Stack:
    """One action's calls on one stack (blocking: run in a thread)."""

    def __init__(self, client: Any, name: str, action: str, role: str | None) -> None:
        self.client, self.name, self.action, self.role = client, name, action, role

    @contextmanager
    def errors(self, call: str) -> Iterator[None]:
        with aws_errors(self.action, f"cloudformation:{call}", self.role, target=f"stack {self.name}"):
            yield

    def describe(self, stack: str | None = None) -> dict[str, Any] | None:
        """The stack, or None when there is none (or it was deleted)."""
        try:
            with self.errors("DescribeStacks"):
                stacks = self.client.describe_stacks(StackName=stack or self.name)["Stacks"]
        except ApplicationError as exc:
            if "does not exist" in str(exc):
                return None
            raise
        found = stacks[0] if stacks else None
        return None if found is None or found["StackStatus"] == "DELETE_COMPLETE" else found

    def template(self, change_set: str | None = None) -> str:
        """The template's text (boto3 hands a JSON template back parsed)."""
        extra = {"ChangeSetName": change_set} if change_set else {}
        with self.errors("GetTemplate"):
            body = self.client.get_template(StackName=self.name, TemplateStage="Original", **extra)["TemplateBody"]
        return body if isinstance(body, str) else json.dumps(body)

    def unchanged(self, current: dict[str, Any], template: str, parameters: dict[str, str]) -> bool:
        """The stack already has this template and these parameters (those not given keep the template's default)."""
        have = _parameters(current)
        return _same_template(self.template(), template) and all(have.get(k) == v for k, v in parameters.items())

    def events(self, stack_id: str) -> list[dict[str, Any]]:
        with self.errors("DescribeStackEvents"):
            return list(self.client.describe_stack_events(StackName=stack_id).get("StackEvents", []))

    def first_failure(self, stack_id: str, since: float) -> str | None:
        """The first failed resource of the operation that started at `since`, with its reason."""
        events = [e for e in self.events(stack_id) if e["Timestamp"].timestamp() >= since - 1]
        for event in sorted(events, key=lambda e: e["Timestamp"]):
            if event.get("ResourceStatus", "").endswith("_FAILED") and event.get("LogicalResourceId") != self.name:
                reason = event.get("ResourceStatusReason") or "no reason given"
                return f"{event['LogicalResourceId']} ({event.get('ResourceType')}) {event['ResourceStatus']}: {reason}"
        for event in sorted(events, key=lambda e: e["Timestamp"]):
            if event.get("ResourceStatus", "").endswith("_FAILED"):
                return f"{event['LogicalResourceId']} {event['ResourceStatus']}: {event.get('ResourceStatusReason')}"
        return None

    def operation_with_token(self, token: str) -> str | None:
        """The id of the stack whose events carry `token` (an earlier activity's call), or None."""
        found = self.describe()
        if found is None:
            return None
        for event in self.events(found["StackId"]):
            if event.get("ClientRequestToken") == token:
                return str(found["StackId"])
        return None


class CloudFormationProvider:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)

    # --- the action -------------------------------------------------------------------------------------------

    @activity.defn(name=ACTIVITY)
    async def cloudformation(self, input: CloudFormationInput) -> ActionOutcome:
        beat = _Heartbeat(_heartbeat_operation())
        beating = asyncio.create_task(beat.forever())
        try:
            async with action_workspace(self.settings, input.context) as workspace:
                outcome = await _until_done(asyncio.to_thread(self._run, input, workspace, beat), beat)
        finally:
            beating.cancel()
        _log(input.context).info("cloudformation.done", summary=outcome.summary)
        return outcome

    def _run(self, input: CloudFormationInput, workspace: Path, beat: _Heartbeat) -> ActionOutcome:
        action = input.context.action_name
        mode = action_mode(input.mode)
        if mode is None:
            raise refused(
                f"action '{action}': ActionMode '{input.mode}' is not an action mode; "
                f"use one of {', '.join(ActionMode)}"
            )
        stack = _Stack(self._client(input), input.stack_name, action, self.sessions.role(input.identity))
        lines: list[str] = []
        run = _Run(self, input, workspace, stack, beat, lines)
        try:
            return run.mode(mode)
        except ApplicationError as exc:
            if not run.snapshots:
                raise
            raise _with_compensation_artifacts(exc, run.snapshots) from None
        finally:
            write_action_log(self.settings, input.context, lines)

    def _client(self, input: CloudFormationInput | CloudFormationCompensation) -> Any:
        return self.sessions.client(input.identity, "cloudformation", input.context.action_name)

    # --- the compensation -------------------------------------------------------------------------------------

    @activity.defn(name=COMPENSATION_ACTIVITY)
    async def cloudformation_compensate(self, input: CloudFormationCompensation) -> ActionOutcome:
        beat = _Heartbeat(_heartbeat_operation())
        beating = asyncio.create_task(beat.forever())
        try:
            return await asyncio.to_thread(self._compensate, input, beat)
        finally:
            beating.cancel()

    def _compensate(self, input: CloudFormationCompensation, beat: _Heartbeat) -> ActionOutcome:
        action = input.context.action_name
        stack = _Stack(self._client(input), input.stack_name, action, self.sessions.role(input.identity))
        lines: list[str] = []
        snapshot = self._snapshot(input.snapshots) or self._recorded_snapshot(input.attempt_records, lines)
        try:
            if snapshot is None:
                lines.append(
                    f"stack {input.stack_name}: the action kept no snapshot (it changed nothing): nothing to undo"
                )
                return ActionOutcome(summary=f"nothing to undo on stack {input.stack_name}")
            follower = _Follower(self, stack, beat, lines, input.context, input.timeout_seconds)
            current = follower.settled(stack.describe())
            if not snapshot.existed:
                if current is None:
                    return ActionOutcome(summary=f"stack {input.stack_name} is already gone")
                follower.delete(current, input.role_arn)
                return ActionOutcome(summary=f"deleted stack {input.stack_name}, which the action created")
            assert snapshot.template is not None
            if current is None:
                raise refused(f"action '{action}': stack {input.stack_name} is gone: there is nothing to restore")
            summary = follower.update(
                current, snapshot.template, snapshot.parameters, snapshot.capabilities or input.capabilities,
                input.role_arn, self.template_source(input.context, snapshot.template),
            )  # fmt: skip
            return ActionOutcome(summary=f"stack {input.stack_name} restored to its previous template: {summary}")
        finally:
            write_action_log(self.settings, input.context, lines)

    def _recorded_snapshot(self, locations: list[str], lines: list[str]) -> Snapshot | None:
        """The snapshot the action's earliest attempt recorded before its call (an abandoned action returned none)."""
        for location in locations:
            record = self.recorded_attempt(location)
            if record is not None and record.snapshot is not None:
                lines.append(f"stack {record.stack_name}: the snapshot recorded before its {record.kind} call")
                return self._snapshot([record.snapshot])
        return None

    def _records(self) -> AttemptRecords:
        return AttemptRecords(record_backend(self.settings), RecordKind.CLOUDFORMATION)

    def record_attempt(self, location: str, record: AttemptRecord) -> None:
        try:
            self._records().replace(location, record)
        except RecordStoreError as exc:
            raise ApplicationError(f"could not record the stack operation before starting it: {exc}",
                                   type="AwsUnavailable") from None  # fmt: skip

    def recorded_attempt(self, location: str) -> AttemptRecord | None:
        try:
            return self._records().read(location, AttemptRecord)
        except RecordStoreError as exc:
            raise ApplicationError(f"could not read the recorded stack operation: {exc}",
                                   type="AwsUnavailable") from None  # fmt: skip

    def template_source(self, context: ActionContext, template: str) -> dict[str, str]:
        """TemplateBody; a template over its 51,200-byte limit is put in the action's S3 store (by digest) and
        passed as TemplateURL, which CloudFormation reads with the caller's permissions."""
        data = template.encode()
        if len(data) <= TEMPLATE_BODY_LIMIT:
            return {"TemplateBody": template}
        what = f"action '{context.action_name}': the template ({len(data):,} bytes)"
        if len(data) > TEMPLATE_URL_LIMIT:
            raise refused(f"{what} is over CloudFormation's {TEMPLATE_URL_LIMIT:,}-byte template limit")
        target = store_for_outputs(self.store, context.artifact_stores)
        if isinstance(target, ConfiguredArtifactStore):
            target = target.default
        if not isinstance(target, S3ArtifactStore):
            raise refused(
                f"{what} is over CloudFormation's {TEMPLATE_BODY_LIMIT:,}-byte TemplateBody limit; a larger template "
                "is passed as TemplateURL from an S3 artifact store, and this worker's store is local: set "
                "CONVEYOR_ARTIFACT_STORE=s3://bucket/prefix (or declare the pipeline's artifactStore), or make the "
                "template smaller"
            )
        digest = hashlib.sha256(data).hexdigest()
        obj = target.object(f"templates/sha256/{digest[:2]}/{digest}.template")
        try:
            target.put_bytes("the CloudFormation template", obj, data, "text/plain")
        except ArtifactError as exc:
            raise refused(f"{what}: {exc}", "ArtifactError") from None
        except StoreUnavailableError as exc:
            raise ApplicationError(f"{what}: {exc}", type="AwsUnavailable") from None
        region = target.region or target.client.meta.region_name or "us-east-1"
        return {"TemplateURL": f"https://{obj.bucket}.s3.{region}.amazonaws.com/{quote(obj.key)}"}

    def _snapshot(self, refs: list[ArtifactRef]) -> Snapshot | None:
        if not refs:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                self.store.extract(refs[0], Path(tmp))
            except ArtifactError as exc:
                raise refused(f"the stack's snapshot is not readable: {exc}", "ArtifactError") from None
            return Snapshot.model_validate_json((Path(tmp) / SNAPSHOT_FILE).read_text())

    def keep_snapshot(self, context: ActionContext, snapshot: Snapshot) -> ArtifactRef:
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / SNAPSHOT_FILE).write_text(snapshot.model_dump_json(by_alias=True))
            try:
                return store_for_outputs(self.store, context.artifact_stores).put(
                    f"{context.action_name}-stack-snapshot", Path(tmp), [SNAPSHOT_FILE]
                )
            except ArtifactError as exc:
                raise refused(f"could not keep the stack's snapshot: {exc}", "ArtifactError") from None


class _Follower:
    """Starts (once) and follows stack operations."""

    def __init__(
        self,
        provider: CloudFormationProvider,
        stack: _Stack,
        beat: _Heartbeat,
        lines: list[str],
        context: ActionContext,
        timeout_seconds: int,
        record: str | None = None,
    ) -> None:
        self.provider, self.stack, self.beat, self.lines = provider, stack, beat, lines
        self.context, self.deadline = context, time.monotonic() + timeout_seconds
        self.snapshot: ArtifactRef | None = None  # kept before the operation; carried in the heartbeat
        self.record = record  # where the action attempt records its operation before the call (not a compensation)

    def start(self, kind: str, call: Callable[[str], str]) -> Operation:
        """The operation `kind` of this attempt: the one an earlier activity started (heartbeat details, or the token
        in the stack's events), else `call(token)` -> stack id, made once."""
        token = client_request_token(self.context, kind)
        earlier = self.beat.operation
        if earlier is not None and earlier.token == token:
            self.lines.append(f"following {kind} of stack {self.stack.name} started by an earlier attempt")
            return earlier
        stack_id = self.stack.operation_with_token(token)
        if stack_id is not None:
            self.lines.append(f"following {kind} of stack {self.stack.name} found by its ClientRequestToken")
            operation = Operation(
                kind=kind, stack_id=stack_id, token=token, started=time.time() - 60, snapshot=self.snapshot
            )
        else:
            started = time.time()
            if self.record is not None:
                self.provider.record_attempt(
                    self.record,
                    AttemptRecord(
                        execution_id=self.context.execution_id,
                        kind=kind,
                        token=token,
                        stack_name=self.stack.name,
                        started=started,
                        snapshot=self.snapshot,
                        keeps=[self.snapshot] if self.snapshot is not None else [],
                    ),
                )
            stack_id = call(token)
            operation = Operation(kind=kind, stack_id=stack_id, token=token, started=started, snapshot=self.snapshot)
            self.lines.append(f"{kind} of stack {self.stack.name} started (ClientRequestToken {token})")
        self.beat.follow(operation)
        return operation

    def resume(self, record: AttemptRecord, stack_id: str) -> Operation:
        """The operation an earlier activity of this attempt recorded and started, followed from here."""
        self.lines.append(
            f"following {record.kind} of stack {self.stack.name} recorded by an earlier activity of this attempt"
        )
        operation = Operation(
            kind=record.kind, stack_id=stack_id, token=record.token, started=record.started, snapshot=record.snapshot
        )
        self.beat.follow(operation)
        return operation

    def settled(self, current: dict[str, Any] | None) -> dict[str, Any] | None:
        """The stack once no operation runs on it (an abandoned action's may still): CloudFormation refuses another."""
        while current is not None and current["StackStatus"].endswith("_IN_PROGRESS"):
            if time.monotonic() > self.deadline:
                raise ApplicationError(
                    f"stack {self.stack.name} still {current['StackStatus']} at the timeout", type="ActionTimeout"
                )
            self.beat.check_cancelled()
            time.sleep(self.provider.settings.cloudformation_poll_seconds)
            current = self.stack.describe(current["StackId"])
        return current

    def follow(self, operation: Operation) -> dict[str, Any] | None:
        """The stack once the operation ends (None: deleted); fails naming the first failed resource."""
        poll = self.provider.settings.cloudformation_poll_seconds
        touched = time.monotonic()
        while True:
            self.beat.check_cancelled()
            if operation.snapshot is not None and time.monotonic() - touched > SNAPSHOT_TOUCH_SECONDS:
                # Garbage collection sees the snapshot in the action's state only once the action ends: a use
                # keeps it through an operation longer than the store's minimum age.
                self.provider.store.touch(StoredKind.ARTIFACT, operation.snapshot.digest)
                touched = time.monotonic()
            found = self.stack.describe(operation.stack_id)
            status = found["StackStatus"] if found else "DELETE_COMPLETE"
            if not status.endswith("_IN_PROGRESS") or status == "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS":
                break
            if time.monotonic() > self.deadline:
                raise ApplicationError(
                    f"action '{self.stack.action}': stack {self.stack.name} still {status} at the action's timeout",
                    type="ActionTimeout",
                    non_retryable=True,
                )
            time.sleep(poll)
        self.lines.append(f"stack {self.stack.name}: {status}")
        if status in SUCCESS_STATES or status == "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS":
            return found
        cause = self.stack.first_failure(operation.stack_id, operation.started)
        reason = found.get("StackStatusReason") if found else None
        raise ApplicationError(
            f"action '{self.stack.action}': {operation.kind} of stack {self.stack.name} ended {status}"
            + (f": first failed resource {cause}" if cause else (f": {reason}" if reason else "")),
            type="StackFailed",
            non_retryable=True,
        )

    def delete(self, current: dict[str, Any], role_arn: str | None) -> None:
        def call(token: str) -> str:
            with self.stack.errors("DeleteStack"):
                self.stack.client.delete_stack(
                    StackName=current["StackId"], ClientRequestToken=token, **_role(role_arn)
                )
            return str(current["StackId"])

        self.follow(self.start("DELETE", call))

    def update(
        self,
        current: dict[str, Any],
        template: str,
        parameters: dict[str, str],
        capabilities: list[str],
        role_arn: str | None,
        source: dict[str, str],
        policy: dict[str, str] | None = None,
    ) -> str:
        """Update the stack to `template` (passed as `source`: TemplateBody or TemplateURL) and `parameters`;
        "no changes" when they are what it has."""
        if self.stack.unchanged(current, template, parameters):
            self.lines.append(f"stack {self.stack.name}: template and parameters unchanged: no update")
            return "no changes"

        def call(token: str) -> str:
            try:
                with self.stack.errors("UpdateStack"):
                    self.stack.client.update_stack(
                        StackName=self.stack.name,
                        Parameters=_parameter_list(parameters),
                        Capabilities=capabilities,
                        ClientRequestToken=token,
                        **source,
                        **(policy or {}),
                        **_role(role_arn),
                    )
            except ApplicationError as exc:
                if _no_changes(str(exc)):
                    raise _NoChanges from None
                raise
            return str(current["StackId"])

        try:
            self.follow(self.start("UPDATE", call))
        except _NoChanges:
            self.lines.append(f"stack {self.stack.name}: No updates are to be performed")
            return "no changes"
        return "updated"


class _NoChanges(Exception):
    pass


class _Run:
    """One run of the action: its inputs read, its mode carried out."""

    def __init__(
        self,
        provider: CloudFormationProvider,
        input: CloudFormationInput,
        workspace: Path,
        stack: _Stack,
        beat: _Heartbeat,
        lines: list[str],
    ) -> None:
        self.provider, self.input, self.workspace, self.stack, self.lines = provider, input, workspace, stack, lines
        self.follower = _Follower(
            provider, stack, beat, lines, input.context, input.timeout_seconds, attempt_record(input.context)
        )
        self.action = input.context.action_name
        self.snapshots: list[ArtifactRef] = []

    def mode(self, mode: ActionMode) -> ActionOutcome:
        if mode == ActionMode.DELETE_ONLY:
            return self.delete_only()
        if mode == ActionMode.CHANGE_SET_REPLACE:
            return self.change_set_replace()
        if mode == ActionMode.CHANGE_SET_EXECUTE:
            return self.change_set_execute()
        return self.create_update(replace=mode == ActionMode.REPLACE_ON_FAILURE)

    # --- modes ------------------------------------------------------------------------------------------------

    def delete_only(self) -> ActionOutcome:
        current = self.stack.describe()
        if current is None and self.follower.beat.operation is None:
            return ActionOutcome(summary=f"stack {self.stack.name} does not exist: nothing to delete")
        if current is not None:
            self.follower.delete(current, self.input.role_arn)
        return ActionOutcome(summary=f"deleted stack {self.stack.name}")

    def create_update(self, *, replace: bool) -> ActionOutcome:
        template, parameters = self.template_and_parameters()
        current = self.stack.describe()
        earlier = self.follower.beat.operation
        if earlier is not None and earlier.kind in ("CREATE", "UPDATE"):
            self.snapshots = [earlier.snapshot] if earlier.snapshot else []  # what the earlier attempt kept
            return self.finish(self.follower.follow(self.follower.start(earlier.kind, _never)), earlier.kind)
        recorded = self.provider.recorded_attempt(attempt_record(self.input.context)) if earlier is None else None
        if recorded is not None and recorded.kind in ("CREATE", "UPDATE") and current is not None:
            # Recorded before the call, but no heartbeat carried it: the call landed if the stack is busy or (the
            # operation done) already has this template and these parameters; else it never reached CloudFormation.
            busy = current["StackStatus"].endswith("_IN_PROGRESS")
            if recorded.kind == "CREATE" or busy or self.stack.unchanged(current, template, parameters):
                self.snapshots = [recorded.snapshot] if recorded.snapshot else []
                operation = self.follower.resume(recorded, str(current["StackId"]))
                return self.finish(self.follower.follow(operation), recorded.kind)
        if (
            current is not None
            and current["StackStatus"] in FAILED_STATES
            or (current is not None and current["StackStatus"] == "REVIEW_IN_PROGRESS")
        ):
            status = current["StackStatus"]
            if not replace and status != "REVIEW_IN_PROGRESS":
                raise refused(
                    f"action '{self.action}': stack {self.stack.name} is in the failed state {status}: CREATE_UPDATE "
                    "cannot update it; delete it, or use ActionMode REPLACE_ON_FAILURE to delete and recreate it",
                    "StackFailed",
                )
            self.lines.append(f"stack {self.stack.name} is {status}: deleting it before creating it again")
            self.follower.delete(current, self.input.role_arn)
            current = None
        elif current is not None and current["StackStatus"].endswith("_IN_PROGRESS"):
            raise ApplicationError(
                f"action '{self.action}': stack {self.stack.name} is busy ({current['StackStatus']}): another "
                "operation is running on it",
                type="AwsUnavailable",
            )
        if current is None:
            self.keep(Snapshot(stack_name=self.stack.name, existed=False))

            source = self.provider.template_source(self.input.context, template)

            def create(token: str) -> str:
                with self.stack.errors("CreateStack"):
                    answer = self.stack.client.create_stack(
                        StackName=self.stack.name,
                        Parameters=_parameter_list(parameters),
                        Capabilities=self.input.capabilities,
                        ClientRequestToken=token,
                        **source,
                        **self.configuration_extras(),
                        **self.stack_policy(),
                        **_role(self.input.role_arn),
                    )
                return str(answer["StackId"])

            return self.finish(self.follower.follow(self.follower.start("CREATE", create)), "CREATE")
        self.keep_current(current)
        summary = self.follower.update(
            current, template, parameters, self.input.capabilities, self.input.role_arn,
            self.provider.template_source(self.input.context, template), self.stack_policy(),
        )  # fmt: skip
        if summary == "no changes":
            self.snapshots = []  # nothing changed: nothing to undo
            return self.finish(current, "no changes")
        return self.finish(self.stack.describe(), "UPDATE")

    def change_set_replace(self) -> ActionOutcome:
        template, parameters = self.template_and_parameters()
        name = self.input.change_set_name
        assert name is not None
        current = self.stack.describe()
        creating = current is None or current["StackStatus"] == "REVIEW_IN_PROGRESS"
        if current is not None and self.change_set_exists(name):
            self.delete_change_set(name)
            self.lines.append(f"deleted the earlier change set {name}")
        where = f"change set {name} of stack {self.stack.name}"
        try:
            answer = self.create_change_set(name, creating, template, parameters)
        except _NoChanges:
            self.lines.append(f"{where}: no changes (No updates are to be performed)")
            return ActionOutcome(summary=f"{where}: no changes", review=f"{where}: no changes")
        change_set = self.wait_change_set(answer["Id"])
        if self.empty(change_set, current, template, parameters):
            self.lines.append(f"{where}: no changes")
            return ActionOutcome(summary=f"{where}: no changes", review=f"{where}: no changes")
        changes = _changes(change_set)
        self.lines += [f"{where}: {line}" for line in changes]
        review = (
            f"{where}: {len(changes)} change(s): "
            + "; ".join(changes[:MAX_CHANGES_LISTED])
            + (f"; and {len(changes) - MAX_CHANGES_LISTED} more" if len(changes) > MAX_CHANGES_LISTED else "")
        )
        return ActionOutcome(summary=shorten(review, 2000), review=shorten(review, 2000))

    def create_change_set(self, name: str, creating: bool, template: str, parameters: dict[str, str]) -> Any:
        """CreateChangeSet; _NoChanges when CloudFormation (or moto) answers that nothing would change."""
        try:
            with self.stack.errors("CreateChangeSet"):
                return self.stack.client.create_change_set(
                    StackName=self.stack.name,
                    ChangeSetName=name,
                    ChangeSetType="CREATE" if creating else "UPDATE",
                    **self.provider.template_source(self.input.context, template),
                    Parameters=_parameter_list(parameters),
                    Capabilities=self.input.capabilities,
                    ClientToken=client_request_token(self.input.context, "CHANGESET"),
                    **self.configuration_extras(),
                    **_role(self.input.role_arn),
                )
        except ApplicationError as exc:
            if _no_changes(str(exc)):
                raise _NoChanges from None
            raise

    def change_set_execute(self) -> ActionOutcome:
        name = self.input.change_set_name
        assert name is not None
        where = f"change set {name} of stack {self.stack.name}"
        earlier = self.follower.beat.operation
        if earlier is not None and earlier.kind == "EXECUTE":
            self.snapshots = [earlier.snapshot] if earlier.snapshot else []
            self.follower.follow(self.follower.start("EXECUTE", _never))
            return self.finish(self.stack.describe(), "EXECUTE", where)
        recorded = self.provider.recorded_attempt(attempt_record(self.input.context)) if earlier is None else None
        if recorded is not None and recorded.kind == "EXECUTE" and not self.change_set_available(name):
            # Recorded before ExecuteChangeSet, and the change set is no longer there to execute: the call landed.
            current = self.stack.describe()
            if current is not None:
                self.snapshots = [recorded.snapshot] if recorded.snapshot else []
                self.follower.follow(self.follower.resume(recorded, str(current["StackId"])))
                return self.finish(self.stack.describe(), "EXECUTE", where)
        try:
            with self.stack.errors("DescribeChangeSet"):
                change_set = self.stack.client.describe_change_set(StackName=self.stack.name, ChangeSetName=name)
        except ApplicationError as exc:
            if exc.type == "AwsNotFound" or "does not exist" in str(exc) or "ChangeSetNotFound" in str(exc):
                current = self.stack.describe()
                if current is not None and current["StackStatus"].endswith("_COMPLETE"):
                    # A CHANGE_SET_REPLACE that found no changes leaves no change set (moto refuses to make one).
                    self.lines.append(f"{where}: not found: nothing to execute")
                    return self.finish(current, "no changes", f"{where} (not found)")
                raise refused(
                    f"action '{self.action}': stack {self.stack.name} has no change set {name}: a CHANGE_SET_REPLACE "
                    "action earlier in the pipeline creates it",
                    "StackFailed",
                ) from None
            raise
        current = self.stack.describe()
        where = f"change set {name} of stack {self.stack.name}"
        if change_set["Status"] == "FAILED" and _no_changes(change_set.get("StatusReason")):
            return self.finish(current, "no changes", where)
        if change_set["Status"] != "CREATE_COMPLETE":
            raise refused(
                f"action '{self.action}': {where} is {change_set['Status']}: "
                f"{change_set.get('StatusReason') or 'it cannot be executed'}",
                "StackFailed",
            )
        if current is not None and current["StackStatus"] != "REVIEW_IN_PROGRESS":
            template = self.stack.template(change_set=name)
            parameters = {p["ParameterKey"]: p.get("ParameterValue", "") for p in change_set.get("Parameters", [])}
            if self.stack.unchanged(current, template, parameters):
                self.delete_change_set(name)
                return self.finish(current, "no changes", where)
            self.keep_current(current)
        else:
            self.keep(Snapshot(stack_name=self.stack.name, existed=False))

        def execute(token: str) -> str:
            with self.stack.errors("ExecuteChangeSet"):
                self.stack.client.execute_change_set(
                    StackName=self.stack.name, ChangeSetName=name, ClientRequestToken=token
                )
            return str(change_set["StackId"])

        self.follower.follow(self.follower.start("EXECUTE", execute))
        return self.finish(self.stack.describe(), "EXECUTE", where)

    # --- parts ------------------------------------------------------------------------------------------------

    def keep_current(self, current: dict[str, Any]) -> None:
        self.keep(
            Snapshot(
                stack_name=self.stack.name,
                existed=True,
                template=self.stack.template(),
                parameters=_parameters(current),
                capabilities=list(current.get("Capabilities", [])),
            )
        )

    def keep(self, snapshot: Snapshot) -> None:
        self.follower.snapshot = self.provider.keep_snapshot(self.input.context, snapshot)
        self.snapshots = [self.follower.snapshot]

    def change_set_available(self, name: str) -> bool:
        """The change set is there, waiting to be executed."""
        try:
            with self.stack.errors("DescribeChangeSet"):
                found = self.stack.client.describe_change_set(StackName=self.stack.name, ChangeSetName=name)
        except ApplicationError as exc:
            if exc.type == "AwsNotFound" or "does not exist" in str(exc) or "ChangeSetNotFound" in str(exc):
                return False
            raise
        return bool(found.get("ExecutionStatus") == "AVAILABLE")

    def change_set_exists(self, name: str) -> bool:
        """Asked before DeleteChangeSet: the stack's earlier change set of this name (a release's leftover)."""
        try:
            with self.stack.errors("DescribeChangeSet"):
                self.stack.client.describe_change_set(StackName=self.stack.name, ChangeSetName=name)
        except ApplicationError as exc:
            if exc.type == "AwsNotFound" or "does not exist" in str(exc) or "ChangeSetNotFound" in str(exc):
                return False
            raise
        return True

    def delete_change_set(self, name: str) -> None:
        with self.stack.errors("DeleteChangeSet"):
            self.stack.client.delete_change_set(StackName=self.stack.name, ChangeSetName=name)

    def wait_change_set(self, change_set_id: str) -> dict[str, Any]:
        while True:
            with self.stack.errors("DescribeChangeSet"):
                change_set: dict[str, Any] = self.stack.client.describe_change_set(ChangeSetName=change_set_id)
            if change_set["Status"] not in ("CREATE_PENDING", "CREATE_IN_PROGRESS"):
                break
            time.sleep(self.provider.settings.cloudformation_poll_seconds)
        if change_set["Status"] == "FAILED" and not _no_changes(change_set.get("StatusReason")):
            raise refused(
                f"action '{self.action}': change set {change_set['ChangeSetName']} of stack {self.stack.name} "
                f"FAILED: {change_set.get('StatusReason')}",
                "StackFailed",
            )
        return change_set

    def empty(
        self, change_set: dict[str, Any], current: dict[str, Any] | None, template: str, parameters: dict[str, str]
    ) -> bool:
        """No changes: CloudFormation says so, or (moto lists every resource as Add) the change set would leave the
        stack's template and parameters as they are."""
        if change_set["Status"] == "FAILED":
            return True
        if current is None or current["StackStatus"] == "REVIEW_IN_PROGRESS":
            return False
        return self.stack.unchanged(current, template, parameters)

    def finish(self, stack: dict[str, Any] | None, done: str, where: str | None = None) -> ActionOutcome:
        outputs = {o["OutputKey"]: o.get("OutputValue", "") for o in (stack or {}).get("Outputs", [])}
        artifacts = []
        if self.input.output_artifact and self.input.output_file_name:
            directory = self.workspace / "outputs"
            directory.mkdir(exist_ok=True)
            (directory / self.input.output_file_name).write_text(json.dumps(outputs, indent=2, sort_keys=True))
            try:
                target = store_for_outputs(self.provider.store, self.input.context.artifact_stores)
                artifacts.append(target.put(self.input.output_artifact, directory, [self.input.output_file_name]))
            except ArtifactError as exc:
                raise refused(f"output artifact '{self.input.output_artifact}': {exc}", "ArtifactError") from None
        what = {"CREATE": "created", "UPDATE": "updated", "EXECUTE": "executed", "no changes": "no changes"}[done]
        subject = where or f"stack {self.stack.name}"
        summary = f"{subject}: {what}" + (f" ({len(outputs)} outputs)" if outputs else "")
        return ActionOutcome(
            output_variables=outputs,
            output_artifacts=artifacts,
            summary=summary,
            compensation_artifacts=self.snapshots,
        )

    def template_and_parameters(self) -> tuple[str, dict[str, str]]:
        """The template's text and the parameters: ParameterOverrides over TemplateConfiguration (template defaults
        apply to the rest), as CodePipeline."""
        assert self.input.template is not None, "validation requires TemplatePath in this mode"
        template = self.read(self.input.template, "TemplatePath")
        parameters: dict[str, str] = {}
        if self.input.template_configuration is not None:
            configuration = self.json_file(self.input.template_configuration, "TemplateConfiguration")
            given = configuration.get("Parameters", {})
            if not isinstance(given, dict):
                raise refused(f"action '{self.action}': TemplateConfiguration: Parameters must be an object")
            parameters |= {str(k): str(v) for k, v in given.items()}
        if self.input.parameter_overrides:
            parameters |= self.overrides(self.input.parameter_overrides)
        return template, parameters

    def configuration_extras(self) -> dict[str, Any]:
        if self.input.template_configuration is None:
            return {}
        configuration = self.json_file(self.input.template_configuration, "TemplateConfiguration")
        extras: dict[str, Any] = {}
        if isinstance(configuration.get("Tags"), dict):
            extras["Tags"] = [{"Key": str(k), "Value": str(v)} for k, v in configuration["Tags"].items()]
        return extras

    def stack_policy(self) -> dict[str, str]:
        """The TemplateConfiguration's StackPolicy, as CreateStack's and UpdateStack's StackPolicyBody."""
        if self.input.template_configuration is None:
            return {}
        located = self.input.template_configuration
        policy = self.json_file(located, "TemplateConfiguration").get("StackPolicy")
        if policy is None:
            return {}
        if not isinstance(policy, dict) or not isinstance(policy.get("Statement"), list):
            raise refused(
                f"action '{self.action}': TemplateConfiguration: {located.artifact}::{located.path}: StackPolicy must "
                'be a stack policy object, like {"Statement": [{"Effect": "Allow", "Action": "Update:*", '
                '"Principal": "*", "Resource": "*"}]}'
            )
        return {"StackPolicyBody": json.dumps(policy)}

    def overrides(self, text: str) -> dict[str, str]:
        problem = parameter_overrides_problem(text)
        if problem:
            raise refused(f"action '{self.action}': ParameterOverrides {problem}")
        values: dict[str, str] = {}
        for name, value in json.loads(text).items():
            if isinstance(value, dict) and "Fn::GetParam" in value:
                artifact, path, key = value["Fn::GetParam"]
                document = self.json_file(ArtifactPath(artifact=artifact, path=path), f"ParameterOverrides.{name}")
                if key not in document:
                    raise refused(
                        f"action '{self.action}': ParameterOverrides.{name}: Fn::GetParam: {artifact}::{path} has no "
                        f"key '{key}'"
                    )
                values[name] = str(document[key])
            elif isinstance(value, dict):
                artifact, attribute = value["Fn::GetArtifactAtt"]
                values[name] = self.artifact_attribute(name, artifact, attribute)
            else:
                values[name] = value if isinstance(value, str) else json.dumps(value)
        return values

    def artifact_attribute(self, name: str, artifact: str, attribute: str) -> str:
        ref = self.artifact(artifact, f"ParameterOverrides.{name}")
        if not ref.location.startswith("s3://"):
            raise refused(
                f"action '{self.action}': ParameterOverrides.{name}: Fn::GetArtifactAtt needs the artifact in an S3 "
                f"store; '{artifact}' is in the worker's local store (configure CONVEYOR_ARTIFACT_STORE)"
            )
        bucket, _, key = ref.location.removeprefix("s3://").partition("/")
        attributes = {"BucketName": bucket, "ObjectKey": key, "URL": f"https://{bucket}.s3.amazonaws.com/{key}"}
        if attribute not in attributes:
            raise refused(
                f"action '{self.action}': ParameterOverrides.{name}: Fn::GetArtifactAtt attribute '{attribute}' is "
                "not BucketName, ObjectKey or URL"
            )
        return attributes[attribute]

    def artifact(self, name: str, key: str) -> ArtifactRef:
        ref = self.input.input_artifacts.get(name)
        if ref is None:
            raise refused(
                f"action '{self.action}': {key} names artifact '{name}', which is not an input artifact of the action "
                f"(inputs: {', '.join(self.input.input_artifacts) or 'none'})",
                "ArtifactError",
            )
        return ref

    def read(self, located: ArtifactPath, key: str) -> str:
        ref = self.artifact(located.artifact, key)
        root = self.workspace / "inputs" / located.artifact
        if not root.exists():
            try:
                self.provider.store.extract(ref, root)
            except ArtifactError as exc:
                raise refused(f"action '{self.action}': {key}: {exc}", "ArtifactError") from None
        path = (root / located.path).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            raise refused(
                f"action '{self.action}': {key}: artifact '{located.artifact}' has no file '{located.path}'",
                "ArtifactError",
            )
        return path.read_text()

    def json_file(self, located: ArtifactPath, key: str) -> dict[str, Any]:
        text = self.read(located, key)
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise refused(
                f"action '{self.action}': {key}: {located.artifact}::{located.path} is not JSON ({err.msg} at line "
                f"{err.lineno})"
            ) from None
        if not isinstance(document, dict):
            raise refused(f"action '{self.action}': {key}: {located.artifact}::{located.path} is not a JSON object")
        return document


def _same_template(have: str, want: str) -> bool:
    try:
        return bool(json.loads(have) == json.loads(want))
    except json.JSONDecodeError:
        return have.strip() == want.strip()


def _with_compensation_artifacts(exc: ApplicationError, refs: list[ArtifactRef]) -> ApplicationError:
    """The failure, carrying the stack's snapshot: a failed action (a create left in ROLLBACK_COMPLETE, an update
    half done) is compensated from it too."""
    detail = {COMPENSATION_ARTIFACTS_DETAIL: [ref.model_dump(mode="json", by_alias=True) for ref in refs]}
    return ApplicationError(
        exc.message, *exc.details, detail, type=exc.type, non_retryable=exc.non_retryable,
        next_retry_delay=exc.next_retry_delay,
    )  # fmt: skip


def _never(token: str) -> str:
    raise AssertionError("an operation found in the heartbeat is followed, never started again")


def _role(role_arn: str | None) -> dict[str, str]:
    return {"RoleARN": role_arn} if role_arn else {}


def _parameters(stack: dict[str, Any]) -> dict[str, str]:
    return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}


def _parameter_list(parameters: dict[str, str]) -> list[dict[str, str]]:
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())]


def _changes(change_set: dict[str, Any]) -> list[str]:
    """Each change as a reviewer reads it: Action LogicalResourceId (ResourceType)[, replacement]."""
    lines = []
    for change in change_set.get("Changes", []):
        detail = change.get("ResourceChange", {})
        replacement = detail.get("Replacement")
        lines.append(
            f"{detail.get('Action')} {detail.get('LogicalResourceId')} ({detail.get('ResourceType')})"
            + (f" replacement {replacement}" if replacement else "")
        )
    return lines


def _heartbeat_operation() -> Operation | None:
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        return Operation.model_validate(details[0])
    except ValidationError:
        return None


class _Heartbeat:
    """Beats well inside the heartbeat timeout; once an operation is started, every beat carries it."""

    def __init__(self, operation: Operation | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.cancelled = threading.Event()  # the activity was cancelled (an abandon): the thread stops following
        self.operation = operation
        self.details: list[dict[str, Any]] = (
            [operation.model_dump(mode="json", by_alias=True)] if operation is not None else []
        )

    def follow(self, operation: Operation) -> None:
        """Called from the activity's thread: the beat itself goes out on the event loop."""
        self.operation = operation
        self.details = [operation.model_dump(mode="json", by_alias=True)]
        self.loop.call_soon_threadsafe(lambda: activity.heartbeat(*self.details))

    def check_cancelled(self) -> None:
        if self.cancelled.is_set():
            raise ApplicationError("the action was cancelled while following the stack", type="Cancelled")

    async def forever(self) -> None:
        timeout = activity.info().heartbeat_timeout
        interval = (
            HEARTBEAT_SECONDS if timeout is None else max(0.1, min(HEARTBEAT_SECONDS, timeout.total_seconds() / 3))
        )
        while True:
            activity.heartbeat(*self.details)
            await asyncio.sleep(interval)


async def _until_done(work: Coroutine[Any, Any, _T], beat: _Heartbeat) -> _T:
    """The activity's thread to its end: on cancellation (an abandon) it is told to stop and awaited, so the
    activity ends only once nothing of it still runs."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        beat.cancelled.set()
        try:
            await task
        except BaseException:  # the cancellation is what ends the activity
            pass
        raise


def _log(context: ActionContext) -> Any:
    return structlog.get_logger().bind(
        pipeline=context.pipeline_name, execution=context.execution_id, stage=context.stage_name,
        action=context.action_name,
    )  # fmt: skip


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the CloudFormation contract (conveyor.providers.cloudformation)."""
    provider = CloudFormationProvider(settings, store)
    return [provider.cloudformation, provider.cloudformation_compensate]
