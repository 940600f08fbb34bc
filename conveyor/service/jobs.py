"""`conveyor serve`'s job listener: CodePipeline's PutJobSuccessResult and PutJobFailureResult for Lambda actions.

A function written for CodePipeline reports with boto3's `codepipeline` client; pointed here by
`AWS_ENDPOINT_URL_CODEPIPELINE`, it sends AWS JSON 1.1 (POST / with `X-Amz-Target: CodePipeline_20150709.<op>`).
The job id is the capability: a random id only the invoked function was given, single use. Requests are not
checked for a SigV4 signature (the function signs with its own credentials, which Conveyor does not know). A forged
id gets JobNotFoundException, an answered (or abandoned) one InvalidJobStateException, CodePipeline's errors. The
answer is written once to the job store (conveyor.stores.jobs), where the waiting activity reads it. Nothing here logs
or returns a job id.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.service.metrics import ServiceMetrics
from conveyor.stores.jobs import JobResult, JobResultKind, JobStore, JobStoreError, job_hash

log = structlog.get_logger("conveyor.service.jobs")
TARGET_PREFIX = "CodePipeline_20150709."
CONTENT_TYPE = "application/x-amz-json-1.1"
MAX_BODY = 256 * 1024
_CONFIG = ConfigDict(extra="ignore")


class ExecutionDetails(BaseModel):
    model_config = _CONFIG
    summary: str | None = Field(default=None, max_length=2048)
    externalExecutionId: str | None = Field(default=None, max_length=1500)  # noqa: N815 - the API's names
    percentComplete: int | None = Field(default=None, ge=0, le=100)  # noqa: N815


class PutJobSuccessResult(BaseModel):
    model_config = _CONFIG
    jobId: str = Field(min_length=1, max_length=512)  # noqa: N815
    currentRevision: dict[str, str] | None = None  # noqa: N815
    continuationToken: str | None = Field(default=None, min_length=1, max_length=2048)  # noqa: N815
    executionDetails: ExecutionDetails | None = None  # noqa: N815
    outputVariables: dict[str, str] = Field(default_factory=dict)  # noqa: N815


class FailureDetails(BaseModel):
    model_config = _CONFIG
    type: str
    message: str = Field(min_length=1, max_length=5000)
    externalExecutionId: str | None = Field(default=None, max_length=1500)  # noqa: N815


class PutJobFailureResult(BaseModel):
    model_config = _CONFIG
    jobId: str = Field(min_length=1, max_length=512)  # noqa: N815
    failureDetails: FailureDetails  # noqa: N815


FAILURE_TYPES = frozenset(
    {
        "JobFailed",
        "ConfigurationError",
        "PermissionError",
        "RevisionOutOfSync",
        "RevisionUnavailable",
        "SystemUnavailable",
    }
)


def _error(kind: str, message: str, status: int = 400) -> Response:
    """CodePipeline's error shape (botocore reads `__type`)."""
    body = json.dumps({"__type": kind, "message": message})
    return Response(body, status, media_type=CONTENT_TYPE, headers={"x-amzn-ErrorType": kind})


def _ok() -> Response:
    return Response("{}", 200, media_type=CONTENT_TYPE)


def success_result(request: PutJobSuccessResult) -> JobResult:
    details = request.executionDetails or ExecutionDetails()
    return JobResult(
        kind=JobResultKind.SUCCEEDED,
        continuation_token=request.continuationToken,
        summary=details.summary,
        external_execution_id=details.externalExecutionId,
        percent_complete=details.percentComplete,
        output_variables=request.outputVariables,
        current_revision=request.currentRevision,
    )


def failure_result(request: PutJobFailureResult) -> JobResult:
    details = request.failureDetails
    return JobResult(
        kind=JobResultKind.FAILED,
        failure_type=details.type,
        message=details.message,
        external_execution_id=details.externalExecutionId,
    )


def create_jobs_app(store: JobStore, metrics: ServiceMetrics | None = None) -> Starlette:
    """`metrics`: the service's, whose /metrics counts these calls."""

    async def answer(request: Request) -> Response:
        began = time.perf_counter()
        target = request.headers.get("x-amz-target", "")
        operation = target.removeprefix(TARGET_PREFIX)
        response = await _answer(request, operation)
        if metrics is not None:
            metrics.job_call(operation, response.status_code)
        # The operation and the status only: never the body, which holds the job id.
        log.info(
            "jobs.request",
            operation=operation or "-",
            status=response.status_code,
            duration_ms=round((time.perf_counter() - began) * 1000, 1),
        )
        return response

    async def _answer(request: Request, operation: str) -> Response:
        if operation not in ("PutJobSuccessResult", "PutJobFailureResult"):
            return _error(
                "UnknownOperationException",
                "this listener answers CodePipeline_20150709.PutJobSuccessResult and PutJobFailureResult only",
            )
        body = await request.body()
        if len(body) > MAX_BODY:
            return _error("ValidationException", f"the request is larger than {MAX_BODY} bytes")
        try:
            data: Any = json.loads(body or b"{}")
            if operation == "PutJobSuccessResult":
                success = PutJobSuccessResult.model_validate(data)
                job_id, result = success.jobId, success_result(success)
            else:
                failure = PutJobFailureResult.model_validate(data)
                if failure.failureDetails.type not in FAILURE_TYPES:
                    allowed = ", ".join(sorted(FAILURE_TYPES))
                    return _error("ValidationException", f"failureDetails.type must be one of {allowed}")
                job_id, result = failure.jobId, failure_result(failure)
        except ValueError as err:  # bad JSON, or a pydantic ValidationError (a ValueError)
            return _error("ValidationException", _validation_message(err))
        return await asyncio.to_thread(_record, store, job_id, result)

    async def health(_: Request) -> Response:
        return Response('{"status": "ok"}', media_type="application/json")

    return Starlette(routes=[Route("/", answer, methods=["POST"]), Route("/healthz", health, methods=["GET"])])


def _record(store: JobStore, job_id: str, result: JobResult) -> Response:
    hashed = job_hash(job_id)
    try:
        ticket = store.ticket(hashed)
        if ticket is None:
            return _error("JobNotFoundException", "the job was not found")
        if not store.put_result(hashed, result):
            return _error("InvalidJobStateException", "the job has been answered already or is no longer waiting")
    except JobStoreError:
        return _error("ServiceUnavailableException", "the job store could not be reached; try again", 503)
    log.info(
        "jobs.answered",
        pipeline=ticket.pipeline_name,
        execution=ticket.execution_id,
        stage=ticket.stage_name,
        action=ticket.action_name,
        result=result.kind.value,
        continued=result.continuation_token is not None,
    )
    return _ok()


def _validation_message(err: ValueError) -> str:
    if isinstance(err, ValidationError):
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "request"
        return f"{where}: {first['msg']}"
    return "the request body is not JSON"
