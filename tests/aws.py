"""AWS for the tests: one real moto server on loopback per test session, wiped before each test that uses it.

boto3 (in the test process, in an in-process worker, and in worker subprocesses given `aws.environment`) reaches it
through `AWS_ENDPOINT_URL`. Every touch of moto's internals (scripted outcomes for what moto cannot produce) belongs
in tests/aws_contract.py, and the tests using it are named contract tests.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass
class Aws:
    """A wiped moto server and the environment that points boto3 at it."""

    endpoint: str
    environment: dict[str, str] = field(default_factory=dict)

    def client(self, service: str, region: str = REGION, **kwargs: Any) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            **kwargs,
        )

    def post(self, path: str, body: bytes = b"", content_type: str = "application/json") -> bytes:
        """A call to moto's own API (`/moto-api/...`)."""
        request = urllib.request.Request(
            self.endpoint + path, data=body, method="POST", headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body_read: bytes = response.read()
            return body_read


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with moto_server() as endpoint:
        # Step Functions' interpreter (execute_state_machine) calls the services of Task states on this port.
        os.environ["MOTO_PORT"] = endpoint.rsplit(":", 1)[1]
        yield endpoint


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a port the OS picks as it binds (port 0): no race with another pytest-xdist worker."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Aws:
    """moto, wiped (every account), with this process's environment pointing boto3 at it."""
    environment = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_DEFAULT_REGION": REGION, **CREDENTIALS}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "MOTO_ACCOUNT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    found = Aws(endpoint=moto_endpoint, environment=environment)
    found.post("/moto-api/reset")
    return found
