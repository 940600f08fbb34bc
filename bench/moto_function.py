"""The Lambda function the `invoke` scenario plays, run inside the moto server process: `python -m bench.moto_function
-H 127.0.0.1 -p PORT` is moto's server with its simple (Docker-free) Lambda backend taught one function, and its
ECS backend taught to play deployments.

moto's simple backend never runs code. Here an asynchronous invoke (`Event`) of `JOB_FUNCTION` behaves as a
CodePipeline job function that reports at once: the invoke is answered 202 as Lambda does, and a thread reads the
job id from the event the engine sent and sends PutJobSuccessResult to the job listener named by
`BENCH_JOB_LISTENER` (AWS JSON 1.1, as boto3's `codepipeline` client sends it). Every other invoke is moto's own.

ECS (the bench's play, as tests/aws_contract.py's EcsScript does for the tests): moto's UpdateService changes the
service's task definition but adds no deployment and never completes one. Here an UpdateService that changes the
task definition starts a PRIMARY deployment IN_PROGRESS (the previous one ACTIVE), and the DescribeServices after
the next one (`ECS_POLLS_TO_COMPLETE`) finds it COMPLETED, the older ones drained.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.request
from typing import Any

JOB_FUNCTION = "bench-job"
LISTENER_ENV = "BENCH_JOB_LISTENER"


def put_job_success(listener: str, job_id: str) -> None:
    """PutJobSuccessResult for `job_id` at the job listener; raises unless it is accepted."""
    body = json.dumps({"jobId": job_id, "executionDetails": {"summary": "bench function done"}}).encode()
    request = urllib.request.Request(
        listener,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "CodePipeline_20150709.PutJobSuccessResult",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"PutJobSuccessResult answered {response.status}")


def _install(listener: str) -> None:
    from moto.awslambda_simple.models import LambdaSimpleBackend

    original = LambdaSimpleBackend.invoke

    def invoke(
        backend: LambdaSimpleBackend, function_name: str, qualifier: Any, body: Any, headers: Any, response: Any
    ) -> Any:
        answer = original(backend, function_name, qualifier, body, headers, response)
        if function_name.rsplit(":", 1)[-1] == JOB_FUNCTION and headers.get("X-Amz-Invocation-Type") == "Event":
            job_id = json.loads(body)["CodePipeline.job"]["id"]
            threading.Thread(target=put_job_success, args=(listener, job_id), daemon=True).start()
        return answer

    LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign]


ECS_POLLS_TO_COMPLETE = 2  # DescribeServices answers before a deployment is COMPLETED (the first still IN_PROGRESS)


def _install_ecs_play() -> None:
    """The bench's ECS play (see the module's docstring)."""
    import uuid

    from moto.core.utils import utcnow
    from moto.ecs.models import EC2ContainerServiceBackend

    original_update, original_describe = (
        EC2ContainerServiceBackend.update_service,
        EC2ContainerServiceBackend.describe_services,
    )
    playing: dict[str, int] = {}  # deployment id -> DescribeServices answered since it started

    def update_service(backend: EC2ContainerServiceBackend, properties: dict[str, Any]) -> Any:
        changing = properties.get("task_definition")  # moto pops it
        service = original_update(backend, properties)
        if changing:
            for deployment in service.deployments:
                deployment["status"] = "ACTIVE"
            deployment_id = f"ecs-svc/{uuid.uuid4().int % 10**19}"
            service.deployments.insert(0, {
                **(service.deployments[0] if service.deployments else {}), "id": deployment_id, "status": "PRIMARY",
                "taskDefinition": service.task_definition, "rolloutState": "IN_PROGRESS", "runningCount": 0,
                "pendingCount": service.desired_count, "desiredCount": service.desired_count,
                "createdAt": utcnow(), "updatedAt": utcnow(),
            })  # fmt: skip
            playing[deployment_id] = 0
        return service

    def describe_services(backend: EC2ContainerServiceBackend, *args: Any, **kwargs: Any) -> Any:
        services, failures = original_describe(backend, *args, **kwargs)
        for service in services:
            for deployment in list(service.deployments):
                if deployment["id"] not in playing:
                    continue
                playing[deployment["id"]] += 1
                if playing[deployment["id"]] >= ECS_POLLS_TO_COMPLETE:
                    del playing[deployment["id"]]
                    deployment.update(rolloutState="COMPLETED", runningCount=deployment["desiredCount"], pendingCount=0)
                    service.deployments[:] = [deployment]
        return services, failures

    EC2ContainerServiceBackend.update_service = update_service  # type: ignore[method-assign]
    EC2ContainerServiceBackend.describe_services = describe_services  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    from moto.server import main as moto_main

    _install(os.environ[LISTENER_ENV])
    _install_ecs_play()
    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
