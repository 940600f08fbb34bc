"""Scenario `invoke` (issue 16): the invoke and provisioning providers' activities against the same AWS calls made
directly with boto3, on a moto server subprocess on loopback, in the same run.

Each activity runs through the SDK's ActivityEnvironment (no Temporal server), as a worker would run it: its own
boto3 session and client, the job store, the action log, heartbeats. The floor ("baseline") is the least a script
does for the same outcome, with clients made once beforehand. Cases, each headline `wall_s` (seconds per action):

1. `lambda-job`: job mode's round trip. The function (bench.moto_function, inside moto's process) reads the job id
   from the event the engine sent and answers PutJobSuccessResult at once through `conveyor serve`'s job listener app
   (uvicorn on loopback, in a thread of this process); the activity returns when it has read the answer from the
   job store. Floor: boto3 invoke (Event) + the same PutJobSuccessResult request (to a job ticketed beforehand).
2. `lambda-plain`: plain mode against boto3 invoke (RequestResponse).
3. `stepfunctions`: a standard machine of three Pass states followed to its end, against boto3 start_execution +
   describe_execution polled at the same interval (POLL_SECONDS, the settings' step_functions_poll_seconds).
4. `cloudformation`: CREATE_UPDATE of a one-parameter (SSM) template on a new stack, then the same action again
   (no change), against create_stack + describe_stacks polled at the same interval, then update_stack answered
   "No updates are to be performed.". Metrics `create_s`, `nochange_s`; headline their sum.
5. `ecs`: the ECS deploy (issue 17): a new revision with one image changed, UpdateService, followed to COMPLETED
   (moto's process plays the deployment: bench.moto_function), against describe_services + describe_task_definition
   + register_task_definition + update_service + describe_services polled at the same interval (ecs_poll_seconds).
   Both sides deploy the same service, each with an image of its own; the family gains a revision per deploy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import uvicorn
from botocore.exceptions import ClientError
from temporalio.testing import ActivityEnvironment

from activities.providers.cloudformation import CloudFormationProvider
from activities.providers.ecs import EcsProvider
from activities.providers.lambda_invoke import LambdaProvider
from activities.providers.step_functions import StepFunctionsProvider
from bench.moto import moto_config, moto_server
from bench.moto_function import JOB_FUNCTION, LISTENER_ENV, put_job_success
from bench.report import summarize_case
from conveyor.aws.identity import AwsIdentity
from conveyor.devserver import free_port
from conveyor.model import ActionContext
from conveyor.providers.cloudformation import ActionMode, ArtifactPath, CloudFormationInput
from conveyor.providers.ecs import EcsDeployInput, attempt_marker
from conveyor.providers.lambda_invoke import InvokeMode, LambdaInvokeInput
from conveyor.providers.step_functions import StepFunctionsInput, execution_name
from conveyor.service.jobs import create_jobs_app
from conveyor.settings import Settings
from conveyor.stores.artifacts import LocalArtifactStore
from conveyor.stores.jobs import JobTicket, job_hash, job_store, new_job_id

POLL_SECONDS = 0.1  # Step Functions' and CloudFormation's poll interval, both sides (Conveyor's default is 5 s)
FLOOR_FUNCTION = "bench-floor"  # invoked by the floor: moto's own answer, no PutJob from the function
PLAIN_FUNCTION = "bench-plain"
IDENTITY = AwsIdentity(session_name="bench")
MACHINE = {
    "StartAt": "A",
    "States": {
        "A": {"Type": "Pass", "Result": {"a": 1}, "ResultPath": "$.a", "Next": "B"},
        "B": {"Type": "Pass", "Result": {"b": 2}, "ResultPath": "$.b", "Next": "C"},
        "C": {"Type": "Pass", "End": True},
    },
}
TEMPLATE = {
    "Parameters": {"Value": {"Type": "String", "Default": "v1"}},
    "Resources": {
        "Setting": {
            "Type": "AWS::SSM::Parameter",
            "Properties": {
                "Name": {"Fn::Join": ["", ["/bench/", {"Ref": "AWS::StackName"}]]},
                "Type": "String",
                "Value": {"Ref": "Value"},
            },
        }
    },
}
# The floor passes the parameter: moto answers "No updates are to be performed." only to an update that has some.
FLOOR_PARAMETERS = [{"ParameterKey": "Value", "ParameterValue": "v1"}]
# Lambda without Docker (before any function is created), Step Functions executing machines.
MOTO_CONFIG = b'{"lambda": {"use_docker": false}, "stepfunctions": {"execute_state_machine": true}}'
_SFN_ROLE = "arn:aws:iam::123456789012:role/bench-sfn"
ECS_CLUSTER, ECS_SERVICE = "bench", "web"
ECS_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web"

Side = Callable[[], Awaitable[dict[str, float]]]


def _context(action: str) -> ActionContext:
    """A fresh action of a fresh execution: every run is a new attempt (new job, execution name, tokens)."""
    return ActionContext(pipeline_name="bench", execution_id=uuid.uuid4().hex, stage_name="Invoke", action_name=action)


def _environment() -> ActivityEnvironment:
    """Scheduled now: job mode counts the action's timeout from the first schedule."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, scheduled_time=datetime.now(UTC))
    return env


async def _timed(run: Callable[[], Awaitable[Any]]) -> float:
    began = time.perf_counter()
    await run()
    return time.perf_counter() - began


@contextlib.contextmanager
def _job_listener(settings: Settings, port: int) -> Iterator[None]:
    """`conveyor serve`'s job listener app on loopback, in a thread with its own event loop (as a separate
    process would not share the activity's loop)."""
    app = create_jobs_app(job_store(settings))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="job-listener", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the job listener did not start")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


async def _interleaved(sides: dict[str, Side], repeats: int, warmup: bool) -> dict[str, dict[str, list[float]]]:
    """Each repetition runs both sides, alternating which goes first, after one unrecorded warm-up of each."""
    if warmup:
        for side in sides.values():
            await side()
    raw: dict[str, dict[str, list[float]]] = {"conveyor": {}, "baseline": {}}
    for rep in range(repeats):
        for name in ("conveyor", "baseline") if rep % 2 == 0 else ("baseline", "conveyor"):
            for metric, value in (await sides[name]()).items():
                raw[name].setdefault(metric, []).append(value)
    return raw


class _Bench:
    """The cases on one moto server, one job listener and one data directory."""

    def __init__(self, settings: Settings, listener: str) -> None:
        self.settings = settings
        self.listener = listener
        self.store = LocalArtifactStore(settings.artifacts_dir)
        self.jobs = job_store(settings)
        self.lam = boto3.client("lambda")
        self.sfn = boto3.client("stepfunctions")
        self.cfn = boto3.client("cloudformation")
        self.account = boto3.client("sts").get_caller_identity()["Account"]
        role = boto3.client("iam").create_role(RoleName="bench-fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        for name in (JOB_FUNCTION, FLOOR_FUNCTION, PLAIN_FUNCTION):
            self.lam.create_function(
                FunctionName=name, Runtime="python3.12", Role=role, Handler="index.handler",
                Code={"ZipFile": b"bench"},
            )  # fmt: skip
        self.machine = self.sfn.create_state_machine(
            name="bench-pass", definition=json.dumps(MACHINE), roleArn=_SFN_ROLE, type="STANDARD"
        )["stateMachineArn"]
        source = settings.data_dir / "template-src"
        source.mkdir(parents=True)
        (source / "template.json").write_text(json.dumps(TEMPLATE))
        self.template_ref = self.store.put("Tpl", source, ["template.json"])

    def _event(self, job_id: str) -> bytes:
        """The event the engine sends, in the shape and size the floor sends it too."""
        data = {
            "actionConfiguration": {"configuration": {"FunctionName": JOB_FUNCTION}},
            "inputArtifacts": [],
            "outputArtifacts": [],
            "artifactCredentials": {"accessKeyId": "", "secretAccessKey": "", "sessionToken": ""},
        }
        return json.dumps({"CodePipeline.job": {"id": job_id, "accountId": self.account, "data": data}}).encode()

    # --- 1. Lambda, job mode ----------------------------------------------------------------------------------

    def lambda_job(self) -> dict[str, Side]:
        provider = LambdaProvider(self.settings, self.store)

        async def conveyor() -> dict[str, float]:
            request = LambdaInvokeInput(
                context=_context("Job"), identity=IDENTITY, function_name=JOB_FUNCTION, timeout_seconds=60
            )
            began = time.perf_counter()
            outcome = await _environment().run(provider.lambda_invoke, request)
            elapsed = time.perf_counter() - began
            assert outcome.summary == "bench function done", outcome
            return {"wall_s": elapsed}

        def floor_sync() -> dict[str, float]:
            job_id = new_job_id()  # ticketed outside the clock, so the listener accepts the answer
            ticket = JobTicket(
                pipeline_name="bench", execution_id="floor", stage_name="Invoke", action_name="Job",
                function_name=FLOOR_FUNCTION,
            )  # fmt: skip
            self.jobs.put_ticket(job_hash(job_id), ticket)
            began = time.perf_counter()
            self.lam.invoke(FunctionName=FLOOR_FUNCTION, InvocationType="Event", Payload=self._event(job_id))
            put_job_success(self.listener, job_id)
            return {"wall_s": time.perf_counter() - began}

        return {"conveyor": conveyor, "baseline": lambda: asyncio.to_thread(floor_sync)}

    # --- 2. Lambda, plain mode --------------------------------------------------------------------------------

    def lambda_plain(self) -> dict[str, Side]:
        provider = LambdaProvider(self.settings, self.store)

        async def conveyor() -> dict[str, float]:
            request = LambdaInvokeInput(
                context=_context("Plain"), identity=IDENTITY, function_name=PLAIN_FUNCTION, mode=InvokeMode.PLAIN
            )
            return {"wall_s": await _timed(lambda: _environment().run(provider.lambda_invoke, request))}

        def floor_sync() -> dict[str, float]:
            began = time.perf_counter()
            answer = self.lam.invoke(FunctionName=PLAIN_FUNCTION, Payload=self._event(new_job_id()))
            answer["Payload"].read()
            return {"wall_s": time.perf_counter() - began}

        return {"conveyor": conveyor, "baseline": lambda: asyncio.to_thread(floor_sync)}

    # --- 3. Step Functions ------------------------------------------------------------------------------------

    def step_functions(self) -> dict[str, Side]:
        provider = StepFunctionsProvider(self.settings, self.store)

        async def conveyor() -> dict[str, float]:
            context = _context("Machine")
            request = StepFunctionsInput(
                context=context,
                identity=IDENTITY,
                state_machine_arn=self.machine,
                execution_name=execution_name("bench-", context),
                input='{"n": 1}',
            )
            began = time.perf_counter()
            outcome = await _environment().run(provider.step_functions, request)
            elapsed = time.perf_counter() - began
            assert outcome.summary and outcome.summary.endswith("succeeded"), outcome
            return {"wall_s": elapsed}

        def floor_sync() -> dict[str, float]:
            began = time.perf_counter()
            arn = self.sfn.start_execution(stateMachineArn=self.machine, name=f"f-{uuid.uuid4()}", input='{"n": 1}')[
                "executionArn"
            ]
            while (status := self.sfn.describe_execution(executionArn=arn)["status"]) == "RUNNING":
                time.sleep(POLL_SECONDS)
            elapsed = time.perf_counter() - began
            assert status == "SUCCEEDED", status
            return {"wall_s": elapsed}

        return {"conveyor": conveyor, "baseline": lambda: asyncio.to_thread(floor_sync)}

    # --- 4. CloudFormation ------------------------------------------------------------------------------------

    def cloudformation(self) -> dict[str, Side]:
        provider = CloudFormationProvider(self.settings, self.store)

        async def run(stack: str) -> str | None:
            request = CloudFormationInput(
                context=_context("Deploy"),
                identity=IDENTITY,
                mode=ActionMode.CREATE_UPDATE.value,
                stack_name=stack,
                template=ArtifactPath(artifact="Tpl", path="template.json"),
                input_artifacts={"Tpl": self.template_ref},
            )
            outcome = await _environment().run(provider.cloudformation, request)
            return outcome.summary

        async def conveyor() -> dict[str, float]:
            stack = f"bench-c-{uuid.uuid4().hex[:8]}"
            create = await _timed(lambda: run(stack))
            began = time.perf_counter()
            summary = await run(stack)
            nochange = time.perf_counter() - began
            assert summary and "no changes" in summary.lower(), summary
            return {"create_s": create, "nochange_s": nochange, "total_s": create + nochange}

        def floor_sync() -> dict[str, float]:
            stack, body = f"bench-f-{uuid.uuid4().hex[:8]}", json.dumps(TEMPLATE)
            began = time.perf_counter()
            stack_id = self.cfn.create_stack(StackName=stack, TemplateBody=body, Parameters=FLOOR_PARAMETERS)["StackId"]
            while (status := self.cfn.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"]).endswith(
                "_IN_PROGRESS"
            ):
                time.sleep(POLL_SECONDS)
            created = time.perf_counter()
            assert status == "CREATE_COMPLETE", status
            try:
                self.cfn.update_stack(StackName=stack, TemplateBody=body, Parameters=FLOOR_PARAMETERS)
                raise AssertionError("the unchanged template was updated")
            except ClientError as err:
                assert "No updates are to be performed" in str(err), err
            done = time.perf_counter()
            return {"create_s": created - began, "nochange_s": done - created, "total_s": done - began}

        return {"conveyor": conveyor, "baseline": lambda: asyncio.to_thread(floor_sync)}

    # --- 5. ECS ----------------------------------------------------------------------------------------------

    def ecs(self) -> dict[str, Side]:
        provider = EcsProvider(self.settings, self.store)
        ecs = boto3.client("ecs")
        ecs.create_cluster(clusterName=ECS_CLUSTER)
        first = ecs.register_task_definition(
            family=ECS_SERVICE, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="256", memory="512",
            containerDefinitions=[
                {"name": "web", "image": f"{ECS_IMAGE}:0", "essential": True, "portMappings": [{"containerPort": 80}]},
                {"name": "sidecar", "image": "public.ecr.aws/envoy:1", "essential": False},
            ],
        )["taskDefinition"]["taskDefinitionArn"]  # fmt: skip
        ecs.create_service(cluster=ECS_CLUSTER, serviceName=ECS_SERVICE, taskDefinition=first, desiredCount=2)
        images = iter(range(1, 1_000_000))
        source = self.settings.data_dir / "images-src"
        source.mkdir(parents=True)

        async def conveyor() -> dict[str, float]:
            (source / "imagedefinitions.json").write_text(
                json.dumps([{"name": "web", "imageUri": f"{ECS_IMAGE}:{next(images)}"}])
            )
            ref = self.store.put("Defs", source, ["imagedefinitions.json"])  # the artifact exists before the action
            context = _context("Web")
            request = EcsDeployInput(
                context=context, identity=IDENTITY, cluster=ECS_CLUSTER, service=ECS_SERVICE, artifact=ref,
                attempt_marker=attempt_marker(context), timeout_seconds=120,
            )  # fmt: skip
            began = time.perf_counter()
            outcome = await _environment().run(provider.ecs_deploy, request)
            elapsed = time.perf_counter() - began
            assert outcome.summary and outcome.summary.endswith("completed)"), outcome
            return {"wall_s": elapsed}

        def floor_sync() -> dict[str, float]:
            image = f"{ECS_IMAGE}:{next(images)}"
            began = time.perf_counter()
            service = ecs.describe_services(cluster=ECS_CLUSTER, services=[ECS_SERVICE])["services"][0]
            current = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])["taskDefinition"]
            containers = [{**c, "image": image} if c["name"] == "web" else c for c in current["containerDefinitions"]]
            keep = ("networkMode", "requiresCompatibilities", "cpu", "memory")
            arn = ecs.register_task_definition(
                family=current["family"], containerDefinitions=containers, **{k: current[k] for k in keep}
            )["taskDefinition"]["taskDefinitionArn"]
            updated = ecs.update_service(cluster=ECS_CLUSTER, service=ECS_SERVICE, taskDefinition=arn)["service"]
            deployment = next(d["id"] for d in updated["deployments"] if d["taskDefinition"] == arn)
            while True:
                answer = ecs.describe_services(cluster=ECS_CLUSTER, services=[ECS_SERVICE])["services"][0]
                ours = next(d for d in answer["deployments"] if d["id"] == deployment)
                if ours["rolloutState"] == "COMPLETED":
                    break
                time.sleep(POLL_SECONDS)
            return {"wall_s": time.perf_counter() - began}

        return {"conveyor": conveyor, "baseline": lambda: asyncio.to_thread(floor_sync)}


async def invoke(ctx: Any) -> dict[str, Any]:
    """The five cases (see the module's docstring)."""
    repeats = ctx.repeats(15)
    work = Path(tempfile.mkdtemp(prefix="invoke-", dir=ctx.data_dir))
    settings = Settings(
        data_dir=work / "data",
        step_functions_poll_seconds=POLL_SECONDS,
        cloudformation_poll_seconds=POLL_SECONDS,
        ecs_poll_seconds=POLL_SECONDS,
    )
    port = free_port()
    listener = f"http://127.0.0.1:{port}/"
    cases: dict[str, Any] = {}
    notes: list[str] = []
    try:
        with moto_server(work, module="bench.moto_function", environment={LISTENER_ENV: listener}) as endpoint:
            moto_config(endpoint, MOTO_CONFIG)
            with _job_listener(settings, port):
                bench = _Bench(settings, listener)
                ctx.log(f"invoke: moto at {endpoint}, job listener at {listener}; {repeats} repetitions per side")
                for name, sides, headline in (
                    ("lambda-job", bench.lambda_job(), "wall_s"),
                    ("lambda-plain", bench.lambda_plain(), "wall_s"),
                    ("stepfunctions", bench.step_functions(), "wall_s"),
                    ("cloudformation", bench.cloudformation(), "total_s"),
                    ("ecs", bench.ecs(), "wall_s"),
                ):
                    raw = await _interleaved(sides, repeats, warmup=not ctx.tiny)
                    case = summarize_case(raw, headline)
                    cases[name] = case
                    c, b = case["conveyor"][headline], case["baseline"][headline]
                    notes.append(
                        f"{name}: p50 {1000 * c['median']:.0f} ms (p95 {1000 * c['p95']:.0f}) vs floor "
                        f"{1000 * b['median']:.0f} ms (p95 {1000 * b['p95']:.0f}): ratio {case['ratio']:.2f}"
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cf = cases["cloudformation"]
    notes.append(
        "cloudformation: create "
        f"{1000 * cf['conveyor']['create_s']['median']:.0f} vs {1000 * cf['baseline']['create_s']['median']:.0f} ms, "
        f"no-change re-run {1000 * cf['conveyor']['nochange_s']['median']:.0f} vs "
        f"{1000 * cf['baseline']['nochange_s']['median']:.0f} ms; poll interval {POLL_SECONDS} s on both sides"
    )
    return {
        "cases": cases,
        "ratio": cases["lambda-job"]["ratio"],
        "repeat": repeats,
        "poll_seconds": POLL_SECONDS,
        "notes": notes,
    }
