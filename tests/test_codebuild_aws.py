"""The `aws` CodeBuild runner: contract tests.

Every build outcome here is scripted (tests/aws_contract.py: moto keeps no StartBuild overrides and finishes every
build at once), so these are contract tests: they check what Conveyor sends to CodeBuild and how it follows what
CodeBuild answers, against moto's record of the requests it served. The moto server runs in this process (the
script patches it); workers run in-process, or as real `conveyor worker` processes for the SIGKILL tests.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from rich.console import Console
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.providers.codebuild import CodeBuildProvider
from conveyor.aws.identity import AwsIdentity
from conveyor.cli.render import execution_table
from conveyor.client import ConveyorClient
from conveyor.model import ActionContext, ArtifactRef, ExecutionState, ExecutionStatus
from conveyor.providers.codebuild import CodeBuildInput, CodeBuildRunner
from conveyor.settings import S3Location, Settings
from conveyor.stores.artifacts import ConfiguredArtifactStore, store_from_settings
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.aws_contract import CodeBuildScript, ScriptedBuild
from tests.helpers import pipeline
from tests.test_durability import start_worker_process, wait_for

BUCKET = "pipeline-artifacts"
PROJECT = "app-build"
POLL_SECONDS = 0.05
VARIABLES = (
    '[{"name": "STAGE", "value": "prod", "type": "PLAINTEXT"},'
    ' {"name": "DB_URL", "value": "/app/db-url", "type": "PARAMETER_STORE"},'
    ' {"name": "UNTYPED", "value": "plain"}]'
)
DECLARATION = """
name: cb-{suffix}
artifactStore: {{type: S3, location: {bucket}}}
conveyor:
  heartbeatTimeoutSeconds: 2
stages:
  - name: Source
    actions:
      - name: Checkout
        provider: Commands
        commands: ["echo app > app.txt", "echo lib > lib.txt"]
        outputArtifacts: [{{name: Src, files: [app.txt]}}, {{name: Lib, files: [lib.txt]}}]
  - name: Build
    actions:
      - name: Compile
        provider: CodeBuild
        namespace: BuildVariables
        configuration:
          ProjectName: {project}
          PrimarySource: Src
          EnvironmentVariables: '{variables}'
        inputArtifacts: [{{name: Lib}}, {{name: Src}}]
        outputArtifacts: [{{name: Bundle}}, {{name: Report}}]
        conveyor: {{codebuild: {{runner: aws}}}}
  - name: Use
    actions:
      - name: Check
        provider: Commands
        commands: ["grep bundled bundle.txt", "test '#{{BuildVariables.IMAGE_TAG}}' = v42"]
        inputArtifacts: [{{name: Bundle}}]
"""


def declaration() -> dict[str, object]:
    text = DECLARATION.format(suffix=uuid.uuid4().hex[:8], bucket=BUCKET, project=PROJECT, variables=VARIABLES)
    return pipeline(text)


def zipped(name: str, text: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr(name, text)
    return out.getvalue()


SUCCESS = ScriptedBuild(
    exported={"IMAGE_TAG": "v42"},
    artifacts={"Bundle": zipped("bundle.txt", "bundled\n"), "Report": zipped("report.txt", "ok\n")},
)


@pytest.fixture
def codebuild(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> CodeBuildScript:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    aws.client("codebuild").create_project(
        name=PROJECT,
        source={"type": "S3", "location": f"{BUCKET}/source.zip"},
        artifacts={"type": "S3", "location": BUCKET},
        environment={
            "type": "LINUX_CONTAINER",
            "image": "aws/codebuild/standard:7.0",
            "computeType": "BUILD_GENERAL1_SMALL",
        },
        serviceRole="arn:aws:iam::123456789012:role/codebuild",
    )
    return CodeBuildScript().install(monkeypatch)


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    """A worker configured for AWS (the declared artifactStore applies), polling builds quickly."""
    return settings.model_copy(
        update={"data_dir": tmp_path / "data", "aws": True, "codebuild_poll_seconds": POLL_SECONDS}
    )


@pytest_asyncio.fixture
async def client(temporal_client: Client, worker_settings: Settings) -> AsyncIterator[ConveyorClient]:
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


def compile_action(state: ExecutionState):  # noqa: ANN201
    build = state.stage("Build")
    assert build is not None
    return build.actions[0]


async def test_a_build_gets_its_inputs_as_s3_overrides_and_its_variables_and_succeeds(
    client: ConveyorClient, codebuild: CodeBuildScript, aws: Aws, worker_settings: Settings
) -> None:
    """Contract test: the StartBuild request (sources, variables with their types, the marker, artifact overrides,
    the token), the environment variables kept on the build, phases, the log link, exported variables and the
    build's artifacts reaching the next stage."""
    codebuild.outcome = SUCCESS
    ref, _ = await client.start(declaration())
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary

    (request,) = codebuild.starts
    source = state.stage("Source")
    assert source is not None
    src, lib = source.actions[0].output_artifacts
    assert request["projectName"] == PROJECT
    assert request["sourceTypeOverride"] == "S3"
    assert request["sourceLocationOverride"] == src.location.removeprefix("s3://")  # PrimarySource, though second
    assert request["secondarySourcesOverride"] == [
        {"type": "S3", "location": lib.location.removeprefix("s3://"), "sourceIdentifier": "Lib"}
    ]
    marker = f"{ref.execution_id}/Build/1/Compile/1"
    variables = [
        {"name": "STAGE", "value": "prod", "type": "PLAINTEXT"},
        {"name": "DB_URL", "value": "/app/db-url", "type": "PARAMETER_STORE"},
        {"name": "UNTYPED", "value": "plain", "type": "PLAINTEXT"},
        {"name": "CONVEYOR_ACTION_ATTEMPT", "value": marker, "type": "PLAINTEXT"},
    ]
    assert request["environmentVariablesOverride"] == variables
    assert re.fullmatch(r"[0-9a-f]{64}", request["idempotencyToken"])
    assert request["timeoutInMinutesOverride"] == 60
    assert request["artifactsOverride"]["type"] == "S3" and request["artifactsOverride"]["location"] == BUCKET
    assert request["artifactsOverride"]["name"] == "Bundle" and request["artifactsOverride"]["packaging"] == "ZIP"
    assert [a["artifactIdentifier"] for a in request["secondaryArtifactsOverride"]] == ["Report"]
    (build,) = aws.client("codebuild").batch_get_builds(ids=list(codebuild.builds))["builds"]
    assert build["environment"]["environmentVariables"] == variables  # kept on the build (moto drops them)
    assert codebuild.lookups == 1  # a first attempt looks for an earlier one's build once, finds none

    action = compile_action(state)
    assert action.output_variables == {"IMAGE_TAG": "v42"}
    assert action.external_url == build["logs"]["deepLink"]
    assert [(p.name, p.status) for p in action.phases][-3:] == [
        ("UPLOAD_ARTIFACTS", "SUCCEEDED"),
        ("FINALIZING", "SUCCEEDED"),
        ("COMPLETED", None),
    ]
    assert ("BUILD", "SUCCEEDED") in [(p.name, p.status) for p in action.phases]
    bundle, report = action.output_artifacts
    assert (bundle.name, report.name) == ("Bundle", "Report")
    assert bundle.location.startswith(f"s3://{BUCKET}/artifacts/sha256/")  # re-stored content-addressed
    out = worker_settings.data_dir / "report"
    store_from_settings(worker_settings).extract(report, out)
    assert (out / "report.txt").read_text() == "ok\n"
    shown = io.StringIO()
    Console(file=shown, width=2000, color_system=None).print(execution_table(state))
    assert f"link: {build['logs']['deepLink']}" in shown.getvalue()  # `conveyor status` shows the build's log link
    log = await asyncio.to_thread(_action_log, worker_settings, ref.execution_id, ref.pipeline_name)
    assert f"started build {build['id']} of project {PROJECT}" in log
    assert "phase BUILD SUCCEEDED" in log and f"build logs: {build['logs']['deepLink']}" in log


def _action_log(settings: Settings, execution_id: str, pipeline_name: str) -> str:
    return (settings.logs_dir / pipeline_name / execution_id / "Build" / "Compile.log").read_text()


async def test_a_build_failing_in_its_build_phase_fails_the_action_naming_the_phase(
    client: ConveyorClient, codebuild: CodeBuildScript
) -> None:
    """Contract test: FAILED in BUILD -> the action fails with the phase and CodeBuild's context message."""
    codebuild.outcome = ScriptedBuild(status="FAILED", failed_phase="BUILD", message="Reason: exit status 2")
    ref, _ = await client.start(declaration())
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    action = compile_action(state)
    assert action.error is not None
    (build_id,) = codebuild.builds
    assert f"build {build_id} FAILED in phase BUILD: COMMAND_EXECUTION_ERROR: Reason: exit status 2" in (
        action.error.message
    )
    assert "; build logs: https://console.aws.amazon.com/cloudwatch/" in action.error.message
    assert len(codebuild.starts) == 1  # a failed build is not started again
    phases = {phase.name: phase.status for phase in action.phases}  # status shows where it failed
    assert phases.get("BUILD") == "FAILED", action.phases


async def test_abandoning_the_execution_stops_the_build(client: ConveyorClient, codebuild: CodeBuildScript) -> None:
    """Contract test: an abandon cancels the activity, which calls StopBuild and waits for the build to stop."""
    codebuild.outcome = ScriptedBuild(pause_at="BUILD")
    ref, _ = await client.start(declaration())
    await wait_for(lambda: _in_phase(codebuild, "BUILD"), 30, "the build to reach its BUILD phase")
    await client.stop(ref, reason="enough", abandon=True)
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status in (ExecutionStatus.STOPPED, ExecutionStatus.CANCELLED), state.status
    (build_id,) = codebuild.builds
    assert codebuild.stops == [build_id]
    assert codebuild.builds[build_id]["buildStatus"] == "STOPPED"


def _in_phase(codebuild: CodeBuildScript, phase: str) -> bool:
    return any(b["currentPhase"] == phase for b in codebuild.builds.values())


# --- a worker killed with SIGKILL ---------------------------------------------------------------------------------


def _worker_env(settings: Settings, aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a `conveyor worker` process is started with (start_worker_process copies os.environ)."""
    for name, value in aws.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONVEYOR_AWS", "true")
    monkeypatch.setenv("CONVEYOR_CODEBUILD_POLL_SECONDS", str(POLL_SECONDS))


@pytest.mark.parametrize("when", ["right after StartBuild", "mid-build"])
async def test_a_worker_killed_after_starting_the_build_is_followed_by_one_that_finds_it(
    temporal_client: Client,
    worker_settings: Settings,
    codebuild: CodeBuildScript,
    aws: Aws,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:
    """Contract test: a worker SIGKILLed right after StartBuild (moto holds the answer, so the worker never learns
    the build id and never heartbeats it) or mid-build (its heartbeat holds the build id); the next worker follows
    the same build: StartBuild was served once."""
    _worker_env(worker_settings, aws, monkeypatch)
    codebuild.outcome = ScriptedBuild(pause_at="BUILD", **_success_fields())
    if when == "right after StartBuild":
        codebuild.hold_start = threading.Event()
    client = ConveyorClient(temporal_client, worker_settings)
    first = start_worker_process(worker_settings, tmp_path / "worker1.log")
    try:
        ref, _ = await client.start(declaration())
        if codebuild.hold_start is not None:
            await wait_for(codebuild.start_held.is_set, 60, "StartBuild to be served")
        else:
            await wait_for(lambda: _in_phase(codebuild, "BUILD"), 60, "the build to reach its BUILD phase")
            await _heartbeat_recorded(temporal_client, f"{ref.pipeline_name}/{ref.execution_id}/Build")
        first.kill()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        if codebuild.hold_start is not None:
            codebuild.hold_start.set()  # the answer goes to a dead worker
    lookups_before = codebuild.lookups
    codebuild.release.set()
    second = start_worker_process(worker_settings, tmp_path / "worker2.log")
    try:
        state = await asyncio.wait_for(client.wait(ref), 90)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert len(codebuild.starts) == 1, codebuild.starts
    (build_id,) = codebuild.builds
    log = _action_log(worker_settings, ref.execution_id, ref.pipeline_name)
    if when == "right after StartBuild":
        assert codebuild.lookups == lookups_before + 1  # the retry looked for the build by its marker ...
        assert f"found build {build_id} started by an earlier attempt" in log
    else:
        assert codebuild.lookups == lookups_before  # ... or took the build id from the heartbeat
        assert f"following build {build_id} (started by an earlier attempt)" in log
    assert compile_action(state).output_variables == {"IMAGE_TAG": "v42"}


async def _heartbeat_recorded(temporal_client: Client, stage_workflow_id: str) -> None:
    """Until the server holds the activity's heartbeat details (the SDK sends beats in batches)."""
    handle = temporal_client.get_workflow_handle(stage_workflow_id)
    for _ in range(100):
        pending = (await handle.describe()).raw_description.pending_activities
        if pending and pending[0].heartbeat_details.payloads:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the build id never reached the activity's heartbeat")


def _success_fields() -> dict[str, object]:
    return {"exported": SUCCESS.exported, "artifacts": SUCCESS.artifacts}


# --- the runner on its own (no workflow) --------------------------------------------------------------------------

CONTEXT = ActionContext(pipeline_name="app", execution_id="exec-1", stage_name="Build", action_name="Compile")


def runner_input(source: ArtifactRef, project: str = PROJECT) -> CodeBuildInput:
    return CodeBuildInput(
        context=CONTEXT,
        identity=AwsIdentity(session_name="conveyor-app-exec-1"),
        runner=CodeBuildRunner.AWS,
        project_name=project,
        input_artifacts=[source],
        output_artifacts=["Out"],
    )


def local_source(store: ConfiguredArtifactStore, tmp_path: Path) -> ArtifactRef:
    root = tmp_path / "src"
    root.mkdir()
    (root / "app.txt").write_text("app\n")
    return store.local.put("Src", root, ["**/*"])


def s3_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", artifact_store=S3Location(bucket=BUCKET, prefix="ci"), codebuild_poll_seconds=0.01
    )


async def test_an_input_in_the_local_store_is_uploaded_to_the_s3_store_before_the_build(
    codebuild: CodeBuildScript, aws: Aws, tmp_path: Path
) -> None:
    """Contract test: a file:// input becomes an S3 source override in the configured S3 store."""
    codebuild.outcome = ScriptedBuild(artifacts={"Out": zipped("out.txt", "out\n")})
    settings = s3_settings(tmp_path)
    store = ConfiguredArtifactStore(settings)
    source = local_source(store, tmp_path)
    assert source.location.startswith("file://")
    outcome = await ActivityEnvironment().run(CodeBuildProvider(settings, store).codebuild, runner_input(source))
    (request,) = codebuild.starts
    bucket, key = request["sourceLocationOverride"].split("/", 1)
    assert (bucket, key) == (
        BUCKET,
        f"ci/artifacts/sha256/{source.digest.removeprefix('sha256:')[:2]}/{source.digest.removeprefix('sha256:')}.zip",
    )
    assert aws.client("s3").head_object(Bucket=bucket, Key=key)["ContentLength"] == source.size
    assert request["artifactsOverride"]["path"].startswith("ci/codebuild/")
    (out,) = outcome.output_artifacts
    assert out.location.startswith(f"s3://{BUCKET}/ci/artifacts/sha256/")


async def test_without_an_s3_store_the_action_is_refused_before_any_call(
    codebuild: CodeBuildScript, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = ConfiguredArtifactStore(settings)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(
            CodeBuildProvider(settings, store).codebuild, runner_input(local_source(store, tmp_path))
        )
    assert raised.value.type == "ConfigurationError" and raised.value.non_retryable
    assert "artifact store is local: set CONVEYOR_ARTIFACT_STORE=s3://" in raised.value.message
    assert codebuild.starts == []


async def test_a_missing_project_and_a_missing_output_are_clear_errors(
    codebuild: CodeBuildScript, tmp_path: Path
) -> None:
    """Contract test: an unknown project (the first call, the lookup, finds out); a build that uploaded no artifact
    for one of the action's outputs."""
    settings = s3_settings(tmp_path)
    store = ConfiguredArtifactStore(settings)
    source = local_source(store, tmp_path)
    provider = CodeBuildProvider(settings, store)
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(provider.codebuild, runner_input(source, project="no-such-project"))
    assert raised.value.type == "AwsNotFound"
    assert "action 'Compile': codebuild:ListBuildsForProject on no-such-project failed" in raised.value.message
    assert "project/no-such-project does not exist" in raised.value.message
    codebuild.outcome = ScriptedBuild(artifacts={})
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(provider.codebuild, runner_input(source))
    assert raised.value.type == "ArtifactError"
    assert "the build succeeded but wrote no output artifact 'Out'" in raised.value.message
