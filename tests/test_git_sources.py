"""CodeStarSourceConnection, GitHub (v1) and CodeCommit sources against local bare repositories, through the
connections file: clones, output variables, artifact formats, overrides, credentials, polling and webhooks."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment

from activities.providers.git_sources import ENV_HELPER, HostedGitSources, git_credentials
from conveyor.client import ConveyorClient
from conveyor.connections import (
    ConnectionsError,
    Credential,
    ResolvedConnection,
    load_connections,
    resolve_connection,
)
from conveyor.devserver import EmbeddedServer
from conveyor.interface import stage_workflow_id
from conveyor.model import ActionContext, ExecutionStatus, TriggerType
from conveyor.providers.git_sources import ArtifactFormat, HostedGit, HostedGitSourceInput
from conveyor.settings import Settings
from conveyor.spec.validation import validate_pipeline
from conveyor.stores.artifacts import LocalArtifactStore
from conveyor.worker import build_worker
from tests.git_http import git_http_server
from tests.helpers import pipeline
from tests.test_cli import cli_env
from tests.test_cli import conveyor as cli
from tests.test_schedules import executions
from tests.test_webhooks import deliver, push, service  # noqa: F401 - `service` is a fixture used here

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "codestar-source" / "pipeline.yaml"
CONTEXT = ActionContext(pipeline_name="shop", execution_id="exec-1", stage_name="Source", action_name="Checkout")
ARN = "arn:aws:codestar-connections:eu-west-1:111122223333:connection/abc-123"
TOKEN = "ghp_FAKEtokenNeverToBeSeen0123456789"
IDENTITY = ["-c", "user.name=Ada Lovelace", "-c", "user.email=ada@example.com"]


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *IDENTITY, *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


class Hosted:
    """Bare repositories under `root` (as a Git host keeps them), each fed from a work tree we commit in."""

    def __init__(self, base: Path) -> None:
        self.root = base / "host"
        self.work = base / "work"

    def create(self, name: str, files: dict[str, str], message: str = "First version") -> Path:
        work = self.work / name
        work.mkdir(parents=True)
        git(work, "init", "-q", "-b", "main")
        self.commit(name, files, message)
        bare = self.root / f"{name}.git"
        bare.parent.mkdir(parents=True, exist_ok=True)
        git(self.work, "clone", "-q", "--bare", str(work), str(bare))
        git(work, "remote", "add", "origin", str(bare))
        return bare

    def commit(self, name: str, files: dict[str, str], message: str) -> str:
        work = self.work / name
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        git(work, "add", ".")
        git(work, "commit", "-q", "-m", message)
        return git(work, "rev-parse", "HEAD")

    def push(self, name: str) -> None:
        git(self.work / name, "push", "-q", "origin", "main")

    def head(self, name: str) -> str:
        return git(self.root / f"{name}.git", "rev-parse", "main")


@pytest.fixture
def hosted(tmp_path: Path) -> Hosted:
    return Hosted(tmp_path)


def connections(at: Path, text: str) -> Path:
    at.write_text(text)
    return at


def sources(tmp_path: Path, connections_file: Path | None) -> HostedGitSources:
    settings = Settings(data_dir=tmp_path / "data", connections_file=connections_file)
    return HostedGitSources(settings, LocalArtifactStore(settings.artifacts_dir))


def names(provider: HostedGitSources, ref_digest: str) -> list[str]:
    with zipfile.ZipFile(provider.store.path_for(ref_digest)) as zf:  # type: ignore[attr-defined]
        return zf.namelist()


def codestar_input(**changes: object) -> HostedGitSourceInput:
    fields: dict[str, object] = {
        "context": CONTEXT,
        "provider": HostedGit.CODESTAR,
        "connection_arn": ARN,
        "repository": {"FullRepositoryId": "my-org/app", "Owner": "my-org", "Repo": "app", "RepositoryName": "app"},
        "branch": "main",
        "output_artifact": "SourceOutput",
    }
    return HostedGitSourceInput.model_validate(fields | changes)


# --- the three providers, through the connections file --------------------------------------------------------


async def test_codestar_connection_clones_through_the_connections_file(tmp_path: Path, hosted: Hosted) -> None:
    hosted.create("my-org/app", {"README.md": "v1\n", "src/app.py": "print('hi')\n"}, "First\n\nWith a body.")
    path = connections(
        tmp_path / "connections.yaml", f'"{ARN}":\n  url: "file://{hosted.root}/{{FullRepositoryId}}.git"\n'
    )
    provider = sources(tmp_path, path)
    result = await ActivityEnvironment().run(provider.codestar_connection_source, codestar_input())
    head = hosted.head("my-org/app")
    variables = result.output_variables
    assert set(variables) == {
        "AuthorDate", "BranchName", "CommitId", "CommitMessage", "ConnectionArn", "FullRepositoryName"
    }  # fmt: skip
    assert variables["CommitId"] == head
    assert variables["BranchName"] == "main"
    assert variables["CommitMessage"] == "First\n\nWith a body."
    assert variables["ConnectionArn"] == ARN
    assert variables["FullRepositoryName"] == "my-org/app"
    assert variables["AuthorDate"][:4].isdigit()
    assert result.source_revision is not None and result.source_revision.revision_id == head
    (artifact,) = result.output_artifacts
    assert names(provider, artifact.digest) == ["README.md", "src/app.py"]  # CODE_ZIP: no .git
    assert list(provider.settings.workspaces_dir.iterdir()) == []


async def test_codebuild_clone_ref_keeps_a_usable_git_clone(tmp_path: Path, hosted: Hosted) -> None:
    hosted.create("my-org/app", {"README.md": "v1\n"})
    path = connections(
        tmp_path / "c.yaml", f'CodeStarSourceConnection: {{url: "{hosted.root}/{{FullRepositoryId}}.git"}}\n'
    )
    provider = sources(tmp_path, path)
    result = await ActivityEnvironment().run(
        provider.codestar_connection_source, codestar_input(artifact_format=ArtifactFormat.CODEBUILD_CLONE_REF)
    )
    (artifact,) = result.output_artifacts
    assert ".git/HEAD" in names(provider, artifact.digest)
    out = tmp_path / "extracted"
    provider.store.extract(artifact, out)
    assert git(out, "rev-parse", "HEAD") == hosted.head("my-org/app")  # a CodeBuild action can use git on it
    assert git(out, "status", "--porcelain") == ""


async def test_github_v1_variables_and_a_commit_override(tmp_path: Path, hosted: Hosted) -> None:
    hosted.create("octo/shop", {"a.txt": "one\n"}, "one")
    first = hosted.head("octo/shop")
    hosted.commit("octo/shop", {"a.txt": "two\n"}, "two")
    hosted.push("octo/shop")
    path = connections(tmp_path / "c.yaml", f'GitHub: {{url: "{hosted.root}/{{Owner}}/{{Repo}}.git"}}\n')
    provider = sources(tmp_path, path)
    input = HostedGitSourceInput(
        context=CONTEXT,
        provider=HostedGit.GITHUB,
        repository={"FullRepositoryId": "octo/shop", "Owner": "octo", "Repo": "shop", "RepositoryName": "shop"},
        branch="main",
        commit=first,
        output_artifact="Src",
    )
    result = await ActivityEnvironment().run(provider.github_source, input)
    variables = result.output_variables
    assert set(variables) == {
        "CommitId", "CommitMessage", "CommitUrl", "RepositoryName", "BranchName", "AuthorDate", "CommitterDate"
    }  # fmt: skip
    assert variables["CommitId"] == first and variables["CommitMessage"] == "one"
    assert variables["CommitUrl"] == f"https://github.com/octo/shop/commit/{first}"
    assert variables["RepositoryName"] == "shop" and variables["BranchName"] == "main"
    (artifact,) = result.output_artifacts
    extracted = tmp_path / "x"
    provider.store.extract(artifact, extracted)
    assert (extracted / "a.txt").read_text() == "one\n"


async def test_codecommit_uses_the_region_placeholder(tmp_path: Path, hosted: Hosted) -> None:
    hosted.create("eu-west-3/billing", {"x": "1\n"})
    path = connections(
        tmp_path / "c.json", json.dumps({"*": {"url": f"{hosted.root}/{{region}}/{{RepositoryName}}.git"}})
    )
    provider = sources(tmp_path, path)
    input = HostedGitSourceInput(
        context=CONTEXT,
        provider=HostedGit.CODECOMMIT,
        repository={"RepositoryName": "billing", "Repo": "billing"},
        region="eu-west-3",
        branch="main",
        output_artifact="Src",
    )
    result = await ActivityEnvironment().run(provider.codecommit_source, input)
    assert set(result.output_variables) == {
        "AuthorDate", "BranchName", "CommitId", "CommitMessage", "CommitterDate", "RepositoryName"
    }  # fmt: skip
    assert result.output_variables["RepositoryName"] == "billing"
    assert result.output_variables["CommitId"] == hosted.head("eu-west-3/billing")


# --- the connections file: matching, defaults, errors --------------------------------------------------------


def test_entries_match_by_arn_then_provider_then_wildcard(tmp_path: Path) -> None:
    path = connections(
        tmp_path / "c.yaml",
        f"""
"{ARN}": {{url: "/arn/{{FullRepositoryId}}"}}
CodeStarSourceConnection: {{url: "/provider/{{FullRepositoryId}}", credential: {{env: GH_TOKEN}}}}
"*": {{url: "/any/{{RepositoryName}}", credential: {{helper: "store --file /x"}}}}
""",
    )
    entries = load_connections(path)
    names = {"FullRepositoryId": "o/r", "RepositoryName": "r"}
    assert resolve_connection(entries, "CodeStarSourceConnection", ARN, names).url == "/arn/o/r"
    other = resolve_connection(entries, "CodeStarSourceConnection", ARN + "-other", names)
    assert (other.url, other.matched, other.credential) == (
        "/provider/o/r",
        "CodeStarSourceConnection",
        Credential(env="GH_TOKEN"),
    )
    assert resolve_connection(entries, "CodeCommit", None, names).url == "/any/r"


def test_defaults_without_a_file() -> None:
    names = {"FullRepositoryId": "o/r", "Owner": "o", "Repo": "r", "RepositoryName": "r", "region": "eu-west-1"}
    codestar = resolve_connection({}, "CodeStarSourceConnection", ARN, names)
    assert (codestar.url, codestar.credential) == ("https://github.com/o/r.git", None)
    assert resolve_connection({}, "GitHub", None, names).url == "https://github.com/o/r.git"
    codecommit = resolve_connection({}, "CodeCommit", None, names)
    assert codecommit.url == "https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/r"
    assert codecommit.credential == Credential(aws=True)
    with pytest.raises(ConnectionsError, match=r"needs \{region\}.*AWS_REGION"):
        resolve_connection({}, "CodeCommit", None, names | {"region": ""})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("GitHub: {url: x, credentials: {env: A}}", r"GitHub\.credentials: Extra inputs are not permitted"),
        ("GitHub: {credential: {env: A, file: /f}}", r"GitHub\.credential: give exactly one of env, file, helper, aws"),
        ("GitHub: {credential: {}}", r"GitHub\.credential: give exactly one .*given: none"),
        ('GitHub: {url: "https://h/{Org}/{Repo}"}', r"GitHub\.url: unknown placeholder \{Org\}"),
        ("GitHub: [1, 2", r"not valid YAML \(line 1, column 14\): expected .,. or .\]."),
        ("- a\n- b\n", r"expected a mapping of ConnectionArn, provider name or '\*'"),
    ],
)
def test_a_bad_connections_file_is_named_with_its_field(tmp_path: Path, text: str, problem: str) -> None:
    path = connections(tmp_path / "connections.yaml", text)
    with pytest.raises(ConnectionsError, match=problem) as caught:
        load_connections(path)
    assert str(caught.value).startswith(f"connections file {path}: ")


async def test_a_missing_credential_fails_the_action_clearly(
    tmp_path: Path, hosted: Hosted, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    hosted.create("my-org/app", {"a": "1\n"})
    path = connections(
        tmp_path / "c.yaml",
        f'"*": {{url: "{hosted.root}/{{FullRepositoryId}}.git", credential: {{env: NO_SUCH_TOKEN}}}}\n',
    )
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(sources(tmp_path, path).codestar_connection_source, codestar_input())
    assert caught.value.type == "ConnectionsError" and caught.value.non_retryable
    assert caught.value.message == (
        f"connections file {path}, entry '*': credential env NO_SUCH_TOKEN is not set in the worker's environment"
    )
    bad = connections(tmp_path / "bad.yaml", "CodeStarSourceConnection: {url: 3, credential: {aws: maybe}}\n")
    with pytest.raises(ApplicationError, match=rf"connections file {bad}: CodeStarSourceConnection\.url"):
        await ActivityEnvironment().run(sources(tmp_path, bad).codestar_connection_source, codestar_input())


def test_a_token_is_in_gits_environment_only_never_in_its_arguments() -> None:
    connection = ResolvedConnection(url="https://h/o/r.git", credential=Credential(env="GH"), matched="GitHub")
    found = git_credentials(connection, {"GH": TOKEN}, "here", lambda _: None)
    assert found.options == ("-c", "credential.helper=", "-c", f"credential.helper={ENV_HELPER}")
    assert all(TOKEN not in option for option in found.options)  # what a process listing shows
    assert dict(found.env) == {"CONVEYOR_GIT_USERNAME": "x-access-token", "CONVEYOR_GIT_TOKEN": TOKEN}
    assert found.scrub(f"fatal: {TOKEN} refused") == "fatal: **** refused"


def test_aws_credentials_name_the_missing_tool() -> None:
    codecommit = ResolvedConnection(url="codecommit::eu-west-1://billing", credential=Credential(aws=True), matched="x")
    with pytest.raises(ConnectionsError, match="needs git-remote-codecommit, which is not installed"):
        git_credentials(codecommit, {}, "here", lambda _: None)
    https = codecommit.model_copy(update={"url": "https://git-codecommit.eu-west-1.amazonaws.com/v1/repos/billing"})
    with pytest.raises(ConnectionsError, match="need the AWS CLI .* or install git-remote-codecommit"):
        git_credentials(https, {}, "here", lambda _: None)
    environ = {"AWS_PROFILE": "ci", "AWS_SECRET_ACCESS_KEY": "s3cr3t", "UNRELATED": "x"}
    found = git_credentials(https, environ, "here", lambda name: f"/usr/bin/{name}")
    assert "credential.helper=!aws codecommit credential-helper $@" in found.options
    assert dict(found.env) == {"AWS_PROFILE": "ci", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    assert found.scrub("denied for s3cr3t") == "denied for ****"


# --- a token over HTTP: it reaches the server, and nothing else ----------------------------------------------


@pytest.fixture
def http_host(hosted: Hosted) -> Iterator[tuple[Hosted, str, list[tuple[str, str]]]]:
    hosted.create("octo/shop", {"index.html": "<h1>shop</h1>\n"}, "Shop page")
    with git_http_server(hosted.root, "x-access-token", TOKEN) as server:
        yield hosted, server.url, server.seen


async def test_a_token_from_the_environment_reaches_the_server_only_through_git(
    tmp_path: Path, http_host: tuple[Hosted, str, list[tuple[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    hosted, url, seen = http_host
    path = connections(
        tmp_path / "c.yaml", f'GitHub: {{url: "{url}/{{Owner}}/{{Repo}}.git", credential: {{env: GITHUB_TOKEN}}}}\n'
    )
    github = HostedGitSourceInput(
        context=CONTEXT,
        provider=HostedGit.GITHUB,
        repository={"Owner": "octo", "Repo": "shop", "RepositoryName": "shop"},
        branch="main",
        output_artifact="Src",
    )
    monkeypatch.setenv("GITHUB_TOKEN", "wrong-token-" + TOKEN)  # the server refuses it: git's error must not show it
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(sources(tmp_path, path).github_source, github)
    assert TOKEN not in str(refused.value) and "Authentication failed" in str(refused.value)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    provider = sources(tmp_path, path)
    result = await ActivityEnvironment().run(provider.github_source, github)
    assert ("x-access-token", TOKEN) in seen  # the credential helper handed git the token
    assert result.output_variables["CommitUrl"] == f"{url}/octo/shop/commit/{hosted.head('octo/shop')}"
    assert TOKEN not in json.dumps(result.model_dump(mode="json"))
    (artifact,) = result.output_artifacts
    with zipfile.ZipFile(provider.store.path_for(artifact.digest)) as zf:  # type: ignore[attr-defined]
        assert all(TOKEN.encode() not in zf.read(name) for name in zf.namelist())
    seen.clear()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(TOKEN + "\n")
    monkeypatch.delenv("GITHUB_TOKEN")
    from_file = connections(
        tmp_path / "file.yaml",
        f'GitHub: {{url: "{url}/{{Owner}}/{{Repo}}.git", credential: {{file: secrets/token}}}}\n',  # relative to it
    )
    await ActivityEnvironment().run(sources(tmp_path, from_file).github_source, github)
    assert seen == [("x-access-token", TOKEN)] * len(seen) and seen
    without = connections(tmp_path / "none.yaml", f'GitHub: {{url: "{url}/{{Owner}}/{{Repo}}.git"}}\n')
    with pytest.raises(ApplicationError, match="could not clone"):
        await ActivityEnvironment().run(sources(tmp_path, without).github_source, github)


async def test_a_github_pipeline_with_a_masked_oauth_token_keeps_the_token_out_of_every_record(
    tmp_path: Path,
    http_host: tuple[Hosted, str, list[tuple[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    temporal_client: Client,
    conveyor: ConveyorClient,
    settings: Settings,
    server: EmbeddedServer,
) -> None:
    hosted, url, seen = http_host
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    path = connections(
        tmp_path / "c.yaml", f'GitHub: {{url: "{url}/{{Owner}}/{{Repo}}.git", credential: {{env: GITHUB_TOKEN}}}}\n'
    )
    declaration = pipeline(
        """
name: github-v1
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {category: Source, owner: ThirdParty, provider: GitHub, version: "1"}
        configuration: {Owner: octo, Repo: shop, Branch: main, OAuthToken: "****", PollForSourceChanges: "false"}
        outputArtifacts: [{name: Site}]
        namespace: SourceVariables
  - name: Check
    actions:
      - name: Look
        provider: Commands
        inputArtifacts: [{name: Site}]
        commands: ["grep -q shop index.html", "echo commit #{SourceVariables.CommitId}"]
"""
    )
    name = declaration["name"]
    async with build_worker(temporal_client, settings.model_copy(update={"connections_file": path})):
        ref, _ = await conveyor.start(declaration)
        state = await asyncio.wait_for(conveyor.wait(ref), 60)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert ("x-access-token", TOKEN) in seen
    assert state.source_revisions[0].revision_id == hosted.head("octo/shop")
    records: list[str] = []
    for workflow_id in (ref.workflow_id, *(stage_workflow_id(name, ref.execution_id, s) for s in ("Source", "Check"))):
        handle = temporal_client.get_workflow_handle(workflow_id)
        records.append((await handle.fetch_history()).to_json())
        records.append(json.dumps(await (await handle.describe()).memo(), default=str))
    logs = [p.read_text() for p in (settings.logs_dir / name).rglob("*.log")]
    assert any(hosted.head("octo/shop") in log for log in logs)  # the logs were read
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    status = await cli("status", ref.workflow_id, "-o", "json", env=env)
    assert status.code == 0, str(status)
    printed = capfd.readouterr()
    for record in [*records, *logs, status.out, status.err, printed.out, printed.err]:
        assert TOKEN not in record
        assert base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode() not in record


# --- validation ----------------------------------------------------------------------------------------------


def test_validation_of_the_three_providers() -> None:
    declaration = pipeline(
        f"""
name: checked
stages:
  - name: Source
    actions:
      - name: Conn
        actionTypeId: {{category: Source, owner: AWS, provider: CodeStarSourceConnection, version: "1"}}
        configuration: {{ConnectionArn: "{ARN}", FullRepositoryId: "my-org", BranchName: main,
                         OutputArtifactFormat: CODEBUILD_CLONE_REF, DetectChanges: "maybe"}}
        outputArtifacts: [{{name: Clone}}]
      - name: Hub
        actionTypeId: {{category: Source, owner: ThirdParty, provider: GitHub, version: "1"}}
        configuration: {{Owner: o, Repo: r, Branch: main, OAuthToken: ghp_literal}}
        outputArtifacts: [{{name: Hubbed}}]
      - name: Commit
        actionTypeId: {{category: Source, owner: AWS, provider: CodeCommit, version: "1"}}
        configuration: {{RepositoryName: billing, BranchName: main, OutputArtifactFormat: ZIP}}
        outputArtifacts: [{{name: Committed}}]
  - name: Build
    actions:
      - {{name: Use, provider: Commands, inputArtifacts: [{{name: Clone}}], commands: ["ls"]}}
"""
    )
    report = validate_pipeline(declaration)
    problems = {(issue.path, issue.message) for issue in report.errors}
    paths = {path for path, _ in problems}
    assert "stages[1].actions[0].inputArtifacts[0]" in paths
    assert any("only a CodeBuild action can consume" in m and "CODE_ZIP" in m for _, m in problems)
    assert any("FullRepositoryId" in p and "not owner/repository" in m for p, m in problems)
    assert any("DetectChanges" in p and "not a boolean" in m for p, m in problems)
    assert any("OAuthToken" in m and "literal secret" in m for _, m in problems)
    assert any("OutputArtifactFormat" in p and "'ZIP' is not an output artifact format" in m for p, m in problems)
    assert len(problems) == 5, problems


# --- triggers: polling and the GitHub webhook --------------------------------------------------------------


def source_pipeline(name: str, owner: str, provider: str, configuration: str) -> dict:
    return pipeline(
        f"""
name: {name}
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {{category: Source, owner: {owner}, provider: {provider}, version: "1"}}
        configuration: {configuration}
        outputArtifacts: [{{name: Code}}]
  - name: Build
    actions:
      - {{name: Check, provider: Commands, inputArtifacts: [{{name: Code}}], commands: ["test -f app.txt"]}}
"""
    )


def codestar_pipeline(name: str, *, detect: str | None = None, poll: bool = False, repo: str = "my-org/app") -> dict:
    detect_line = f", DetectChanges: '{detect}'" if detect else ""
    poll_line = "conveyor: {poll: {intervalSeconds: 3600}}" if poll else ""
    return pipeline(
        f"""
name: {name}
{poll_line}
stages:
  - name: Source
    actions:
      - name: Checkout
        actionTypeId: {{category: Source, owner: AWS, provider: CodeStarSourceConnection, version: "1"}}
        configuration: {{ConnectionArn: "{ARN}", FullRepositoryId: {repo}, BranchName: main{detect_line}}}
        outputArtifacts: [{{name: Code}}]
  - name: Build
    actions:
      - {{name: Check, provider: Commands, inputArtifacts: [{{name: Code}}], commands: ["test -f app.txt"]}}
"""
    )


async def test_polling_a_codestar_source_starts_once_per_new_commit(
    tmp_path: Path, hosted: Hosted, temporal_client: Client, conveyor: ConveyorClient, settings: Settings
) -> None:
    hosted.create("my-org/app", {"app.txt": "one\n"}, "one")
    path = connections(tmp_path / "c.yaml", f'"{ARN}": {{url: "file://{hosted.root}/{{FullRepositoryId}}.git"}}\n')
    declaration = codestar_pipeline("polled", poll=True)
    name = declaration["name"]
    async with build_worker(temporal_client, settings.model_copy(update={"connections_file": path})):
        await conveyor.apply(declaration)
        poller = temporal_client.get_schedule_handle(f"{name}/poll")
        await poller.trigger()
        first = (await executions(conveyor, name, 1))[0]
        state = await asyncio.wait_for(conveyor.wait(first.ref), 60)
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
        assert state.trigger.trigger_type == TriggerType.POLL_FOR_SOURCE_CHANGES
        assert state.source_revisions[0].revision_id == hosted.head("my-org/app")
        await poller.trigger()  # nothing new: nothing starts
        await executions(conveyor, name, 1)
        hosted.commit("my-org/app", {"app.txt": "two\n"}, "two")
        hosted.push("my-org/app")
        await poller.trigger()
        await executions(conveyor, name, 2)

        quiet = codestar_pipeline("quiet", poll=True, detect="false")  # DetectChanges false: no poll schedule
        await conveyor.apply(quiet)
        with pytest.raises(RPCError):
            await temporal_client.get_schedule_handle(f"{quiet['name']}/poll").describe()
        await poller.delete()


async def test_the_github_webhook_starts_codestar_pipelines_of_its_repository(
    tmp_path: Path,
    hosted: Hosted,
    temporal_client: Client,
    conveyor: ConveyorClient,
    settings: Settings,
    service: str,  # noqa: F811 - the fixture
) -> None:
    hosted.create("my-org/app", {"app.txt": "one\n"}, "one")
    head = hosted.head("my-org/app")
    path = connections(tmp_path / "c.yaml", f'"*": {{url: "{hosted.root}/{{FullRepositoryId}}.git"}}\n')
    hooked = codestar_pipeline("hooked")
    detached = codestar_pipeline("detached", detect="false")
    github = source_pipeline(
        "github-v1",
        "ThirdParty",
        "GitHub",
        "{Owner: my-org, Repo: app, Branch: main, OAuthToken: '****', PollForSourceChanges: 'false'}",
    )
    codecommit = source_pipeline("codecommit", "AWS", "CodeCommit", "{RepositoryName: app, BranchName: main}")
    event = push("refs/heads/main", head, ["app.txt"]) | {"repository": {"full_name": "My-Org/App"}}
    async with (
        build_worker(temporal_client, settings.model_copy(update={"connections_file": path})),
        httpx.AsyncClient() as http,
    ):
        for declaration in (hooked, detached, github, codecommit):
            await conveyor.apply(declaration)
        other_repo = event | {"repository": {"full_name": "my-org/other"}}
        ignored = await deliver(http, f"{service}/webhooks/github/{hooked['name']}", "push", other_repo)
        assert ignored.json() == {"started": False, "reason": "no trigger filter matched"}
        other_branch = event | {"ref": "refs/heads/feature"}
        assert (await deliver(http, f"{service}/webhooks/github/{hooked['name']}", "push", other_branch)).json()[
            "started"
        ] is False
        off = await deliver(http, f"{service}/webhooks/github/{detached['name']}", "push", event)
        assert off.json()["started"] is False  # DetectChanges: false
        started = await deliver(http, f"{service}/webhooks/github/{hooked['name']}", "push", event)
        assert started.status_code == 202 and started.json()["started"] is True, started.text
        by_webhook = await deliver(http, f"{service}/webhooks/github/{github['name']}", "push", event)
        assert by_webhook.json()["started"] is True  # GitHub v1: PollForSourceChanges false, events by webhook
        never = await deliver(http, f"{service}/webhooks/github/{codecommit['name']}", "push", event)
        assert never.json()["started"] is False  # CodeCommit's changes are not GitHub deliveries
        states = []
        for declaration in (hooked, github):
            (row,) = await executions(conveyor, declaration["name"], 1)
            states.append(await asyncio.wait_for(conveyor.wait(row.ref), 60))
    for state in states:
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
        assert state.trigger.trigger_type == TriggerType.WEBHOOK_V2
        assert state.source_revisions[0].revision_id == head
    assert await conveyor.list(detached["name"]) == []
    assert await conveyor.list(codecommit["name"]) == []


async def test_run_uses_the_connections_file_beside_the_pipeline(
    tmp_path: Path, hosted: Hosted, settings: Settings, server: EmbeddedServer
) -> None:
    """The example's way: `conveyor run FILE` brings up a worker that reads FILE's neighbour connections.yaml,
    whose relative paths are relative to it."""
    example = tmp_path / "example"
    example.mkdir()
    (example / "pipeline.yaml").write_text(EXAMPLE.read_text())
    hosted.root = example / "repos"
    hosted.create("my-org/conveyor", {"README.md": "hello\n"}, "Example commit")
    arn = next(line for line in (EXAMPLE.parent / "connections.yaml").read_text().splitlines() if line.startswith('"'))
    connections(example / "connections.yaml", f'{arn}\n  url: "repos/{{FullRepositoryId}}.git"\n')
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    done = await cli("run", str(example / "pipeline.yaml"), "--worker", env=env, timeout=90)
    assert done.code == 0, str(done)
    assert "Example commit" in done.out and hosted.head("my-org/conveyor") in done.out
