"""An ECS service as the ECS provider sees it: its current task definition, the revision an action attempt registered
(found by its tag), and where a deployment stands. Every call goes through `aws_errors`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from activities.aws.session import aws_errors, refused
from activities.ecs.images import tag
from conveyor.providers.ecs import ATTEMPT_TAG, PREVIOUS_TAG

if TYPE_CHECKING:
    from mypy_boto3_ecs import ECSClient

# A registered revision is among the family's newest: another deploy would have to register this many in between.
NEWEST_REVISIONS = 20


class Verdict(StrEnum):
    IN_PROGRESS = "in progress"
    COMPLETED = "completed"
    FAILED = "failed"  # ECS failed it (its circuit breaker, or a failed rollout)
    ROLLED_BACK = "rolled back"  # a newer deployment runs the previous task definition
    SUPERSEDED = "superseded"  # a newer deployment runs another task definition


@dataclass(frozen=True)
class Registered:
    """The revision an action attempt registered, and the one the service ran before it."""

    arn: str
    previous: str


@dataclass(frozen=True)
class Progress:
    verdict: Verdict
    deployment_id: str | None
    detail: str  # what a log line or an error says about it


class EcsService:
    def __init__(self, client: ECSClient, cluster: str, service: str, action: str, role: str | None) -> None:
        self.client, self.cluster, self.name = client, cluster, service
        self.action, self.role = action, role

    @contextmanager
    def errors(self, call: str, target: str | None = None) -> Iterator[None]:
        with aws_errors(self.action, call, self.role, target=target or f"service {self.name} of {self.cluster}"):
            yield

    async def _call(self, call: str, method: str, target: str | None = None, **kwargs: Any) -> Any:
        with self.errors(call, target):
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)

    async def describe(self) -> dict[str, Any]:
        """The service; refused when missing, inactive or not deployed by ECS itself."""
        answer = await self._call(
            "ecs:DescribeServices", "describe_services", cluster=self.cluster, services=[self.name]
        )
        services = [s for s in answer.get("services", []) if s.get("status") != "INACTIVE"]
        if not services:
            raise refused(
                f"action '{self.action}': ECS service '{self.name}' not found in cluster '{self.cluster}' "
                "(check ClusterName and ServiceName, and the action's region and role)",
                "AwsNotFound",
            )
        service: dict[str, Any] = services[0]
        controller = (service.get("deploymentController") or {}).get("type", "ECS")
        if controller != "ECS":
            raise refused(
                f"action '{self.action}': service '{self.name}' is deployed by {controller}, not by ECS's rolling "
                "update: use the CodeDeployToECS provider for a blue/green service"
            )
        return service

    async def task_definition(self, arn: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
        answer = await self._call(
            "ecs:DescribeTaskDefinition", "describe_task_definition", arn, taskDefinition=arn, include=["TAGS"]
        )
        return answer["taskDefinition"], list(answer.get("tags") or [])

    async def find_registered(self, family: str, marker: str) -> Registered | None:
        """The revision of `family` tagged with this attempt's marker, among its newest."""
        answer = await self._call(
            "ecs:ListTaskDefinitions", "list_task_definitions", f"family {family}",
            familyPrefix=family, sort="DESC", maxResults=100,
        )  # fmt: skip
        arns = [a for a in answer.get("taskDefinitionArns", []) if _family(a) == family]
        for arn in sorted(arns, key=_revision, reverse=True)[:NEWEST_REVISIONS]:
            _, tags = await self.task_definition(arn)
            previous = tag(tags, PREVIOUS_TAG)
            if tag(tags, ATTEMPT_TAG) == marker and previous:
                return Registered(arn=arn, previous=previous)
        return None

    async def register(self, request: dict[str, Any]) -> str:
        answer = await self._call(
            "ecs:RegisterTaskDefinition", "register_task_definition", f"family {request['family']}", **request
        )
        arn: str = answer["taskDefinition"]["taskDefinitionArn"]
        return arn

    async def update(self, task_definition: str) -> dict[str, Any]:
        answer = await self._call(
            "ecs:UpdateService", "update_service",
            cluster=self.cluster, service=self.name, taskDefinition=task_definition,
        )  # fmt: skip
        service: dict[str, Any] = answer["service"]
        return service


def family_of(arn: str) -> str:
    return _family(arn)


def _family(arn: str) -> str:
    return arn.rsplit("/", 1)[-1].rsplit(":", 1)[0]


def _revision(arn: str) -> int:
    tail = arn.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def deployment_of(service: dict[str, Any], task_definition: str) -> dict[str, Any] | None:
    """The newest deployment of `task_definition` (any state)."""
    found = [d for d in service.get("deployments", []) if d.get("taskDefinition") == task_definition]
    return max(found, key=lambda d: str(d.get("createdAt") or ""), default=None)


def progress(service: dict[str, Any], deployment_id: str | None, new: str, previous: str) -> Progress:
    """Where the deployment of `new` stands, judged from one DescribeServices answer.

    Fails as soon as ECS has given up on it: its rolloutState FAILED (the circuit breaker), or a newer PRIMARY
    deployment running the previous task definition (a rollback) or another one (a later deploy)."""
    deployments: list[dict[str, Any]] = service.get("deployments", [])
    ours = next((d for d in deployments if deployment_id and d.get("id") == deployment_id), None)
    if ours is None and deployment_id is None:
        ours = deployment_of(service, new)
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    found_id = ours.get("id") if ours else deployment_id
    if ours is None and deployment_id is None:
        return Progress(Verdict.IN_PROGRESS, None, "waiting for ECS to show the deployment")
    state = (ours or {}).get("rolloutState")
    reason = (ours or {}).get("rolloutStateReason") or ""
    newer = primary if primary is not None and primary.get("id") != found_id else None
    if ours is not None and state == "COMPLETED":
        return Progress(Verdict.COMPLETED, found_id, f"deployment {found_id} COMPLETED" + _why(reason))
    if newer is not None and newer.get("taskDefinition") == previous:
        return Progress(
            Verdict.ROLLED_BACK, found_id,
            f"deployment {found_id} {state or 'gone'}{_why(reason)}; ECS is rolling the service back to {previous} "
            f"(deployment {newer.get('id')}, circuit breaker)",
        )  # fmt: skip
    if state == "FAILED":
        return Progress(Verdict.FAILED, found_id, f"deployment {found_id} FAILED{_why(reason)}")
    if newer is not None:
        return Progress(
            Verdict.SUPERSEDED, found_id,
            f"deployment {found_id} was replaced by deployment {newer.get('id')} of {newer.get('taskDefinition')}",
        )  # fmt: skip
    if ours is None:
        return Progress(Verdict.IN_PROGRESS, found_id, f"deployment {found_id} not listed yet")
    counts = f"{ours.get('runningCount', 0)}/{ours.get('desiredCount', 0)} tasks running"
    return Progress(Verdict.IN_PROGRESS, found_id, f"deployment {found_id} {state or 'IN_PROGRESS'}, {counts}")


def _why(reason: str) -> str:
    return f" ({reason})" if reason else ""
