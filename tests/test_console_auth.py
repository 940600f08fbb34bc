"""The console's who-is-who over real HTTP on loopback: trusted proxy headers, bearer tokens, anonymous access,
roles, CSRF, security headers. Pages that read pipelines talk to the real Temporal server (no worker needed)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.client import ConveyorClient
from conveyor.console.auth import console_options
from conveyor.console.config import ConsoleConfig
from conveyor.console.csrf import issue, valid
from conveyor.devserver import EmbeddedServer, free_port
from conveyor.service.app import create_app
from conveyor.settings import Settings
from tests.helpers import serving
from tests.test_cli import Background, cli_env

LOOPBACK = ["127.0.0.1/32"]
TOKEN = "t0ken-for-the-ci-script"
ENV = {"CONSOLE_CI_TOKEN": TOKEN, "CONSOLE_CSRF": "a-fixed-csrf-secret"}
SECURITY = {
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "x-content-type-options": "nosniff",
}


@asynccontextmanager
async def console(
    conveyor: ConveyorClient, identities: Path | None = None, env: Mapping[str, str] = ENV, **config: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """The real service with the console (config in YAML's camelCase), served on loopback; an HTTP client for it."""

    async def client() -> ConveyorClient:
        return conveyor

    options = console_options(ConsoleConfig.model_validate(config), identities, env)
    async with serving(create_app(client, console=options)) as url, httpx.AsyncClient(base_url=url) as http:
        yield http


def as_user(user: str) -> dict[str, str]:
    return {"X-Forwarded-User": user}


def csrf_token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def assert_secured(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp
    for header, value in SECURITY.items():
        assert response.headers[header] == value


async def test_anonymous_access_is_off_by_default(conveyor: ConveyorClient) -> None:
    async with console(conveyor, trustedProxies=LOOPBACK, viewers=["*"]) as http:
        response = await http.get("/console/pipelines")
        assert response.status_code == 401
        assert "anonymous access is off" in response.text
        assert_secured(response)  # the error page too
        for path in ("/console/", "/console/pipelines/x/executions", "/console/pipelines/x/executions/e/stop"):
            assert (await http.get(path)).status_code == 401, path  # every page and form
        # Only the shipped static files are public (the style sheet and htmx: the 401 page needs them).
        assert (await http.get("/console/static/console.css")).status_code == 200


async def test_anonymous_viewer_reads_but_cannot_act(conveyor: ConveyorClient) -> None:
    async with console(conveyor, anonymous="viewer") as http:
        page = await http.get("/console/pipelines")
        assert page.status_code == 200 and "<h1>Pipelines</h1>" in page.text
        assert_secured(page)
        forged = await http.post("/console/pipelines/any/transition", data={"stage": "Prod", "enabled": "false"})
        assert forged.status_code == 403
        assert "needs the operator role" in forged.text


def test_anonymous_cannot_be_made_operator() -> None:
    with pytest.raises(ValueError, match="anonymous"):
        ConsoleConfig.model_validate({"anonymous": "operator"})


async def test_a_trusted_header_from_an_untrusted_peer_is_ignored(conveyor: ConveyorClient) -> None:
    async with console(conveyor, trustedProxies=["10.0.0.0/8"], viewers=["*"]) as http:
        response = await http.get("/console/pipelines", headers=as_user("alice"))
        assert response.status_code == 401  # as if absent: the test's peer is 127.0.0.1


async def test_a_trusted_header_from_a_trusted_peer_names_the_user(conveyor: ConveyorClient) -> None:
    async with console(conveyor, trustedProxies=LOOPBACK, viewers=["*"]) as http:
        response = await http.get("/console/pipelines", headers=as_user("alice"))
        assert response.status_code == 200
        assert '<span class="user"' in response.text and "alice" in response.text
        assert (await http.get("/console/pipelines")).status_code == 401  # a trusted peer without the header


async def test_a_signed_in_person_with_no_role_is_refused(conveyor: ConveyorClient) -> None:
    async with console(conveyor, trustedProxies=LOOPBACK, viewers=["alice"]) as http:
        response = await http.get("/console/pipelines", headers=as_user("mallory"))
        assert response.status_code == 403
        assert "needs the viewer role" in response.text


async def test_roles_match_any_name_the_identity_directory_knows(conveyor: ConveyorClient, tmp_path: Path) -> None:
    directory = tmp_path / "identities.yaml"
    directory.write_text("identities:\n  alice:\n    emails: [alice@example.com]\n")
    async with console(
        conveyor, directory, trustedProxies=LOOPBACK, emailHeader="X-Forwarded-Email", operators=["alice"]
    ) as http:
        by_email = {"X-Forwarded-User": "a.smith", "X-Forwarded-Email": "Alice@Example.com"}
        response = await http.get("/console/pipelines", headers=by_email)
        assert response.status_code == 200
        assert "operator, viewer" in response.text  # an operator can view
        response = await http.get("/console/pipelines", headers=as_user("bob"))
        assert response.status_code == 403


async def test_groups_from_the_trusted_proxy(conveyor: ConveyorClient) -> None:
    config = {"trustedProxies": LOOPBACK, "groupsHeader": "X-Forwarded-Groups", "operators": ["group:release"]}
    async with console(conveyor, **config) as http:
        member = as_user("carol") | {"X-Forwarded-Groups": "dev, release"}
        assert "operator, viewer" in (await http.get("/console/pipelines", headers=member)).text
        outsider = as_user("dave") | {"X-Forwarded-Groups": "dev,release-notes"}
        assert (await http.get("/console/pipelines", headers=outsider)).status_code == 403


async def test_bearer_tokens(conveyor: ConveyorClient) -> None:
    tokens = [{"name": "ci-bot", "env": "CONSOLE_CI_TOKEN", "role": "operator"}]
    async with console(conveyor, tokens=tokens) as http:
        good = await http.get("/console/pipelines", headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200 and "ci-bot" in good.text
        wrong = await http.get("/console/pipelines", headers={"Authorization": f"Bearer {TOKEN}x"})
        assert wrong.status_code == 401 and "not one the console accepts" in wrong.text
        assert wrong.headers["www-authenticate"].startswith("Bearer")
        basic = await http.get("/console/pipelines", headers={"Authorization": "Basic YTpi"})
        assert basic.status_code == 401


async def test_a_token_variable_that_is_not_set_is_named(conveyor: ConveyorClient) -> None:
    from conveyor.client import ConveyorError

    config = ConsoleConfig.model_validate({"tokens": [{"name": "ci", "env": "NOT_SET_ANYWHERE"}]})
    with pytest.raises(ConveyorError, match="NOT_SET_ANYWHERE is not set"):
        console_options(config, None, {})


async def test_posts_without_a_valid_csrf_token_are_refused(conveyor: ConveyorClient) -> None:
    async with console(
        conveyor, trustedProxies=LOOPBACK, operators=["alice", "bob"], csrfSecretEnv="CONSOLE_CSRF"
    ) as http:
        page = await http.get("/console/pipelines", headers=as_user("alice"))
        # The pipelines page has no form: take alice's token as any of her pages would carry it.
        token = issue(b"a-fixed-csrf-secret", "alice")
        assert valid(b"a-fixed-csrf-secret", "alice", token) and not valid(b"a-fixed-csrf-secret", "bob", token)
        assert page.status_code == 200
        url = "/console/pipelines/no-such-pipeline/transition"
        fields = {"stage": "Prod", "enabled": "false", "reason": "freeze"}
        missing = await http.post(url, data=fields, headers=as_user("alice"))
        assert missing.status_code == 403 and "security token is missing" in missing.text
        wrong = await http.post(url, data=fields | {"csrf": "1" + token}, headers=as_user("alice"))
        assert wrong.status_code == 403
        not_hers = await http.post(url, data=fields | {"csrf": token}, headers=as_user("bob"))
        assert not_hers.status_code == 403
        foreign = await http.post(
            url, data=fields | {"csrf": token}, headers=as_user("alice") | {"Origin": "https://evil.example"}
        )
        assert foreign.status_code == 403 and "another site" in foreign.text
        # With her token (and her own origin) the form is taken: the confirm step answers.
        own = http.base_url.copy_with(path="").__str__().rstrip("/")
        taken = await http.post(url, data=fields | {"csrf": token}, headers=as_user("alice") | {"Origin": own})
        assert taken.status_code == 200 and "This will disable the transition into stage Prod" in taken.text


def test_csrf_tokens_expire() -> None:
    token = issue(b"secret", "alice", now=1000.0)
    assert valid(b"secret", "alice", token, now=1001.0)
    assert not valid(b"secret", "alice", token, now=1000.0 + 13 * 3600)
    assert not valid(b"other", "alice", token, now=1001.0)


async def test_root_leads_to_the_console_and_static_files_stay_inside(conveyor: ConveyorClient) -> None:
    async with console(conveyor, anonymous="viewer") as http:
        root = await http.get("/")
        assert root.status_code == 303 and root.headers["location"] == "/console/"
        home = await http.get("/console/")
        assert home.status_code == 303 and home.headers["location"] == "/console/pipelines"
        css = await http.get("/console/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        assert (await http.get("/console/static/..%2Fauth.py")).status_code == 404
        assert (await http.get("/console/static/auth.py")).status_code == 404


async def test_without_a_console_section_nothing_is_served(conveyor: ConveyorClient) -> None:
    async def client() -> ConveyorClient:
        return conveyor

    async with serving(create_app(client)) as url, httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/console/pipelines")).status_code == 404
        assert (await http.get("/")).status_code == 404


def test_serve_config_turns_the_console_on(tmp_path: Path) -> None:
    from ipaddress import ip_network

    from conveyor.service.config import load_service_config
    from conveyor.spec.validation import DeclarationError

    path = tmp_path / "serve.yaml"
    path.write_text(
        "console:\n  trustedProxies: [10.1.0.0/16]\n  operators: [alice]\n"
        "  tokens: [{name: ci, env: CI_TOKEN, role: operator}]\n"
    )
    console_config = load_service_config(path).console
    assert console_config is not None and console_config.trusted_proxies == [ip_network("10.1.0.0/16")]
    assert console_config.anonymous is None and console_config.user_header == "X-Forwarded-User"
    path.write_text("console:\n  trustedProxies: [not-an-address]\n")
    with pytest.raises(DeclarationError, match="trustedProxies"):
        load_service_config(path)


async def test_serve_command_serves_the_console(server: EmbeddedServer, settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        f"port: {port}\nconsole:\n  trustedProxies: [127.0.0.1/32]\n  viewers: ['*']\n"
        "  tokens: [{name: ci, env: SERVE_CONSOLE_TOKEN}]\n"
    )
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    missing = Background.conveyor("serve", "--config", str(config), env=env, log=tmp_path / "missing.log")
    assert await asyncio.to_thread(missing.process.wait, 30) == 1  # refuses to start, naming the variable
    assert "SERVE_CONSOLE_TOKEN is not set (console.tokens: the token of 'ci')" in missing.text()
    service = Background.conveyor(
        "serve", "--config", str(config), env=env | {"SERVE_CONSOLE_TOKEN": TOKEN}, log=tmp_path / "serve.log"
    )
    try:
        await service.wait_for_text("Serving on")
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for _ in range(50):
                try:
                    await http.get("/healthz")
                    break
                except httpx.ConnectError:
                    await asyncio.sleep(0.1)
            # The peer is the socket's: an X-Forwarded-For a client adds does not make the proxy untrusted
            # (nor would one make a stranger trusted).
            spoofed = as_user("alice") | {"X-Forwarded-For": "10.9.9.9"}
            assert (await http.get("/console/pipelines", headers=spoofed)).status_code == 200
            assert (
                await http.get("/console/pipelines", headers={"Authorization": f"Bearer {TOKEN}"})
            ).status_code == 200
            assert (await http.get("/console/pipelines")).status_code == 401
    finally:
        await service.stop()
    assert TOKEN not in service.text()
