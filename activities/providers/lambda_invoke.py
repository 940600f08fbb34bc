"""The Lambda invoke provider's activities, and the LambdaInvoke condition rule's.

Job mode (CodePipeline's): a fresh job id (a random capability only the function is given) per invocation; its
ticket is written to the job store (conveyor.stores.jobs, keyed by the id's hash) before the function is invoked
asynchronously, then the activity polls for the answer `conveyor serve` writes there, heartbeating with the job's
hash. A retried activity of the same action attempt resumes waiting on that job (the heartbeat's hash, else the
attempt's record in the store): the function is never invoked twice for one attempt. A continuation token invokes it
again with a new job id. A stop or an abandon closes the job, so a late answer is refused.

Plain mode: one synchronous invoke; the answer is the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.running import write_action_log
from activities.aws.session import AwsSessions, aws_errors, refused
from conveyor.aws.identity import AwsIdentity
from conveyor.model import EXTERNAL_DETAIL, ActionContext, ActionOutcome, ArtifactRef, CamelModel
from conveyor.providers.lambda_invoke import (
    ACTIVITY,
    RULE_ACTIVITY,
    InvokeMode,
    LambdaInvokeInput,
    LambdaRuleAnswer,
    LambdaRuleInput,
)
from conveyor.settings import Settings
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, ConfiguredArtifactStore, store_for_outputs
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
from conveyor.stores.s3 import S3ArtifactStore, parse_object_url
from conveyor.text import shorten

if TYPE_CHECKING:
    from mypy_boto3_lambda import LambdaClient

# The job store is read for the function's answer first after FIRST_POLL_SECONDS, then ever less often (x POLL_BACKOFF)
# up to every POLL_SECONDS: a function that reports at once is seen within milliseconds, a long one costs no more reads
# (S3 GETs with an S3 store) than before. Measured by `python -m bench --scenarios invoke` (case lambda-job).
FIRST_POLL_SECONDS = 0.01
POLL_BACKOFF = 1.5
POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 1.0
FAILED_ANSWERS = frozenset({"failed", "failure", "error"})  # a rule's answer `{"status": ...}` that fails it


class JobHeartbeat(CamelModel):
    """What the activity's heartbeat carries: the job it waits on (its hash, never the id)."""

    job_hash: str
    invocation: int


class LambdaProvider:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)
        self._jobs: JobStore | None = None

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = job_store(self.settings)
        return self._jobs

    # --- the action -------------------------------------------------------------------------------------

    @activity.defn(name=ACTIVITY)
    async def lambda_invoke(self, input: LambdaInvokeInput) -> ActionOutcome:
        ctx = input.context
        log = structlog.get_logger().bind(
            pipeline=ctx.pipeline_name, execution=ctx.execution_id, stage=ctx.stage_name, action=ctx.action_name
        )
        beat = _Heartbeat()
        beating = asyncio.create_task(beat.forever())
        try:
            outputs = await asyncio.to_thread(self._outputs_store, input)
            client = await asyncio.to_thread(self._client, input.identity, ctx.action_name)
            account = await asyncio.to_thread(self._account, input.identity, ctx.action_name, input.function_name)
            event = _Event(input, account, _output_locations(input, outputs))
            if input.mode == InvokeMode.PLAIN:
                outcome = await asyncio.to_thread(self._plain, client, input, event)
            else:
                outcome = await self._job(client, input, event, beat)
            if input.output_artifacts:
                assert outputs is not None  # _outputs_store refused a local store
                outcome.output_artifacts = await asyncio.to_thread(self._collect, input, outputs)
        finally:
            beating.cancel()
        log.info("lambda.succeeded", function=input.function_name, mode=input.mode.value)
        return outcome

    def _plain(self, client: LambdaClient, input: LambdaInvokeInput, event: _Event) -> ActionOutcome:
        payload = event.payload(new_job_id(), None)  # an id CodePipeline's functions expect; no ticket: no PutJob
        answer, error = self._invoke(client, input.context.action_name, input.function_name, payload, sync=True)
        if error is not None:
            raise refused(
                f"action '{input.context.action_name}': function {input.function_name} failed: {error}",
                "LambdaFunctionError",
            )
        variables = answer_variables(answer)
        write_action_log(
            self.settings,
            input.context,
            [f"invoked {input.function_name} (plain): {len(answer)} bytes, {len(variables)} output variables"],
        )
        return ActionOutcome(output_variables=variables, summary=f"function {input.function_name} answered")

    async def _job(
        self, client: LambdaClient, input: LambdaInvokeInput, event: _Event, beat: _Heartbeat
    ) -> ActionOutcome:
        ctx = input.context
        attempt = attempt_hash(ctx.idempotency_key, ctx.action_attempt)
        current = _heartbeat_job() or await asyncio.to_thread(self.jobs.attempt, attempt)
        if current is None:
            current = await asyncio.to_thread(self._invoke_job, client, input, event, attempt, 1, None)
        else:
            await asyncio.to_thread(
                write_action_log, self.settings, ctx, [f"waiting on job #{current.invocation} (an earlier attempt's)"]
            )
        beat.follow(current)
        deadline = activity.info().scheduled_time + timedelta(seconds=input.timeout_seconds)
        waits = poll_intervals()
        try:
            while True:
                result = await asyncio.to_thread(self.jobs.result, current.job_hash)
                if result is None and datetime.now(UTC) >= deadline:
                    result = await asyncio.to_thread(self._close_timed_out, input, current)
                if result is None:
                    await asyncio.sleep(next(waits))
                    continue
                if result.kind == JobResultKind.SUCCEEDED and result.continuation_token:
                    token = result.continuation_token
                    invocation = current.invocation + 1
                    current = await asyncio.to_thread(
                        self._invoke_job, client, input, event, attempt, invocation, token
                    )
                    beat.follow(current)
                    waits = poll_intervals()  # a new job: its answer may come at once again
                    continue
                return self._job_outcome(input, result, current)
        except asyncio.CancelledError:
            # A stop or an abandon: close the job, so the function's late answer is refused.
            closing = JobResult(kind=JobResultKind.ABANDONED, message="the action stopped waiting")
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.to_thread(self.jobs.put_result, current.job_hash, closing))
            raise

    def _close_timed_out(self, input: LambdaInvokeInput, current: JobAttempt) -> JobResult:
        """The action's timeout passed with no answer: close the job (a late answer is refused) and fail the action;
        an answer that came in meanwhile stands."""
        ctx = input.context
        closing = JobResult(kind=JobResultKind.ABANDONED, message="the action timed out")
        if not self.jobs.put_result(current.job_hash, closing):
            answered = self.jobs.result(current.job_hash)
            assert answered is not None  # the create failed because the answer is there
            return answered
        limit = duration_text(input.timeout_seconds)
        write_action_log(self.settings, ctx, [f"job #{current.invocation} timed out after {limit}; closed"])
        raise refused(
            f"action '{ctx.action_name}': function {input.function_name} did not report within the action's timeout "
            f"({limit}): no PutJobSuccessResult or PutJobFailureResult for job #{current.invocation}; the job is "
            "closed (a later answer is refused). Raise the action's timeoutMinutes if the function needs longer",
            "LambdaJobTimedOut",
        )

    def _invoke_job(
        self,
        client: LambdaClient,
        input: LambdaInvokeInput,
        event: _Event,
        attempt: str,
        invocation: int,
        token: str | None,
    ) -> JobAttempt:
        """A new job: its ticket and the attempt's record first, then the asynchronous invoke. The id itself goes
        only into the event the function receives."""
        ctx = input.context
        job_id = new_job_id()
        current = JobAttempt(job_hash=job_hash(job_id), invocation=invocation)
        ticket = JobTicket(
            pipeline_name=ctx.pipeline_name,
            execution_id=ctx.execution_id,
            stage_name=ctx.stage_name,
            action_name=ctx.action_name,
            function_name=input.function_name,
            invocation=invocation,
        )
        self.jobs.put_ticket(current.job_hash, ticket)
        self.jobs.put_attempt(attempt, current)
        self._invoke(client, ctx.action_name, input.function_name, event.payload(job_id, token), sync=False)
        again = " with a continuation token" if token else ""
        write_action_log(self.settings, ctx, [f"invoked {input.function_name} (job #{invocation}{again})"])
        return current

    def _job_outcome(self, input: LambdaInvokeInput, result: JobResult, current: JobAttempt) -> ActionOutcome:
        ctx, function = input.context, input.function_name
        external = f" (external execution id {result.external_execution_id})" if result.external_execution_id else ""
        if result.kind == JobResultKind.SUCCEEDED:
            write_action_log(self.settings, ctx, [f"job #{current.invocation} succeeded{external}"])
            return ActionOutcome(
                output_variables=result.output_variables,
                summary=result.summary or f"function {function} succeeded",
                external_url=result.external_execution_id,  # kept as CodePipeline keeps it; `status` shows it
            )
        message = result.message or "no message"
        write_action_log(self.settings, ctx, [f"job #{current.invocation} {result.kind.value.lower()}{external}"])
        if result.kind == JobResultKind.ABANDONED:
            raise refused(f"action '{ctx.action_name}': the job was closed: {message}", "LambdaJobAbandoned")
        kind = f" ({result.failure_type})" if result.failure_type else ""
        details = [{EXTERNAL_DETAIL: result.external_execution_id}] if result.external_execution_id else []
        raise ApplicationError(
            f"action '{ctx.action_name}': function {function} failed the job{kind}: {message}",
            *details,  # the stage keeps it on the action's state
            type="LambdaJobFailed",
            non_retryable=True,
        )

    # --- the rule -------------------------------------------------------------------------------------

    @activity.defn(name=RULE_ACTIVITY)
    async def lambda_invoke_rule(self, input: LambdaRuleInput) -> LambdaRuleAnswer:
        return await asyncio.to_thread(self._rule, input)

    def _rule(self, input: LambdaRuleInput) -> LambdaRuleAnswer:
        ctx = input.context
        client = self._client(input.identity, ctx.action_name)
        account = self._account(input.identity, ctx.action_name, input.function_name)
        configuration = {"FunctionName": input.function_name}
        if input.user_parameters is not None:
            configuration["UserParameters"] = input.user_parameters
        payload = {"CodePipeline.job": {"id": new_job_id(), "accountId": account, "data": {
            "actionConfiguration": {"configuration": configuration}}}}  # fmt: skip
        answer, error = self._invoke(client, ctx.action_name, input.function_name, payload, sync=True)
        if error is not None:
            return LambdaRuleAnswer(passed=False, summary=f"function {input.function_name} failed: {error}")
        return rule_answer(input.function_name, answer)

    # --- AWS --------------------------------------------------------------------------------------------

    def _client(self, identity: AwsIdentity, action: str) -> LambdaClient:
        return self.sessions.client(identity, "lambda", action)

    def _account(self, identity: AwsIdentity, action: str, function: str) -> str:
        """The event's accountId: the function ARN's, else the caller's (STS)."""
        parts = function.split(":")
        if function.startswith("arn:") and len(parts) > 4 and parts[4]:
            return parts[4]
        return self.sessions.account(identity, action)  # the role's, else the worker's (STS, once per identity)

    def _invoke(
        self, client: LambdaClient, action: str, function: str, payload: dict[str, Any], *, sync: bool
    ) -> tuple[str, str | None]:
        """(the answer's text, the function error's message or None)."""
        call = "lambda:InvokeFunction"
        with aws_errors(action, call, None, target=function):
            response = client.invoke(
                FunctionName=function,
                InvocationType="RequestResponse" if sync else "Event",
                Payload=json.dumps(payload).encode(),
            )
            text = response["Payload"].read().decode("utf-8", "replace") if "Payload" in response else ""
        if response.get("FunctionError"):
            return text, function_error_message(text)
        return text, None

    # --- artifacts --------------------------------------------------------------------------------------

    def _outputs_store(self, input: LambdaInvokeInput) -> S3ArtifactStore | None:
        """The S3 store the function uploads output artifacts to; None when the store is local (refused when the
        action declares outputs: a function cannot write into a worker's disk)."""
        try:
            store = store_for_outputs(self.store, input.context.artifact_stores)
        except ArtifactError as exc:
            raise refused(f"action '{input.context.action_name}': {exc}", "ArtifactError") from None
        if isinstance(store, ConfiguredArtifactStore):
            store = store.default
        if isinstance(store, S3ArtifactStore):
            return store
        if input.output_artifacts:
            raise refused(
                f"action '{input.context.action_name}': a Lambda action's output artifacts are uploaded by the "
                "function to S3, but this worker's artifact store is local: set CONVEYOR_ARTIFACT_STORE="
                "s3://<bucket>/<prefix> (or declare the pipeline's artifactStore with CONVEYOR_AWS=true), or "
                "remove outputArtifacts"
            )
        return None

    def _collect(self, input: LambdaInvokeInput, outputs: S3ArtifactStore) -> list[ArtifactRef]:
        """Each output the function uploaded, re-stored content-addressed so later actions read it as any other."""
        refs: list[ArtifactRef] = []
        tmp_dir = self.settings.data_dir / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=tmp_dir) as tmp:
            for name in input.output_artifacts:
                bucket, key = _output_location(input.context, outputs, name)
                archive = Path(tmp) / f"{len(refs)}.zip"
                try:
                    outputs.client.download_file(bucket, key, str(archive))
                except Exception:  # noqa: BLE001 - missing or unreadable: the function did not upload it
                    raise refused(
                        f"action '{input.context.action_name}': the function succeeded but uploaded no output "
                        f"artifact '{name}' to s3://{bucket}/{key} (the event's outputArtifacts location)",
                        "ArtifactError",
                    ) from None
                try:
                    refs.append(outputs.put_archive(name, archive))
                except ArtifactError as exc:
                    raise refused(f"output artifact '{name}': {exc}", "ArtifactError") from None
        return refs


# --- the event ---------------------------------------------------------------------------------------------


class _Event:
    """CodePipeline's `CodePipeline.job` event, but for the job id and continuation token."""

    def __init__(self, input: LambdaInvokeInput, account: str, outputs: list[dict[str, Any]]) -> None:
        configuration = {"FunctionName": input.function_name}
        if input.user_parameters is not None:
            configuration["UserParameters"] = input.user_parameters
        self.account = account
        self.data: dict[str, Any] = {
            "actionConfiguration": {"configuration": configuration},
            "inputArtifacts": [_input_artifact(ref) for ref in input.input_artifacts],
            "outputArtifacts": outputs,
            # Never real credentials: the function reads and writes artifacts with its own execution role.
            "artifactCredentials": {"accessKeyId": "", "secretAccessKey": "", "sessionToken": ""},
        }

    def payload(self, job_id: str, continuation_token: str | None) -> dict[str, Any]:
        data = dict(self.data)
        if continuation_token is not None:
            data["continuationToken"] = continuation_token
        return {"CodePipeline.job": {"id": job_id, "accountId": self.account, "data": data}}


def _input_artifact(ref: ArtifactRef) -> dict[str, Any]:
    parsed = parse_object_url(ref.location)
    if parsed is None:  # the local store: no S3 location; the worker's file for a function on the same host
        location: dict[str, Any] = {"type": "Local", "url": ref.location}
    else:
        location = {"type": "S3", "s3Location": {"bucketName": parsed[0], "objectKey": parsed[1]}}
    return {"name": ref.name, "revision": ref.digest, "location": location}


def _output_location(context: ActionContext, store: S3ArtifactStore, name: str) -> tuple[str, str]:
    attempt = attempt_hash(context.idempotency_key, context.action_attempt)
    return store.location.bucket, store.key(f"jobs/outputs/{attempt}/{name}.zip")


def _output_locations(input: LambdaInvokeInput, store: S3ArtifactStore | None) -> list[dict[str, Any]]:
    if store is None:
        return []
    located = []
    for name in input.output_artifacts:
        bucket, key = _output_location(input.context, store, name)
        located.append(
            {
                "name": name,
                "revision": None,
                "location": {"type": "S3", "s3Location": {"bucketName": bucket, "objectKey": key}},
            }
        )
    return located


def poll_intervals() -> Iterator[float]:
    """The waits between reads of the job store: FIRST_POLL_SECONDS, growing by POLL_BACKOFF up to POLL_SECONDS."""
    wait = FIRST_POLL_SECONDS
    while True:
        yield wait
        wait = min(POLL_SECONDS, wait * POLL_BACKOFF)


# --- answers -----------------------------------------------------------------------------------------------


def function_error_message(text: str) -> str:
    """A function error's `errorMessage` (and type), else its payload, shortened."""
    try:
        body = json.loads(text)
    except ValueError:
        return shorten(text or "no message", 500)
    if isinstance(body, dict) and body.get("errorMessage"):
        kind = f"{body['errorType']}: " if body.get("errorType") else ""
        return shorten(f"{kind}{body['errorMessage']}", 500)
    return shorten(text, 500)


def duration_text(seconds: float) -> str:
    """`1 minute`, `90 minutes`, `2.5 seconds`: a timeout as a person reads it."""
    if seconds >= 60 and seconds % 60 == 0:
        minutes = int(seconds // 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"


def answer_variables(text: str) -> dict[str, str]:
    """Plain mode: a JSON object's scalar values (strings as they are, numbers and booleans in JSON form) become
    output variables; nested values and any other answer give none."""
    try:
        body = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(body, dict):
        return {}
    variables: dict[str, str] = {}
    for key, value in body.items():
        if isinstance(value, str):
            variables[str(key)] = value
        elif isinstance(value, bool | int | float):
            variables[str(key)] = json.dumps(value)
    return variables


def rule_answer(function: str, text: str) -> LambdaRuleAnswer:
    """The rule's verdict: fails on JSON `false` or an object whose `status` is FAILED (its `message` the summary);
    any other answer passes."""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = text
    if body is False:
        return LambdaRuleAnswer(passed=False, summary=f"function {function} answered false")
    if isinstance(body, dict) and str(body.get("status", "")).lower() in FAILED_ANSWERS:
        message = body.get("message") or "no message"
        return LambdaRuleAnswer(
            passed=False, summary=f"function {function} failed the rule: {shorten(str(message), 300)}"
        )
    if isinstance(body, dict) and body.get("message"):
        return LambdaRuleAnswer(passed=True, summary=f"function {function}: {shorten(str(body['message']), 300)}")
    return LambdaRuleAnswer(passed=True, summary=f"function {function} passed the rule")


# --- heartbeats --------------------------------------------------------------------------------------------


def _heartbeat_job() -> JobAttempt | None:
    """The job an earlier activity of this attempt heartbeated."""
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        found = JobHeartbeat.model_validate(details[0])
    except ValidationError:
        return None
    return JobAttempt(job_hash=found.job_hash, invocation=found.invocation)


class _Heartbeat:
    def __init__(self) -> None:
        self.details: list[dict[str, Any]] = []

    def follow(self, current: JobAttempt) -> None:
        beat = JobHeartbeat(job_hash=current.job_hash, invocation=current.invocation)
        self.details = [beat.model_dump(mode="json", by_alias=True)]
        activity.heartbeat(*self.details)

    async def forever(self) -> None:
        timeout = activity.info().heartbeat_timeout
        interval = (
            HEARTBEAT_SECONDS if timeout is None else max(0.1, min(HEARTBEAT_SECONDS, timeout.total_seconds() / 3))
        )
        while True:
            activity.heartbeat(*self.details)
            await asyncio.sleep(interval)


def activities(settings: Settings, store: ArtifactStore) -> list[Callable[..., Any]]:
    """What the worker registers for the Lambda contract (conveyor.providers.lambda_invoke), and the LambdaInvoke
    condition rule's activity (conveyor.providers.rules), which invokes the same way."""
    provider = LambdaProvider(settings, store)
    return [provider.lambda_invoke, provider.lambda_invoke_rule]
