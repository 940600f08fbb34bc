"""The Lambda invoke provider, `conveyor serve`'s job listener and the LambdaInvoke rule, against moto's simple
Lambda backend (no Docker: it answers with queued results and never runs a function).

Plain mode and the rule run on moto's queued answers. What moto cannot do is scripted in tests/aws_contract.py
(LambdaScript: the record of what each invoke was sent, function errors), so the tests using it are contract tests;
in the job-mode tests the test plays the function: it reads the job id from the event the engine sent and reports
with boto3's `codepipeline` client pointed at the job listener (the app `conveyor serve` runs, on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import time
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
from botocore.exceptions import ClientError, EndpointConnectionError
from rich.console import Console
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.providers.lambda_invoke import LambdaProvider
from conveyor.aws.identity import AwsIdentity
from conveyor.cli.render import execution_table
from conveyor.client import ConveyorClient
from conveyor.devserver import EmbeddedServer, free_port
from conveyor.interface import Activity, stage_workflow_id
from conveyor.model import ActionContext, ExecutionState, ExecutionStatus
from conveyor.providers.lambda_invoke import LambdaInvokeInput
from conveyor.service.jobs import create_jobs_app
from conveyor.settings import S3Location, Settings
from conveyor.spec import validate_pipeline
from conveyor.stores.artifacts import LocalArtifactStore
from conveyor.stores.jobs import (
    JobAttempt,
    JobResult,
    JobResultKind,
    JobTicket,
    attempt_hash,
    job_hash,
    job_store,
    new_job_id,
)
from conveyor.worker import build_worker
from tests.aws import ACCOUNT, CREDENTIALS, REGION, Aws
from tests.aws_contract import LambdaInvocation, LambdaScript
from tests.helpers import pipeline, serving
from tests.test_cli import cli_env, spawn

FUNCTION = "deployer"

DECLARATION = """
name: lambda
conveyor:
  heartbeatTimeoutSeconds: 3
stages:
  - name: Source
    actions:
      - name: Checkout
        provider: Commands
        commands: ["echo app > app.txt"]
        outputArtifacts: [{{name: Src, files: [app.txt]}}]
  - name: Invoke
    actions:
      - name: Deploy
        provider: Lambda
        namespace: Fn
        configuration:
          FunctionName: {function}
          UserParameters: '{{"env": "prod"}}'
{mode}
        inputArtifacts: [{{name: Src}}]
  - name: Use
    actions:
      - name: Check
        provider: Commands
        commands: ["test '#{{Fn.Version}}' = v7"]
"""


def declaration(mode: str | None = None) -> dict[str, Any]:
    line = f"          ConveyorMode: {mode}" if mode else ""
    return pipeline(DECLARATION.format(function=FUNCTION, mode=line))


@pytest.fixture
def functions(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> LambdaScript:
    """moto's simple Lambda backend (chosen before the function is created), the function, the invoke record."""
    aws.post("/moto-api/config", json.dumps({"lambda": {"use_docker": False}}).encode())
    role = aws.client("iam").create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    aws.client("lambda").create_function(
        FunctionName=FUNCTION, Runtime="python3.12", Role=role, Handler="index.handler", Code={"ZipFile": b"x"}
    )
    return LambdaScript().install(monkeypatch)


def queue_answers(aws: Aws, *answers: Any) -> None:
    """What moto's simple backend answers the next invokes (in order)."""
    body = {"results": [json.dumps(a) for a in answers], "region": REGION, "account_id": ACCOUNT}
    aws.post("/moto-api/static/lambda-simple/response", json.dumps(body).encode())


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path / "data"})


@pytest_asyncio.fixture
async def client(temporal_client: Client, worker_settings: Settings) -> AsyncIterator[ConveyorClient]:
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


@contextlib.asynccontextmanager
async def serving_jobs(settings: Settings) -> AsyncIterator[str]:
    """serve's job listener app on loopback, on the job store these settings name."""
    async with serving(create_jobs_app(job_store(settings)), lifespan="off") as url:
        yield url


@pytest_asyncio.fixture
async def listener(worker_settings: Settings) -> AsyncIterator[str]:
    """serve's job listener app on loopback, on the worker's store."""
    async with serving_jobs(worker_settings) as endpoint:
        yield endpoint


def codepipeline(endpoint: str) -> Any:
    """The function's client: boto3's, as a function with AWS_ENDPOINT_URL_CODEPIPELINE set would make it."""
    return boto3.client(
        "codepipeline",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def action(state: ExecutionState, stage: str = "Invoke") -> Any:
    found = state.stage(stage)
    assert found is not None
    return found.actions[0]


def activity_environment() -> ActivityEnvironment:
    """An activity run outside a worker, scheduled now (the action's timeout counts from its first schedule)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, scheduled_time=datetime.now(UTC))
    return env


def shown(state: ExecutionState) -> str:
    """What `conveyor status` prints for the execution."""
    out = io.StringIO()
    Console(file=out, width=2000, color_system=None).print(execution_table(state))
    return out.getvalue()


async def invocation(functions: LambdaScript, count: int) -> LambdaInvocation:
    return await asyncio.to_thread(functions.wait_for, count)


# --- plain mode ------------------------------------------------------------------------------------------------


async def test_plain_mode_answer_becomes_output_variables_read_by_a_later_action(
    client: ConveyorClient, aws: Aws, functions: LambdaScript
) -> None:
    queue_answers(aws, {"Version": "v7", "count": 3, "ok": True, "nested": {"no": "x"}})
    ref, _ = await client.start(declaration("plain"))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert action(state).output_variables == {"Version": "v7", "count": "3", "ok": "true"}
    # What the engine sent (the invoke record): a synchronous invoke of CodePipeline's event.
    (sent,) = functions.invocations
    assert (sent.function, sent.invocation_type) == (FUNCTION, "RequestResponse")
    job = sent.job
    assert job["accountId"] == ACCOUNT and len(job["id"]) >= 40
    assert job["data"]["actionConfiguration"]["configuration"] == {
        "FunctionName": FUNCTION,
        "UserParameters": '{"env": "prod"}',
    }
    (src,) = job["data"]["inputArtifacts"]
    source = action(state, "Source")
    assert src["name"] == "Src" and src["revision"] == source.output_artifacts[0].digest
    assert src["location"] == {"type": "Local", "url": source.output_artifacts[0].location}  # a local store
    assert job["data"]["artifactCredentials"] == {"accessKeyId": "", "secretAccessKey": "", "sessionToken": ""}


async def test_a_function_error_fails_the_action_with_its_message(
    client: ConveyorClient, functions: LambdaScript
) -> None:
    """Contract test: moto cannot answer with a FunctionError; the script does."""
    functions.errors.append({"errorMessage": "table orders is locked", "errorType": "RuntimeError"})
    ref, _ = await client.start(declaration("plain"))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    error = action(state).error
    assert error is not None
    assert f"function {FUNCTION} failed: RuntimeError: table orders is locked" in error.message
    assert len(functions.invocations) == 1  # not retried


# --- job mode: the test plays the function ---------------------------------------------------------------------


async def test_job_mode_continuation_then_success_and_forged_or_reused_ids_refused(
    client: ConveyorClient,
    functions: LambdaScript,
    listener: str,
    temporal_client: Client,
    worker_settings: Settings,
) -> None:
    """Contract test: the engine invokes asynchronously; PutJobSuccessResult with a continuation token invokes the
    function again with a new job id and the token; a reused id and a forged one are refused with CodePipeline's
    errors; the final success's output variables and summary reach the action and a later one; the job ids appear
    nowhere in history, memo or status."""
    ref, _ = await client.start(declaration())
    first = await invocation(functions, 1)
    assert first.invocation_type == "Event"
    assert "continuationToken" not in first.job["data"]
    pipe = codepipeline(listener)
    first_id = first.job["id"]
    await asyncio.to_thread(pipe.put_job_success_result, jobId=first_id, continuationToken="page-2")

    second = await invocation(functions, 2)
    assert second.invocation_type == "Event" and second.job["data"]["continuationToken"] == "page-2"
    second_id = second.job["id"]
    assert second_id != first_id
    with pytest.raises(ClientError) as reused:
        await asyncio.to_thread(pipe.put_job_success_result, jobId=first_id)
    assert reused.value.response["Error"]["Code"] == "InvalidJobStateException"
    with pytest.raises(ClientError) as forged:
        await asyncio.to_thread(pipe.put_job_success_result, jobId=second_id[:-2] + "xx")
    assert forged.value.response["Error"]["Code"] == "JobNotFoundException"
    await asyncio.to_thread(
        pipe.put_job_success_result,
        jobId=second_id,
        executionDetails={"summary": "deployed v7", "externalExecutionId": "run-42"},
        outputVariables={"Version": "v7"},
    )
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    deployed = action(state)
    assert deployed.output_variables == {"Version": "v7"} and deployed.summary == "deployed v7"
    assert deployed.external_url == "run-42"  # externalExecutionId, kept on the state as CodePipeline keeps it
    assert "external execution id: run-42" in shown(state)  # and `conveyor status` shows it
    assert len(functions.invocations) == 2
    with pytest.raises(ClientError) as again:  # the last answer used the id up too
        await asyncio.to_thread(pipe.put_job_failure_result, jobId=second_id, failureDetails={
            "type": "JobFailed", "message": "late"})  # fmt: skip
    assert again.value.response["Error"]["Code"] == "InvalidJobStateException"

    records = [json.dumps(state.model_dump(mode="json"))]
    for workflow_id in (
        ref.workflow_id,
        *(stage_workflow_id(ref.pipeline_name, ref.execution_id, s) for s in ("Invoke",)),
    ):
        handle = temporal_client.get_workflow_handle(workflow_id)
        records.append((await handle.fetch_history()).to_json())
        description = await handle.describe()
        records.append(json.dumps(await description.memo(), default=str))
    records += [p.read_text() for p in (worker_settings.logs_dir).rglob("*.log")]
    records += [p.read_text(errors="replace") for p in worker_settings.artifacts_dir.joinpath("jobs").rglob("*")
                if p.is_file()]  # fmt: skip
    assert any("Version" in record for record in records)  # the records were read
    for job_id in (first_id, second_id):
        assert not any(job_id in record for record in records)


async def test_job_failure_result_fails_the_action_with_its_message(
    client: ConveyorClient, functions: LambdaScript, listener: str
) -> None:
    """Contract test: PutJobFailureResult's failureDetails fail the action with its message."""
    ref, _ = await client.start(declaration("job"))
    sent = await invocation(functions, 1)
    await asyncio.to_thread(
        codepipeline(listener).put_job_failure_result,
        jobId=sent.job["id"],
        failureDetails={
            "type": "JobFailed",
            "message": "health check failed on 2 of 3 hosts",
            "externalExecutionId": "https://deploys.example.com/runs/9",
        },
    )
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    error = action(state).error
    assert error is not None
    assert f"function {FUNCTION} failed the job (JobFailed): health check failed on 2 of 3 hosts" in error.message
    assert action(state).external_url == "https://deploys.example.com/runs/9"  # a failure's too
    assert "link: https://deploys.example.com/runs/9" in shown(state)


async def test_the_listener_refuses_other_operations_and_bad_requests(listener: str) -> None:
    pipe = codepipeline(listener)
    with pytest.raises(ClientError) as other:
        await asyncio.to_thread(pipe.list_pipelines)
    assert other.value.response["Error"]["Code"] == "UnknownOperationException"
    with pytest.raises(ClientError) as bad:
        await asyncio.to_thread(
            pipe.put_job_failure_result, jobId="x", failureDetails={"type": "Whatever", "message": "m"}
        )
    assert bad.value.response["Error"]["Code"] == "ValidationException"


# --- the LambdaInvoke rule -------------------------------------------------------------------------------------

RULE_DECLARATION = """
name: lambda-rule
stages:
  - name: Source
    actions:
      - {name: Checkout, provider: Commands, commands: ["true"]}
  - name: Prod
    beforeEntry:
      conditions:
        - result: FAIL
          rules:
            - name: Healthy
              ruleTypeId: {category: Rule, owner: AWS, provider: LambdaInvoke, version: "1"}
              configuration: {FunctionName: checker, UserParameters: orders}
    actions:
      - {name: Ship, provider: Commands, commands: ["true"]}
"""


async def test_lambda_invoke_rule_passes_and_fails_a_stage_condition(
    client: ConveyorClient, aws: Aws, functions: LambdaScript
) -> None:
    queue_answers(aws, {"status": "FAILED", "message": "error rate 7%"}, {"status": "SUCCEEDED"})
    failing, _ = await client.start(pipeline(RULE_DECLARATION))
    state = await asyncio.wait_for(client.wait(failing), 60)
    assert state.status == ExecutionStatus.FAILED
    prod = state.stage("Prod")
    assert prod is not None
    (condition,) = prod.conditions
    assert condition.rules[0].summary == "function checker failed the rule: error rate 7%"
    assert functions.invocations[0].job["data"]["actionConfiguration"]["configuration"] == {
        "FunctionName": "checker",
        "UserParameters": "orders",
    }
    passing, _ = await client.start(pipeline(RULE_DECLARATION))
    state = await asyncio.wait_for(client.wait(passing), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary


# --- validation --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configuration", "message"),
    [
        ({}, "provider 'Lambda' needs configuration key 'FunctionName'"),
        ({"FunctionName": "f", "ConveyorMode": "async"}, "'async' is not a mode; use job"),
        ({"FunctionName": "my function"}, "'my function' has spaces"),
        ({"FunctionName": "f", "Function": "g"}, "'Function' is not a configuration key"),
    ],
)
def test_bad_lambda_configuration_is_named(configuration: dict[str, str], message: str) -> None:
    declared = declaration()
    declared["stages"][1]["actions"][0]["configuration"] = configuration
    report = validate_pipeline(declared)
    assert [e for e in report.errors if message in e.render("p")], [e.render("p") for e in report.errors]


def test_a_lambda_rule_without_function_name_is_named() -> None:
    declared = pipeline(RULE_DECLARATION)
    declared["stages"][1]["beforeEntry"]["conditions"][0]["rules"][0]["configuration"] = {"UserParameters": "x"}
    report = validate_pipeline(declared)
    rendered = [e.render("p") for e in report.errors]
    assert any("FunctionName" in r for r in rendered), rendered


def test_a_valid_declaration_passes() -> None:
    assert validate_pipeline(declaration()).ok
    assert validate_pipeline(pipeline(RULE_DECLARATION)).ok


async def test_a_retried_activity_resumes_waiting_on_its_attempts_job_without_invoking_again(
    aws: Aws, functions: LambdaScript, worker_settings: Settings
) -> None:
    """Contract test: an earlier worker of this attempt wrote the ticket and invoked, then died before its heartbeat
    reached Temporal; the new activity finds the attempt's job in the store, waits on it and takes its answer."""
    context = ActionContext(pipeline_name="p", execution_id="e-1", stage_name="Invoke", action_name="Deploy")
    jobs = job_store(worker_settings)
    earlier = job_hash(new_job_id())
    ticket = JobTicket(pipeline_name="p", execution_id="e-1", stage_name="Invoke", action_name="Deploy",
                       function_name=FUNCTION)  # fmt: skip
    jobs.put_ticket(earlier, ticket)
    jobs.put_attempt(attempt_hash(context.idempotency_key, 1), JobAttempt(job_hash=earlier, invocation=1))
    provider = LambdaProvider(worker_settings, LocalArtifactStore(worker_settings.artifacts_dir))
    request = LambdaInvokeInput(
        context=context, identity=AwsIdentity(session_name="conveyor-p-e-1"), function_name=FUNCTION
    )
    running = asyncio.create_task(activity_environment().run(provider.lambda_invoke, request))
    await asyncio.sleep(1)
    assert not running.done()
    assert jobs.put_result(
        earlier, JobResult(kind=JobResultKind.SUCCEEDED, summary="done", output_variables={"A": "1"})
    )
    outcome = await asyncio.wait_for(running, 10)
    assert outcome.summary == "done" and outcome.output_variables == {"A": "1"}
    assert functions.invocations == []  # never invoked again for this attempt


async def test_conveyor_serve_runs_the_job_listener_on_its_own_port(
    server: EmbeddedServer, worker_settings: Settings, aws: Aws
) -> None:
    """`conveyor serve --jobs-port`: a real process; the listener answers boto3's codepipeline client on its port
    (here refusing a forged id), beside the service's own port."""
    port, jobs_port = free_port(), free_port()
    env = cli_env(worker_settings.data_dir, server.address)
    process = await spawn("serve", "--port", str(port), "--jobs-port", str(jobs_port), env=env)
    try:
        pipe = codepipeline(f"http://127.0.0.1:{jobs_port}")
        for _ in range(200):
            try:
                await asyncio.to_thread(pipe.put_job_success_result, jobId="forged")
            except ClientError as err:
                assert err.response["Error"]["Code"] == "JobNotFoundException"
                break
            except EndpointConnectionError:
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the job listener never answered")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)


# --- job mode on the S3 store: output artifacts -----------------------------------------------------------------

BUCKET = "conveyor-jobs"

S3_DECLARATION = """
name: lambda-s3
conveyor:
  heartbeatTimeoutSeconds: 3
stages:
  - name: Source
    actions:
      - name: Checkout
        provider: Commands
        commands: ["echo app > app.txt"]
        outputArtifacts: [{{name: Src, files: [app.txt]}}]
  - name: Invoke
    actions:
      - name: Deploy
        provider: Lambda
        namespace: Fn
        configuration: {{FunctionName: {function}}}
        inputArtifacts: [{{name: Src}}]
        outputArtifacts: [{{name: Built}}]
  - name: Use
    actions:
      - name: Check
        provider: Commands
        inputArtifacts: [{{name: Built}}]
        commands: ["test \\"$(cat out/built.txt)\\" = 'built by the function'", "test '#{{Fn.Version}}' = v8"]
"""


def zipped(files: dict[str, str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return out.getvalue()


@pytest.fixture
def s3_settings(aws: Aws, worker_settings: Settings) -> Settings:
    """CONVEYOR_ARTIFACT_STORE=s3://conveyor-jobs/ci on moto: artifacts and job documents in S3."""
    aws.client("s3").create_bucket(Bucket=BUCKET)
    return worker_settings.model_copy(update={"artifact_store": S3Location(bucket=BUCKET, prefix="ci")})


async def test_job_mode_on_the_s3_store_output_artifact_read_by_a_later_action_and_a_reused_id_refused(
    aws: Aws, functions: LambdaScript, s3_settings: Settings, temporal_client: Client
) -> None:
    """Contract test: worker and job listener on the same S3 store (moto). The function (the test) reads its input
    artifact from the event's s3Location, uploads its output zip where the event says, and reports; the next
    action reads the output's files. The job documents are in S3, and a reused job id is refused: the result is a
    conditional create (PutObject IfNoneMatch='*', which moto honours: the first answer stands)."""
    s3 = aws.client("s3")
    async with build_worker(temporal_client, s3_settings), serving_jobs(s3_settings) as endpoint:
        client = ConveyorClient(temporal_client, s3_settings)
        ref, _ = await client.start(pipeline(S3_DECLARATION.format(function=FUNCTION)))
        sent = (await invocation(functions, 1)).job
        (src,) = sent["data"]["inputArtifacts"]
        where = src["location"]["s3Location"]
        assert src["location"]["type"] == "S3" and where["bucketName"] == BUCKET
        body = s3.get_object(Bucket=where["bucketName"], Key=where["objectKey"])["Body"].read()
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            assert archive.read("app.txt") == b"app\n"
        (out,) = sent["data"]["outputArtifacts"]
        assert out["name"] == "Built" and out["location"]["type"] == "S3"
        target = out["location"]["s3Location"]
        assert target["bucketName"] == BUCKET and target["objectKey"].startswith("ci/jobs/outputs/")
        s3.put_object(
            Bucket=target["bucketName"],
            Key=target["objectKey"],
            Body=zipped({"out/built.txt": "built by the function"}),
        )
        pipe = codepipeline(endpoint)
        await asyncio.to_thread(pipe.put_job_success_result, jobId=sent["id"], outputVariables={"Version": "v8"})
        with pytest.raises(ClientError) as reused:
            await asyncio.to_thread(pipe.put_job_failure_result, jobId=sent["id"], failureDetails={
                "type": "JobFailed", "message": "second answer"})  # fmt: skip
        assert reused.value.response["Error"]["Code"] == "InvalidJobStateException"
        state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (built,) = action(state).output_artifacts
    assert built.name == "Built" and built.location.startswith(f"s3://{BUCKET}/ci/artifacts/sha256/")
    # The job's documents are in the S3 store (none on the worker's disk), the first answer kept.
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="ci/jobs/")["Contents"]]
    assert {k.split("/")[2] for k in keys} == {"tickets", "results", "attempts", "outputs"}
    (result_key,) = [k for k in keys if k.startswith("ci/jobs/results/")]
    stored = JobResult.model_validate_json(s3.get_object(Bucket=BUCKET, Key=result_key)["Body"].read())
    assert stored.kind == JobResultKind.SUCCEEDED and stored.output_variables == {"Version": "v8"}
    assert not s3_settings.artifacts_dir.joinpath("jobs").exists()
    assert sent["id"] not in json.dumps(keys)


def test_the_s3_job_store_keeps_the_first_answer(aws: Aws, s3_settings: Settings) -> None:
    """moto honours PutObject IfNoneMatch='*' (the refusal of a second answer relies on it)."""
    jobs = job_store(s3_settings)
    hashed = job_hash(new_job_id())
    assert jobs.put_result(hashed, JobResult(kind=JobResultKind.SUCCEEDED, summary="first"))
    assert not jobs.put_result(hashed, JobResult(kind=JobResultKind.FAILED, message="second"))
    found = jobs.result(hashed)
    assert found is not None and found.summary == "first"


async def test_output_artifacts_on_a_local_store_are_refused_before_invoking(
    client: ConveyorClient, functions: LambdaScript
) -> None:
    ref, _ = await client.start(pipeline(S3_DECLARATION.format(function=FUNCTION)))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    error = action(state).error
    assert error is not None and error.code == "ConfigurationError"
    assert error.message == (
        "action 'Deploy': a Lambda action's output artifacts are uploaded by the function to S3, but this worker's "
        "artifact store is local: set CONVEYOR_ARTIFACT_STORE=s3://<bucket>/<prefix> (or declare the pipeline's "
        "artifactStore with CONVEYOR_AWS=true), or remove outputArtifacts"
    )
    assert functions.invocations == []


# --- the action's timeout ------------------------------------------------------------------------------------------


async def test_no_answer_within_the_actions_timeout_fails_it_clearly_and_closes_the_job(
    functions: LambdaScript, listener: str, worker_settings: Settings
) -> None:
    """Contract test: the function never reports; at the action's timeout (here 1.5 s, given to the activity as a
    declaration's timeoutMinutes would be) the action fails saying so, and the function's late answer is refused."""
    context = ActionContext(pipeline_name="p", execution_id="e-2", stage_name="Invoke", action_name="Deploy")
    provider = LambdaProvider(worker_settings, LocalArtifactStore(worker_settings.artifacts_dir))
    request = LambdaInvokeInput(
        context=context,
        identity=AwsIdentity(session_name="conveyor-p-e-2"),
        function_name=FUNCTION,
        timeout_seconds=1.5,
    )
    began = time.monotonic()
    with pytest.raises(ApplicationError) as raised:
        await asyncio.wait_for(activity_environment().run(provider.lambda_invoke, request), 10)
    assert 1.5 <= time.monotonic() - began < 5
    assert raised.value.type == "LambdaJobTimedOut" and raised.value.non_retryable
    assert raised.value.message == (
        f"action 'Deploy': function {FUNCTION} did not report within the action's timeout (1.5 seconds): no "
        "PutJobSuccessResult or PutJobFailureResult for job #1; the job is closed (a later answer is refused). "
        "Raise the action's timeoutMinutes if the function needs longer"
    )
    (sent,) = functions.invocations
    with pytest.raises(ClientError) as late:
        await asyncio.to_thread(codepipeline(listener).put_job_success_result, jobId=sent.job["id"])
    assert late.value.response["Error"]["Code"] == "InvalidJobStateException"


async def test_the_declared_timeout_reaches_the_activity_with_temporals_margin(
    client: ConveyorClient, functions: LambdaScript, listener: str, temporal_client: Client
) -> None:
    """`conveyor.timeoutMinutes: 1` (the smallest the declaration takes): the activity ends the wait at 60 s itself;
    Temporal's start-to-close (a minute later) only catches a lost worker."""
    declared = declaration()
    declared["stages"][1]["actions"][0]["conveyor"] = {"timeoutMinutes": 1}
    ref, _ = await client.start(declared)
    sent = await invocation(functions, 1)
    await asyncio.to_thread(codepipeline(listener).put_job_success_result, jobId=sent.job["id"],
                            outputVariables={"Version": "v7"})  # fmt: skip
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    stage = temporal_client.get_workflow_handle(stage_workflow_id(ref.pipeline_name, ref.execution_id, "Invoke"))
    history = await stage.fetch_history()
    (scheduled,) = [
        e.activity_task_scheduled_event_attributes
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name != Activity.DELIVER_EVENTS
    ]
    assert scheduled.start_to_close_timeout.ToTimedelta() == timedelta(minutes=2)
    sent_input = json.loads(scheduled.input.payloads[0].data)
    assert sent_input["timeoutSeconds"] == 60
