"""The Lambda function the `invoke` scenario plays, run inside the moto server process: `python -m bench.moto_function
-H 127.0.0.1 -p PORT` is moto's server with its simple (Docker-free) Lambda backend taught one function.

moto's simple backend never runs code. Here an asynchronous invoke (`Event`) of `JOB_FUNCTION` behaves as a
CodePipeline job function that reports at once: the invoke is answered 202 as Lambda does, and a thread reads the
job id from the event the engine sent and sends PutJobSuccessResult to the job listener named by
`BENCH_JOB_LISTENER` (AWS JSON 1.1, as boto3's `codepipeline` client sends it). Every other invoke is moto's own.
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


def main(argv: list[str]) -> None:
    from moto.server import main as moto_main

    _install(os.environ[LISTENER_ENV])
    moto_main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
