"""The ECS provider against a real worker and moto's ECS. Contract tests: moto's ECS adds no deployment on
UpdateService and never moves one, so tests/aws_contract.py's EcsScript plays the deployments (completing, failing,
rolled back by the circuit breaker, held while a worker is SIGKILLed) and counts the requests moto served."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.client import Client

from activities.ecs.images import ImageDefinitionsError, parse_image_definitions
from conveyor.client import ConveyorClient
from conveyor.model import ActionState, ExecutionState, ExecutionStatus
from conveyor.settings import Settings
from conveyor.spec import validate_pipeline
from conveyor.worker import build_worker
from tests.aws import Aws
from tests.aws_contract import ECS_FAILED, ECS_HOLD, ECS_ROLLBACK, EcsScript
from tests.helpers import pipeline
from tests.test_durability import start_worker_process, wait_for

POLL_SECONDS = 0.1
CLUSTER, SERVICE, FAMILY = "prod", "web", "web"
OLD_WEB, OLD_SIDECAR = "111122223333.dkr.ecr.us-east-1.amazonaws.com/web:1", "public.ecr.aws/envoy:1"
NEW_WEB = "111122223333.dkr.ecr.us-east-1.amazonaws.com/web:2"
IMAGES = [{"name": "web", "imageUri": NEW_WEB}]


@pytest.fixture
def worker_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"data_dir": tmp_path / "data", "ecs_poll_seconds": POLL_SECONDS})


@pytest.fixture
def script(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> EcsScript:
    return EcsScript().install(monkeypatch)


@pytest_asyncio.fixture
async def client(temporal_client: Client, worker_settings: Settings, aws: Aws) -> AsyncIterator[ConveyorClient]:
    async with build_worker(temporal_client, worker_settings):
        yield ConveyorClient(temporal_client, worker_settings)


def create_service(aws: Aws, script: EcsScript) -> str:
    """A cluster and a service on revision 1 of a two-container task definition with settings to keep."""
    ecs = aws.client("ecs")
    ecs.create_cluster(clusterName=CLUSTER)
    arn: str = ecs.register_task_definition(
        family=FAMILY,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        executionRoleArn="arn:aws:iam::123456789012:role/exec",
        containerDefinitions=[
            {
                "name": "web",
                "image": OLD_WEB,
                "essential": True,
                "portMappings": [{"containerPort": 8080}],
                "environment": [{"name": "MODE", "value": "prod"}],
            },
            {"name": "sidecar", "image": OLD_SIDECAR, "essential": False, "command": ["serve", "--quiet"]},
        ],
        tags=[{"key": "team", "value": "payments"}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster=CLUSTER, serviceName=SERVICE, taskDefinition=arn, desiredCount=2)
    script.calls.clear()  # only the action's requests count
    return arn


def declaration(images: Any = None, *, configuration: dict[str, str] | None = None, then: str = "") -> dict[str, Any]:
    text = json.dumps(IMAGES if images is None else images) if not isinstance(images, str) else images
    config = {"ClusterName": CLUSTER, "ServiceName": SERVICE, **(configuration or {})}
    return pipeline(
        f"""
name: ecs-{uuid.uuid4().hex[:8]}
conveyor: {{heartbeatTimeoutSeconds: 2}}
stages:
  - name: Build
    actions:
      - name: Images
        provider: Commands
        commands: [{json.dumps(f"printf '%s' '{text}' > {config.get('FileName', 'imagedefinitions.json')}")}]
        outputArtifacts: [{{name: Defs, files: ["*.json"]}}]
  - name: Deploy
    onFailure: {{result: ROLLBACK}}
    actions:
      - name: Web
        provider: ECS
        namespace: Ecs
        configuration: {json.dumps(config)}
        inputArtifacts: [{{name: Defs}}]
{then}
"""
    )


async def finished(client: ConveyorClient, data: dict[str, Any]) -> ExecutionState:
    ref, _ = await client.start(data)
    return await asyncio.wait_for(client.wait(ref, interval=0.1), 60)


def deploy(state: ExecutionState) -> ActionState:
    stage = state.stage("Deploy")
    assert stage is not None
    return next(a for a in stage.actions if a.action_name == "Web")


def service_task_definition(aws: Aws) -> str:
    found: str = aws.client("ecs").describe_services(cluster=CLUSTER, services=[SERVICE])["services"][0][
        "taskDefinition"
    ]
    return found


ECS_OWN = {"taskDefinitionArn", "revision", "status", "registeredAt", "registeredBy", "requiresAttributes",
           "compatibilities", "deregisteredAt"}  # fmt: skip


def registrable(definition: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in definition.items() if k not in ECS_OWN}


async def test_a_deployment_completes_with_only_the_images_changed(
    client: ConveyorClient, aws: Aws, script: EcsScript
) -> None:
    """Contract test (EcsScript: the deployment completes after a poll)."""
    old = create_service(aws, script)
    state = await finished(client, declaration())
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    ecs = aws.client("ecs")
    new = service_task_definition(aws)
    assert new.endswith(f"task-definition/{FAMILY}:2")
    web = deploy(state)
    assert web.output_variables["TaskDefinitionArn"] == new
    assert web.output_variables["DeploymentId"] == script.deployments(CLUSTER, SERVICE)[0]["id"]
    before = ecs.describe_task_definition(taskDefinition=old, include=["TAGS"])
    after = ecs.describe_task_definition(taskDefinition=new, include=["TAGS"])
    # Everything but the web container's image is kept.
    expected = registrable(before["taskDefinition"])
    expected["containerDefinitions"][0]["image"] = NEW_WEB
    assert registrable(after["taskDefinition"]) == expected
    assert after["taskDefinition"]["containerDefinitions"][1]["image"] == OLD_SIDECAR
    tags = {t["key"]: t["value"] for t in after["tags"]}
    assert tags["team"] == "payments" and tags["conveyor:previous-task-definition"] == old
    assert script.count("RegisterTaskDefinition") == 1 and script.count("UpdateService") == 1
    assert script.count("ListTaskDefinitions") == 0  # a first try has nothing registered earlier to look for


async def test_several_containers_change_and_a_failed_deployment_fails_the_action(
    client: ConveyorClient, aws: Aws, script: EcsScript
) -> None:
    """Contract test (EcsScript: the rollout ends FAILED, nothing rolls back)."""
    create_service(aws, script)
    script.outcomes.append(ECS_FAILED)
    images = [*IMAGES, {"name": "sidecar", "imageUri": "public.ecr.aws/envoy:2"}]
    state = await finished(client, declaration(images))
    assert state.status == ExecutionStatus.FAILED
    web = deploy(state)
    assert web.error is not None and "FAILED (tasks failed to start)" in web.error.message, web.error
    (container_web, container_sidecar) = aws.client("ecs").describe_task_definition(taskDefinition=f"{FAMILY}:2")[
        "taskDefinition"
    ]["containerDefinitions"]
    assert (container_web["image"], container_sidecar["image"]) == (NEW_WEB, "public.ecr.aws/envoy:2")


async def test_a_circuit_breaker_rollback_fails_the_action_within_seconds(
    client: ConveyorClient, aws: Aws, script: EcsScript
) -> None:
    """Contract test (EcsScript: the circuit breaker fails the deployment and rolls back to revision 1), with the
    default DeploymentTimeout of an hour: the action fails at the next poll."""
    old = create_service(aws, script)
    script.outcomes.append(ECS_ROLLBACK)
    started = time.monotonic()
    state = await finished(client, declaration())
    assert state.status == ExecutionStatus.FAILED
    web = deploy(state)
    assert web.error is not None
    assert "circuit breaker" in web.error.message and f"rolling the service back to {old}" in web.error.message
    assert time.monotonic() - started < 20
    assert service_task_definition(aws) == old
    # The compensation finds the service already back: no further UpdateService.
    assert web.compensation is not None and web.compensation.status == "Succeeded"
    assert script.count("UpdateService") == 1


async def test_compensation_puts_the_previous_task_definition_back(
    client: ConveyorClient, aws: Aws, script: EcsScript
) -> None:
    """Contract test (EcsScript: both deployments complete): a later action of the stage fails, the stage rolls
    back, the service returns to revision 1."""
    old = create_service(aws, script)
    then = """      - name: Check
        provider: Commands
        runOrder: 2
        commands: ["exit 1"]"""
    state = await finished(client, declaration(then=then))
    assert state.status == ExecutionStatus.FAILED
    web = deploy(state)
    assert web.compensation is not None and web.compensation.status == "Succeeded", web.compensation
    assert service_task_definition(aws) == old
    assert script.deployments(CLUSTER, SERVICE)[0]["taskDefinition"] == old
    assert script.count("RegisterTaskDefinition") == 1 and script.count("UpdateService") == 2


async def test_a_worker_killed_mid_deployment_is_followed_by_one_that_follows_the_same_deployment(
    temporal_client: Client,
    worker_settings: Settings,
    aws: Aws,
    script: EcsScript,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Contract test (EcsScript: the deployment is held IN_PROGRESS while the first worker is SIGKILLed)."""
    for name, value in aws.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CONVEYOR_ECS_POLL_SECONDS", str(POLL_SECONDS))
    create_service(aws, script)
    script.outcomes.append(ECS_HOLD)
    client = ConveyorClient(temporal_client, worker_settings)
    first = start_worker_process(worker_settings, tmp_path / "worker1.log")
    try:
        ref, _ = await client.start(declaration())
        await wait_for(lambda: len(script.deployments(CLUSTER, SERVICE)) == 2, 60, "the deployment to start")
        await asyncio.sleep(0.5)  # a few polls of the held deployment
        first.kill()
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    second = start_worker_process(worker_settings, tmp_path / "worker2.log")
    try:
        script.release.set()
        state = await asyncio.wait_for(client.wait(ref), 90)
    finally:
        second.terminate()
        second.wait(15)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert script.count("RegisterTaskDefinition") == 1 and script.count("UpdateService") == 1
    log = (worker_settings.logs_dir / ref.pipeline_name / ref.execution_id / "Deploy" / "Web.log").read_text()
    assert "following" in log or "found" in log, log


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('[{"name": "web"}]', "imagedefinitions.json of artifact 'Defs' entry 1 ('web') has no \"imageUri\""),
        ("{}", "imagedefinitions.json of artifact 'Defs' must be a non-empty JSON list"),
        (
            json.dumps([*IMAGES, {"name": "worker", "imageUri": "x:1"}]),
            "imagedefinitions.json names container 'worker' that task definition",
        ),
    ],
)
async def test_a_bad_imagedefinitions_file_fails_the_action_naming_the_file_and_entry(
    client: ConveyorClient, aws: Aws, script: EcsScript, content: str, problem: str
) -> None:
    create_service(aws, script)
    state = await finished(client, declaration(content))
    assert state.status == ExecutionStatus.FAILED
    web = deploy(state)
    assert web.error is not None and problem in web.error.message, web.error.message
    assert "Traceback" not in web.error.message
    assert script.count("RegisterTaskDefinition") == 0 and script.count("UpdateService") == 0


def test_image_definitions_are_checked_entry_by_entry() -> None:
    assert parse_image_definitions(b'[{"name": "a", "imageUri": "r/a:1"}, {"name": "b", "imageUri": "r/b:2"}]',
                                   "f.json") == {"a": "r/a:1", "b": "r/b:2"}  # fmt: skip
    for text, message in [
        (b"not json", "f.json is not JSON"),
        (b'[{"name": "a", "imageUri": "x"}, {"name": "a", "imageUri": "y"}]', "entry 2 ('a') names container 'a'"),
        (b'[{"imageUri": "x"}]', 'f.json entry 1 has no "name"'),
        (b"[1]", "f.json entry 1 is not an object"),
        (b" " * (100 * 1024 + 1), "CodePipeline's limit is 100 KB"),
    ]:
        with pytest.raises(ImageDefinitionsError) as raised:
            parse_image_definitions(text, "f.json")
        assert message in str(raised.value)


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    return [(i.path, i.message) for i in validate_pipeline(data).errors]


def test_validation_names_the_key_and_what_to_change() -> None:
    found = problems(declaration(configuration={"DeploymentTimeout": "0"}))
    assert any(p.endswith("configuration.DeploymentTimeout") and "1 to 3600" in m for p, m in found), found
    found = problems(declaration(configuration={"DeploymentTimeout": "soon"}))
    assert any(p.endswith("configuration.DeploymentTimeout") and "whole number" in m for p, m in found), found
    found = problems(declaration(configuration={"FileName": "../defs.json"}))
    assert any(p.endswith("configuration.FileName") and "inside the input artifact" in m for p, m in found), found
    data = declaration()
    del data["stages"][1]["actions"][0]["configuration"]["ServiceName"]
    assert any("ServiceName" in p + m for p, m in problems(data)), problems(data)
    assert not problems(declaration(configuration={"DeploymentTimeout": "15"}))


EXAMPLE = Path(__file__).parent.parent / "examples" / "ecs-deploy" / "pipeline.yaml"


async def test_the_shipped_example_deploys_the_codebuild_written_image(
    client: ConveyorClient, aws: Aws, script: EcsScript
) -> None:
    """Contract test (EcsScript: the deployment completes): examples/ecs-deploy as shipped, the cluster and service
    created here."""
    ecs = aws.client("ecs")
    ecs.create_cluster(clusterName="prod")
    ecs.register_task_definition(
        family="web",
        containerDefinitions=[{"name": "web", "image": "111122223333.dkr.ecr.us-east-1.amazonaws.com/web:1",
                               "memory": 256}],
    )  # fmt: skip
    ecs.create_service(cluster="prod", serviceName="web", taskDefinition="web", desiredCount=1)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["name"] = f"{data['name']}-{uuid.uuid4().hex[:8]}"  # executions of tests never shared
    assert validate_pipeline(data).ok
    ref, _ = await client.start(data, variables={"ImageTag": "7"})
    state = await asyncio.wait_for(client.wait(ref, interval=0.1), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    (container,) = ecs.describe_task_definition(taskDefinition="web:2")["taskDefinition"]["containerDefinitions"]
    assert container["image"] == "111122223333.dkr.ecr.us-east-1.amazonaws.com/web:7"
    assert ecs.describe_services(cluster="prod", services=["web"])["services"][0]["taskDefinition"].endswith("web:2")
