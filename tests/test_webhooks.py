"""GitHub webhooks over real HTTP: signatures, trigger filters, redelivery, pull requests, health."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.worker import Worker

from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.devserver import EmbeddedServer, free_port
from conveyor.model import ExecutionStatus, TriggerType
from conveyor.service.app import create_app
from conveyor.service.github import WebhookSecrets, sign
from conveyor.settings import Settings
from tests.helpers import pipeline, serving
from tests.test_cli import Background, cli_env

SECRET = "s3cret-for-tests"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Dev", "-c", "user.email=dev@example.com", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest_asyncio.fixture
async def service(conveyor: ConveyorClient) -> AsyncIterator[str]:
    """The real ASGI app on a real loopback port."""

    async def client() -> ConveyorClient:
        return conveyor

    async with serving(create_app(client, WebhookSecrets({"CONVEYOR_WEBHOOK_SECRET": SECRET}))) as url:
        yield url


def repository(at: Path, files: dict[str, str], message: str) -> Path:
    """A Git repository at `at`, branch main, with one commit of `files` (authored by dev@example.com)."""
    at.mkdir()
    git(at, "init", "-q", "-b", "main")
    for name, text in files.items():
        (at / name).parent.mkdir(parents=True, exist_ok=True)
        (at / name).write_text(text)
    git(at, "add", ".")
    git(at, "commit", "-q", "-m", message)
    return at


def push(ref: str, sha: str, files: list[str]) -> dict:
    return {
        "ref": ref,
        "after": sha,
        "commits": [{"added": files, "modified": [], "removed": [], "message": "change"}],
        "head_commit": {"message": "change\n\nbody"},
        "sender": {"login": "octocat"},
    }


async def deliver(
    http: httpx.AsyncClient, url: str, kind: str, payload: dict, *, delivery: str | None = None, secret: str = SECRET
) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": kind,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
    }
    return await http.post(url, content=body, headers=headers)


async def test_signed_webhooks_start_filtered_idempotent_executions(
    conveyor: ConveyorClient, worker: Worker, service: str, tmp_path: Path
) -> None:
    repo = repository(tmp_path / "repo", {"src/app.py": "print('v1')\n"}, "first")
    first_sha = git(repo, "rev-parse", "HEAD")
    (repo / "src" / "app.py").write_text("print('v2')\n")
    git(repo, "commit", "-q", "-am", "second")
    declaration = pipeline(
        f"""
name: hooked
triggers:
  - providerType: CodeStarSourceConnection
    gitConfiguration:
      sourceActionName: Checkout
      push:
        - branches: {{includes: [main, "release/*"]}}
          filePaths: {{includes: ["src/**"], excludes: ["docs/**"]}}
      pullRequest:
        - events: [OPEN]
          branches: {{includes: [main]}}
stages:
  - name: Source
    actions:
      - name: Checkout
        provider: Git
        namespace: Src
        configuration: {{RepositoryUrl: "{repo}", BranchName: main}}
        outputArtifacts: [{{name: Code}}]
  - name: Build
    actions:
      - name: Show
        provider: Commands
        inputArtifacts: [{{name: Code}}]
        commands: ["grep -q v1 src/app.py"]
"""
    )
    name = declaration["name"]
    await conveyor.apply(declaration)
    url = f"{service}/webhooks/github/{name}"
    async with httpx.AsyncClient(timeout=30) as http:
        assert (await http.get(f"{service}/healthz")).json() == {"status": "ok"}
        assert (await http.get(f"{service}/readyz")).status_code == 200

        delivery = str(uuid.uuid4())
        accepted = await deliver(
            http, url, "push", push("refs/heads/main", first_sha, ["src/app.py"]), delivery=delivery
        )
        assert accepted.status_code == 202 and accepted.json()["started"] is True, accepted.text
        ref = ExecutionRef.parse(accepted.json()["execution"])
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary  # built the pushed commit (v1)
        assert state.source_revisions[0].revision_id == first_sha
        assert state.trigger.trigger_type == TriggerType.WEBHOOK_V2 and state.started_by == "github:octocat"

        again = await deliver(http, url, "push", push("refs/heads/main", first_sha, ["src/app.py"]), delivery=delivery)
        assert again.status_code == 202 and again.json() == {"execution": str(ref), "started": False}

        docs_only = await deliver(http, url, "push", push("refs/heads/main", first_sha, ["docs/readme.md"]))
        assert docs_only.status_code == 200 and docs_only.json()["started"] is False
        other_branch = await deliver(http, url, "push", push("refs/heads/feature", first_sha, ["src/app.py"]))
        assert other_branch.json()["started"] is False

        body = json.dumps(push("refs/heads/main", first_sha, ["src/app.py"])).encode()
        for headers in (
            {"X-Hub-Signature-256": sign("wrong-secret", body)},
            {},
            {"X-Hub-Signature-256": sign(SECRET, body + b" ")},  # tampered: the body changed after signing
        ):
            refused = await http.post(
                url,
                content=body,
                headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()), **headers},
            )
            assert refused.status_code == 401, refused.text

        pull = {
            "action": "opened",
            "pull_request": {
                "number": 7,
                "title": "Add",
                "head": {"ref": "feat", "sha": first_sha},
                "base": {"ref": "main"},
            },
            "sender": {"login": "octocat"},
        }
        opened = await deliver(http, url, "pull_request", pull)
        assert opened.status_code == 202 and opened.json()["started"] is True, opened.text
        closed = await deliver(http, url, "pull_request", pull | {"action": "closed"})
        assert closed.json()["started"] is False  # filtered by its event type
        pr_ref = ExecutionRef.parse(opened.json()["execution"])
        assert (await asyncio.wait_for(conveyor.wait(pr_ref), 60)).status == ExecutionStatus.SUCCEEDED

        unknown = await deliver(
            http, f"{service}/webhooks/github/not-registered", "push", push("refs/heads/main", first_sha, [])
        )
        assert unknown.status_code == 404

    async def listed() -> list:
        while len(rows := await conveyor.list(name)) < 2:
            await asyncio.sleep(0.2)
        return rows

    rows = await asyncio.wait_for(listed(), 15)
    await asyncio.sleep(1)  # anything else started would show up by now
    assert {r.execution for r in await conveyor.list(name)} == {str(ref), str(pr_ref)}  # exactly two started
    assert len(rows) == 2


def test_a_pipeline_without_a_secret_refuses_every_delivery() -> None:
    secrets = WebhookSecrets({"CONVEYOR_WEBHOOK_SECRET_SHOP_API": "x"})
    assert secrets.for_pipeline("shop-api") == "x"
    assert secrets.for_pipeline("other") is None


def test_service_config_names_secret_variables_and_refuses_typos(tmp_path: Path) -> None:
    from conveyor.service.config import load_service_config
    from conveyor.spec.validation import DeclarationError

    good = tmp_path / "serve.yaml"
    good.write_text("port: 9090\nwebhookSecretEnv:\n  shop-api: SHOP_SECRET\n")
    config = load_service_config(good)
    assert config.port == 9090 and config.host == "127.0.0.1"
    secrets = WebhookSecrets(
        {"SHOP_SECRET": "from-config", "CONVEYOR_WEBHOOK_SECRET": "global"}, config.webhook_secret_env
    )
    assert secrets.for_pipeline("shop-api") == "from-config" and secrets.for_pipeline("other") == "global"
    bad = tmp_path / "bad.yaml"
    bad.write_text("prot: 9090\n")
    with pytest.raises(DeclarationError, match="bad.yaml: prot: extra inputs are not permitted"):
        load_service_config(bad)


async def test_serve_command_answers_health_over_http(
    server: EmbeddedServer, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(f"port: {port}\n")
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    service = Background.conveyor("serve", "--config", str(config), env=env, log=tmp_path / "serve.log")
    try:
        await service.wait_for_text("Serving on")
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(50):
                try:
                    ready = await http.get(f"http://127.0.0.1:{port}/readyz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}
            refused = await http.post(f"http://127.0.0.1:{port}/webhooks/github/anything", content=b"{}")
            assert refused.status_code == 401
    finally:
        await service.stop()
    assert "s3cret" not in service.text()
