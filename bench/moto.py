"""A moto server subprocess on loopback for the scenarios that call AWS (handoff's S3 case, invoke).

A subprocess, so moto's request handling does not share this process's GIL with the side being measured. While the
context is open, this process's boto3 is pointed at it (`AWS_ENDPOINT_URL`, region, test credentials).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from conveyor.devserver import free_port

REGION = "us-east-1"


@contextlib.contextmanager
def moto_server(work: Path, *, module: str = "moto.server", environment: dict[str, str] | None = None) -> Iterator[str]:
    """Start `python -m <module> -H 127.0.0.1 -p <port>` (moto's server, or a module that wraps it) and yield its
    endpoint; its log is `work/moto.log`. `MOTO_PORT` is set for it (Step Functions' interpreter calls back there)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    log = (work / "moto.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        env={**os.environ, **(environment or {}), "MOTO_PORT": str(port)},
    )
    saved = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"moto server did not start (see {work / 'moto.log'})") from None
                time.sleep(0.1)
        os.environ.update(env)
        yield endpoint
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        process.terminate()
        process.wait(timeout=10)
        log.close()


def moto_config(endpoint: str, config: bytes) -> None:
    """`POST /moto-api/config` (e.g. Lambda without Docker, Step Functions executing machines)."""
    request = urllib.request.Request(
        endpoint + "/moto-api/config", data=config, method="POST", headers={"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).close()
