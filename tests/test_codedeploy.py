"""The CodeDeploy and CodeDeployToECS providers: contract tests.

moto's CodeDeploy stores deployments but never runs them (they stay Created), fills no error information and does
not serve StopDeployment, so every outcome here is scripted by tests/aws_contract.py (CodeDeployScript): these are
contract tests. What the engine sent (the revision, the appspec with the task definition's ARN, the description
naming the attempt, the configuration) is read from moto's stored deployments and task definitions; the S3
artifact store, the ECS task definitions and the rest are moto's real behaviour. Workers run in-process, or as real
`conveyor worker` processes for the SIGKILL test.
"""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from conveyor.client import ConveyorClient
from conveyor.model import ActionState, ActionStatus, ExecutionState, ExecutionStatus
from conveyor.settings import Settings
from conveyor.spec import validate_pipeline
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.aws_contract import CodeDeployScript
from tests.helpers import pipeline
from tests.test_durability import start_worker_process, wait_for

BUCKET = "deploy-artifacts"
APP, GROUP = "web", "web-fleet"
POLL_SECONDS = 0.05
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/web@sha256:" + "ab" * 32
APPSPEC_YML = "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /srv/web\n"
TASKDEF = {
    "family": "web",
    "containerDefinitions": [{"name": "web", "image": "<IMAGE1_NAME>", "memory": 256, "essential": True}],
}
ECS_APPSPEC = """version: 0.0
Resources:
  - TargetService:
      Type: AWS::ECS::Service
      Properties:
        TaskDefinition: <TASK_DEFINITION>
        LoadBalancerInfo: {ContainerName: web, ContainerPort: 80}
"""


def _write(name: str, text: str) -> str:
    """A command writing `text` to `name` (base64: no shell or YAML quoting)."""
    import base64

    return f"echo {base64.b64encode(text.encode()).decode()} | base64 -d > {name}"


def declaration(
    provider: str = "CodeDeploy", configuration: dict[str, str] | None = None, conveyor: str = "{}"
) -> dict[str, Any]:
    data = pipeline(
        f"""
name: cd
artifactStore: {{type: S3, location: {BUCKET}}}
conveyor: {conveyor}
stages:
  - name: Source
    actions:
      - name: Make
        provider: Commands
        commands: []
        outputArtifacts: [{{name: Bundle, files: [appspec.yml, index.html]}}, {{name: Templates, files: [taskdef.json,
          appspec.yaml]}}, {{name: Image, files: [imageDetail.json]}}]
  - name: Deploy
    actions:
      - name: Release
        provider: {provider}
        namespace: Deployed
        inputArtifacts: [{{name: Bundle}}]
"""
    )
    data["stages"][0]["actions"][0]["commands"] = [
        _write("appspec.yml", APPSPEC_YML),
        "echo hello > index.html",
        _write("taskdef.json", json.dumps(TASKDEF)),
        _write("appspec.yaml", ECS_APPSPEC),
        _write("imageDetail.json", json.dumps({"ImageURI": IMAGE, "ImageTags": ["v1"]})),
    ]
    release = data["stages"][1]["actions"][0]
    release["configuration"] = {"ApplicationName": APP, "DeploymentGroupName": GROUP} | (configuration or {})
    if provider == "CodeDeployToECS":
        release["inputArtifacts"] = [{"name": "Templates"}, {"name": "Image"}]
        release["configuration"] = {
            "TaskDefinitionTemplateArtifact": "Templates",
            "AppSpecTemplateArtifact": "Templates",
            "Image1ArtifactName": "Image",
            "Image1ContainerName": "IMAGE1_NAME",
        } | release["configuration"]
    return data


@pytest.fixture
def codedeploy(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> CodeDeployScript:
    aws.client("s3").create_bucket(Bucket=BUCKET)
    client = aws.client("codedeploy")
    client.create_application(applicationName=APP, computePlatform="Server")
    client.create_deployment_group(
        applicationName=APP,
        deploymentGroupName=GROUP,
        serviceRoleArn="arn:aws:iam::123456789012:role/codedeploy",
        deploymentConfigName="CodeDeployDefault.OneAtATime",
    )
    return CodeDeployScript().install(monkeypatch)


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    """A worker configured for AWS (the declared S3 artifactStore applies), polling deployments quickly."""
    return settings.model_copy(
        update={"data_dir": tmp_path / "data", "aws": True, "codedeploy_poll_seconds": POLL_SECONDS}
    )


@pytest_asyncio.fixture
async def client(temporal_client: Client, worker_settings: Settings) -> AsyncIterator[ConveyorClient]:
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


def release_action(state: ExecutionState) -> ActionState:
    stage = state.stage("Deploy")
    assert stage is not None
    return stage.actions[0]


def ours(script: CodeDeployScript) -> list[str]:
    """The deployments Conveyor created (the test's own setup deployments have no marker)."""
    return [d for d in script.created if "[conveyor:" in (CodeDeployScript.deployment(d).description or "")]


def earlier_success(aws: Aws, script: CodeDeployScript, key: str = "releases/v0.zip") -> str:
    """A deployment of the group made before the pipeline ran, Succeeded: the revision a compensation goes back to."""
    revision = {"revisionType": "S3", "s3Location": {"bucket": BUCKET, "key": key, "bundleType": "zip"}}
    deployment_id: str = aws.client("codedeploy").create_deployment(
        applicationName=APP, deploymentGroupName=GROUP, revision=revision, description="by hand"
    )["deploymentId"]
    CodeDeployScript.succeed_earlier(deployment_id)
    return deployment_id


async def test_codedeploy_deploys_the_artifacts_zip_as_an_s3_revision_and_succeeds(
    client: ConveyorClient, codedeploy: CodeDeployScript, aws: Aws
) -> None:
    """Contract test: the revision is the input artifact's zip in the S3 artifact store, the configuration passes
    through, the description names the attempt; DeploymentId is the output variable; the previous revision is kept."""
    earlier_success(aws, codedeploy)
    ref, _ = await client.start(declaration(configuration={"DeploymentConfigName": "CodeDeployDefault.AllAtOnce"}))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (deployment_id,) = ours(codedeploy)
    action = release_action(state)
    assert action.output_variables == {"DeploymentId": deployment_id}
    sent = CodeDeployScript.deployment(deployment_id)
    location = sent.revision["s3Location"]
    assert sent.revision["revisionType"] == "S3" and location["bucket"] == BUCKET and location["bundleType"] == "zip"
    body = aws.client("s3").get_object(Bucket=location["bucket"], Key=location["key"])["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as bundle:
        assert bundle.read("appspec.yml").decode() == APPSPEC_YML  # the bundle CodeDeploy reads has its appspec
    assert sent.deployment_config_name == "CodeDeployDefault.AllAtOnce"
    assert "[conveyor:" in sent.description and ref.execution_id in sent.description
    assert action.compensation_artifacts, "the group's previous revision is kept for the compensation"
    assert action.summary is not None and deployment_id in action.summary


async def test_without_a_configuration_key_the_groups_configuration_applies(
    client: ConveyorClient, codedeploy: CodeDeployScript
) -> None:
    ref, _ = await client.start(declaration())
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (deployment_id,) = ours(codedeploy)
    assert str(CodeDeployScript.deployment(deployment_id).deployment_config_name).endswith("OneAtATime")
    assert not release_action(state).compensation_artifacts  # a first deployment: nothing to go back to


async def test_a_failed_deployment_fails_the_action_with_codedeploys_error_information(
    client: ConveyorClient, codedeploy: CodeDeployScript
) -> None:
    codedeploy.status = "Failed"
    ref, _ = await client.start(declaration())
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    error = release_action(state).error
    assert error is not None and error.code == "DeploymentFailed"
    assert f"{APP}/{GROUP} Failed: HEALTH_CONSTRAINTS: The overall deployment failed" in error.message, error.message
    assert len(ours(codedeploy)) == 1  # a failed deployment is not created again
    assert release_action(state).external_url == ours(codedeploy)[0]  # status names the failed deployment


async def test_stopping_the_action_stops_the_deployment_with_rollback(
    client: ConveyorClient, codedeploy: CodeDeployScript
) -> None:
    codedeploy.hold = True
    ref, _ = await client.start(declaration())
    await wait_for(lambda: len(ours(codedeploy)) == 1, 30, "the deployment to be created")
    await client.stop(ref, reason="enough", abandon=True)
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status in (ExecutionStatus.STOPPED, ExecutionStatus.CANCELLED), state.status
    await wait_for(lambda: bool(codedeploy.stopped), 10, "StopDeployment")
    assert codedeploy.stopped == [(ours(codedeploy)[0], True)]


async def test_codedeploy_to_ecs_registers_the_task_definition_with_the_image_and_deploys_its_appspec(
    client: ConveyorClient, codedeploy: CodeDeployScript, aws: Aws
) -> None:
    """Contract test: `<IMAGE1_NAME>` became the ImageURI of imageDetail.json in the registered task definition,
    and the AppSpecContent revision names that task definition's ARN."""
    ref, _ = await client.start(declaration("CodeDeployToECS"))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (deployment_id,) = ours(codedeploy)
    assert release_action(state).output_variables == {"DeploymentId": deployment_id}
    revision = CodeDeployScript.deployment(deployment_id).revision
    assert revision["revisionType"] == "AppSpecContent"
    content = revision["appSpecContent"]["content"]
    arn = yaml.safe_load(content)["Resources"][0]["TargetService"]["Properties"]["TaskDefinition"]
    assert arn.startswith("arn:aws:ecs:") and ":task-definition/web:" in arn
    import hashlib

    assert revision["appSpecContent"]["sha256"] == hashlib.sha256(content.encode()).hexdigest()
    registered = aws.client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert registered["containerDefinitions"][0]["image"] == IMAGE
    assert len(aws.client("ecs").list_task_definitions()["taskDefinitionArns"]) == 1


async def test_a_codedeploy_to_ecs_failure_names_the_error(
    client: ConveyorClient, codedeploy: CodeDeployScript
) -> None:
    codedeploy.status, codedeploy.error_code, codedeploy.error_message = "Failed", "ECS_UPDATE_ERROR", "no capacity"
    ref, _ = await client.start(declaration("CodeDeployToECS"))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    error = release_action(state).error
    assert error is not None and "Failed: ECS_UPDATE_ERROR: no capacity" in error.message, error.message


async def test_stopping_a_codedeploy_to_ecs_action_stops_its_deployment(
    client: ConveyorClient, codedeploy: CodeDeployScript
) -> None:
    codedeploy.hold = True
    ref, _ = await client.start(declaration("CodeDeployToECS"))
    await wait_for(lambda: len(ours(codedeploy)) == 1, 30, "the deployment to be created")
    await client.stop(ref, reason="enough", abandon=True)
    await asyncio.wait_for(client.wait(ref), 60)
    await wait_for(lambda: bool(codedeploy.stopped), 10, "StopDeployment")
    assert codedeploy.stopped == [(ours(codedeploy)[0], True)]


async def test_a_failed_deployment_is_compensated_by_redeploying_the_previous_revision(
    client: ConveyorClient, codedeploy: CodeDeployScript, aws: Aws
) -> None:
    """rollbackStrategy COMPENSATE: the group's revision before the action is deployed again."""
    previous = earlier_success(aws, codedeploy, key="releases/v41.zip")
    codedeploy.status = "Failed"
    data = declaration(conveyor="{rollbackStrategy: COMPENSATE, retryWindowMinutes: 0}")
    data["stages"][1]["onFailure"] = {"result": "ROLLBACK"}
    ref, _ = await client.start(data)
    await wait_for(lambda: len(ours(codedeploy)) == 2, 60, "the compensation's deployment")
    failed, redeploy = ours(codedeploy)
    assert CodeDeployScript.deployment(redeploy).revision == CodeDeployScript.deployment(previous).revision
    assert "redeploy of " + previous in CodeDeployScript.deployment(redeploy).description
    assert failed != redeploy
    await asyncio.wait_for(client.wait(ref), 60)


async def test_an_action_abandoned_mid_deployment_is_compensated_from_the_revision_it_recorded(
    client: ConveyorClient, codedeploy: CodeDeployScript, aws: Aws
) -> None:
    """Contract test: the deployment stays InProgress and the execution is stopped with abandon: the cancelled
    activity hands back nothing, so the compensation (the stage rolls back on failure, and this is its first release)
    reads the previous revision from the attempt record written before CreateDeployment and redeploys it."""
    previous = earlier_success(aws, codedeploy, key="releases/v7.zip")
    codedeploy.hold = True
    data = declaration()
    data["stages"][1]["onFailure"] = {"result": "ROLLBACK"}
    ref, _ = await client.start(data)
    await wait_for(lambda: len(ours(codedeploy)) == 1, 30, "the deployment to be created")
    await client.stop(ref, reason="wrong release", abandon=True)
    for _ in range(300):
        if release_action(await client.state(ref)).status == ActionStatus.ABANDONED:
            break
        await asyncio.sleep(0.1)
    codedeploy.release.set()  # the compensation's deployment may end
    state = await asyncio.wait_for(client.wait(ref, interval=0.2), 60)
    assert state.status == ExecutionStatus.STOPPED, state.status_summary
    action = release_action(state)
    assert action.status == ActionStatus.ABANDONED and action.compensation_artifacts == []  # nothing came back
    assert action.compensation is not None and action.compensation.status == "Succeeded", action.compensation
    abandoned, redeploy = ours(codedeploy)
    assert codedeploy.stopped == [(abandoned, True)]
    assert CodeDeployScript.deployment(redeploy).revision == CodeDeployScript.deployment(previous).revision
    assert "redeploy of " + previous in CodeDeployScript.deployment(redeploy).description


async def test_a_local_artifact_store_is_refused_with_what_to_set(
    temporal_client: Client, settings: Settings, tmp_path: Path, codedeploy: CodeDeployScript
) -> None:
    offline = settings.model_copy(update={"data_dir": tmp_path / "data", "codedeploy_poll_seconds": POLL_SECONDS})
    async with build_worker(temporal_client, offline):
        conveyor = ConveyorClient(temporal_client, offline)
        ref, _ = await conveyor.start(declaration())
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    error = release_action(state).error
    assert error is not None and "artifact store is local: set CONVEYOR_ARTIFACT_STORE=s3://" in error.message
    assert codedeploy.created == []


async def test_a_worker_killed_mid_deployment_is_followed_by_one_that_follows_the_same_deployment(
    temporal_client: Client,
    worker_settings: Settings,
    codedeploy: CodeDeployScript,
    aws: Aws,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in aws.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONVEYOR_AWS", "true")
    monkeypatch.setenv("CONVEYOR_CODEDEPLOY_POLL_SECONDS", str(POLL_SECONDS))
    codedeploy.hold = True
    client = ConveyorClient(temporal_client, worker_settings)
    data = declaration()
    data["conveyor"] = {"heartbeatTimeoutSeconds": 2}
    first = start_worker_process(worker_settings, tmp_path / "worker1.log")
    try:
        ref, _ = await client.start(data)
        await wait_for(lambda: len(ours(codedeploy)) == 1, 60, "the deployment to be created")
        await asyncio.sleep(0.5)  # a heartbeat or two with the deployment id
        first.kill()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    second = start_worker_process(worker_settings, tmp_path / "worker2.log")
    try:
        await asyncio.sleep(3)  # the lost worker's heartbeat timeout; the new worker follows, still InProgress
        codedeploy.release.set()
        state = await asyncio.wait_for(client.wait(ref), 90)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (deployment_id,) = ours(codedeploy)  # CreateDeployment served once
    assert release_action(state).output_variables["DeploymentId"] == deployment_id
    log = (worker_settings.logs_dir / ref.pipeline_name / ref.execution_id / "Deploy" / "Release.log").read_text()
    assert f"following deployment {deployment_id}" in log or f"found deployment {deployment_id}" in log, log


@pytest.mark.parametrize(
    ("provider", "configuration", "problem"),
    [
        ("CodeDeploy", {"DeploymentConfigName": "all at once"}, ("DeploymentConfigName", "is not a deployment")),
        ("CodeDeployToECS", {"TaskDefinitionTemplateArtifact": "Nope"}, ("TaskDefinitionTemplateArtifact", "names "
         "artifact 'Nope', which is not an input artifact of the action (Templates, Image)")),
        ("CodeDeployToECS", {"Image2ContainerName": "IMAGE2_NAME"}, ("Image2ArtifactName", "is required with "
         "Image2ContainerName")),
        ("CodeDeployToECS", {"Image1ContainerName": "<IMAGE1_NAME>"}, ("Image1ContainerName", "is not a placeholder")),
    ],
)  # fmt: skip
def test_validation_names_the_key_and_what_to_change(
    provider: str, configuration: dict[str, str], problem: tuple[str, str]
) -> None:
    report = validate_pipeline(declaration(provider, configuration))
    key, message = problem
    found = [(i.path, i.message) for i in report.errors]
    assert any(path.endswith(f"configuration.{key}") and message in text for path, text in found), found


def test_a_missing_group_key_is_named() -> None:
    data = declaration()
    del data["stages"][1]["actions"][0]["configuration"]["DeploymentGroupName"]
    found = [(i.path, i.message) for i in validate_pipeline(data).errors]
    assert any("DeploymentGroupName" in path + text for path, text in found), found


def activity_provider(tmp_path: Path) -> tuple[Any, Any]:
    """The CodeDeploy activity on an S3 store, and the input of an attempt of one action (run in ActivityEnvironment:
    no heartbeat details, as a retried activity whose worker died before its first heartbeat)."""
    from activities.providers.codedeploy import CodeDeployProvider
    from conveyor.aws.identity import AwsIdentity
    from conveyor.model import ActionContext
    from conveyor.providers.codedeploy import CodeDeployInput, attempt_marker
    from conveyor.settings import S3Location
    from conveyor.stores.artifacts import ConfiguredArtifactStore

    settings = Settings(
        data_dir=tmp_path / "data", artifact_store=S3Location(bucket=BUCKET, prefix="a"), codedeploy_poll_seconds=0.01
    )
    store = ConfiguredArtifactStore(settings)
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "appspec.yml").write_text(APPSPEC_YML)
    bundle = store.put("Bundle", tmp_path / "bundle", ["appspec.yml"])
    context = ActionContext(pipeline_name="p", execution_id="e1", stage_name="Deploy", action_name="Release")

    def attempt(number: int, timeout_seconds: int = 3600) -> CodeDeployInput:
        numbered = context.model_copy(update={"action_attempt": number})
        return CodeDeployInput(
            context=numbered, identity=AwsIdentity(session_name="conveyor-test"), application=APP,
            deployment_group=GROUP, marker=attempt_marker(numbered), bundle=bundle, timeout_seconds=timeout_seconds,
        )  # fmt: skip

    return CodeDeployProvider(settings, store), attempt


async def test_a_retried_activity_without_a_heartbeat_finds_the_attempts_deployment_by_its_description(
    codedeploy: CodeDeployScript, aws: Aws, tmp_path: Path
) -> None:
    """Contract test: CodeDeploy has no idempotency token. An activity retried after its worker died before it could
    heartbeat the deployment id finds the deployment by the attempt's marker in the description: CreateDeployment
    served once; another attempt (a declared retry) gets its own deployment."""
    from temporalio.testing import ActivityEnvironment

    provider, attempt = activity_provider(tmp_path)
    first = await ActivityEnvironment().run(provider.codedeploy, attempt(1))
    again = await ActivityEnvironment().run(provider.codedeploy, attempt(1))
    assert first.output_variables == again.output_variables
    assert len(codedeploy.created) == 1
    other = await ActivityEnvironment().run(provider.codedeploy, attempt(2))
    assert other.output_variables != first.output_variables and len(codedeploy.created) == 2


async def test_a_deployment_past_the_actions_timeout_is_stopped_with_rollback(
    codedeploy: CodeDeployScript, aws: Aws, tmp_path: Path
) -> None:
    from temporalio.testing import ActivityEnvironment

    provider, attempt = activity_provider(tmp_path)
    codedeploy.hold = True
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(provider.codedeploy, attempt(1, timeout_seconds=0))
    assert raised.value.type == "ActionTimeout" and "within the action's timeout (0 s)" in raised.value.message
    assert codedeploy.stopped == [(codedeploy.created[0], True)]


async def test_a_lambda_application_gets_the_artifacts_appspec_as_appspec_content(
    client: ConveyorClient, codedeploy: CodeDeployScript, aws: Aws
) -> None:
    """Contract test: CodeDeploy takes no zip for Lambda; the artifact's appspec.yml is sent as AppSpecContent."""
    lambda_app = aws.client("codedeploy")
    lambda_app.create_application(applicationName="fn", computePlatform="Lambda")
    lambda_app.create_deployment_group(
        applicationName="fn", deploymentGroupName="fn-live", serviceRoleArn="arn:aws:iam::123456789012:role/cd"
    )
    ref, _ = await client.start(declaration(configuration={"ApplicationName": "fn", "DeploymentGroupName": "fn-live"}))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (deployment_id,) = ours(codedeploy)
    revision = CodeDeployScript.deployment(deployment_id).revision
    assert revision["revisionType"] == "AppSpecContent" and revision["appSpecContent"]["content"] == APPSPEC_YML


async def test_a_missing_deployment_group_fails_the_action_naming_it(
    client: ConveyorClient, codedeploy: CodeDeployScript
) -> None:
    ref, _ = await client.start(declaration(configuration={"DeploymentGroupName": "nope"}))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    error = release_action(state).error
    assert error is not None and f"deployment group {APP}/nope does not exist (check ApplicationName" in error.message
    assert codedeploy.created == []


async def test_a_plain_task_definition_gets_the_image_in_the_container_named_like_the_placeholder(
    client: ConveyorClient, codedeploy: CodeDeployScript, aws: Aws
) -> None:
    """Beyond CodePipeline: without a `<web>` placeholder the container named `web` (Image1ContainerName) gets the
    image, so a task definition copied from describe-task-definition works as it is."""
    ref, _ = await client.start(declaration("CodeDeployToECS", {"Image1ContainerName": "web"}))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (arn,) = aws.client("ecs").list_task_definitions()["taskDefinitionArns"]
    registered = aws.client("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]
    assert registered["containerDefinitions"][0]["image"] == IMAGE


async def test_a_task_definition_without_the_placeholder_or_the_container_is_refused_naming_both(
    client: ConveyorClient, codedeploy: CodeDeployScript
) -> None:
    ref, _ = await client.start(declaration("CodeDeployToECS", {"Image1ContainerName": "api"}))
    state = await asyncio.wait_for(client.wait(ref), 60)
    assert state.status == ExecutionStatus.FAILED
    error = release_action(state).error
    assert error is not None
    assert "taskdef.json of artifact 'Templates' has neither <api> nor a container named 'api' (it has web)" in (
        error.message
    ), error.message
    assert codedeploy.created == []
