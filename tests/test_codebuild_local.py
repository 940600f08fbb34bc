"""The `local` CodeBuild runner in real executions (dev server, worker, bash, moto for SSM and Secrets Manager):
buildspec sources, one shell session across phases, on-failure, finally, exported variables, variable precedence,
artifacts and secondary artifacts, secrets masked and absent from history/memo/status, the cache, phases in status."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shlex
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.codebuild.local import LocalRunner, _masker
from activities.providers.codebuild import CodeBuildProvider
from conveyor.aws.identity import AwsIdentity
from conveyor.buildspec import BuildspecError, load_buildspec
from conveyor.client import ConveyorClient, ExecutionRef
from conveyor.devserver import EmbeddedServer
from conveyor.interface import stage_workflow_id
from conveyor.model import ActionContext, BuildPhaseStatus, ExecutionState, ExecutionStatus
from conveyor.providers.codebuild import CodeBuildInput
from conveyor.settings import Settings, action_log_path
from conveyor.spec.validation import validate_pipeline
from conveyor.stores.artifacts import LocalArtifactStore
from tests.aws import Aws
from tests.helpers import waiting_token
from tests.test_cli import cli_env
from tests.test_cli import conveyor as cli
from tests.test_commands_provider import Heartbeats, live_in_group, wait_for_members


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def source_action(files: dict[str, str], name: str = "Src") -> dict[str, Any]:
    """A Commands action that writes `files` and hands them on as artifact `name`."""
    commands = []
    for path, text in files.items():  # in pieces: a command holds at most 1000 characters
        commands.append(f'mkdir -p "$(dirname {shlex.quote(path)})" && : > {shlex.quote(path)}')
        commands += [
            f"printf '%s' {shlex.quote(text[i : i + 600])} >> {shlex.quote(path)}" for i in range(0, len(text), 600)
        ]
    return {
        "name": f"Make{name}",
        "provider": "Commands",
        "commands": commands,
        "outputArtifacts": [{"name": name, "files": ["**/*"]}],
    }


def build_pipeline(
    name: str, buildspec: dict[str, Any] | None, build: dict[str, Any], *after: dict[str, Any]
) -> dict[str, Any]:
    files = {"app.txt": "app"} | ({"buildspec.yml": yaml.safe_dump(buildspec)} if buildspec else {})
    stages = [
        {"name": "Source", "actions": [source_action(files)]},
        {
            "name": "Build",
            "actions": [{"name": "Compile", "provider": "CodeBuild", "inputArtifacts": [{"name": "Src"}], **build}],
        },
    ]
    if after:
        stages.append({"name": "Check", "actions": list(after)})
    return {"name": name, "stages": stages}


def configuration(project: str, **extra: str) -> dict[str, str]:
    return {"ProjectName": project, **extra}


async def run(conveyor: ConveyorClient, declaration: dict[str, Any]) -> tuple[ExecutionRef, ExecutionState]:
    ref, _ = await conveyor.start(declaration)
    state = await asyncio.wait_for(conveyor.wait(ref), 60)
    return ref, state


def build_log(settings: Settings, ref: ExecutionRef) -> str:
    return action_log_path(settings.logs_dir, ref.pipeline_name, ref.execution_id, "Build", "Compile").read_text()


def compile_state(state: ExecutionState) -> Any:
    stage = state.stage("Build")
    assert stage is not None
    return next(a for a in stage.actions if a.action_name == "Compile")


# --- the buildspec model ----------------------------------------------------------------------------


def test_buildspec_0_1_is_refused_with_a_clear_message() -> None:
    with pytest.raises(BuildspecError, match=r"buildspec 'b.yml': version 0.1 .* write `version: 0.2`"):
        load_buildspec("version: 0.1\nphases: {build: {commands: [make]}}\n", "'b.yml'")


def test_unknown_buildspec_keys_are_named_with_did_you_mean() -> None:
    with pytest.raises(BuildspecError, match=r"unknown key 'phases.biuld'; did you mean 'build'\?"):
        load_buildspec("version: 0.2\nphases: {biuld: {commands: [make]}}\n", "x")
    with pytest.raises(BuildspecError, match=r"'artifacts.secondary-artifacts.Docs.fils'; did you mean 'files'\?"):
        load_buildspec("version: 0.2\nartifacts: {secondary-artifacts: {Docs: {fils: [a]}}}\n", "x")
    with pytest.raises(BuildspecError, match=r"buildspec x: phases.build.on-failure: Input should be 'ABORT'"):
        load_buildspec("version: 0.2\nphases: {build: {on-failure: RETRY, commands: [make]}}\n", "x")


def test_buildspec_values_are_read_as_codebuild_reads_them() -> None:
    spec = load_buildspec(
        "version: 0.2\nenv: {variables: {N: 1.10, B: true}, exported-variables: V}\n"
        "artifacts: {files: '**/*', discard-paths: yes}\n",
        "x",
    )
    assert spec.env.variables == {"N": "1.1", "B": "true"}
    assert spec.env.exported_variables == ["V"]
    assert spec.artifacts is not None and spec.artifacts.files == ["**/*"] and spec.artifacts.discard_paths


# --- validation ---------------------------------------------------------------------------------------


def test_primary_source_is_required_with_several_inputs_and_codebuild_keys_only_on_codebuild() -> None:
    declaration = build_pipeline("v", None, {"configuration": configuration("p")})
    declaration["stages"][0]["actions"].append(source_action({"x": "y"}, "Extra"))
    build = declaration["stages"][1]["actions"][0]
    build["inputArtifacts"].append({"name": "Extra"})
    build["configuration"]["EnvironmentVariables"] = '[{"name": "A"}]'
    declaration["stages"][0]["actions"][0]["conveyor"] = {"codebuild": {"runner": "local"}}
    errors = [issue.render("p.yaml") for issue in validate_pipeline(declaration).errors]
    assert errors == [
        "p.yaml: stages[0].actions[0].conveyor.codebuild: this is for 'CodeBuild' actions",
        "p.yaml: stages[1].actions[0].configuration.PrimarySource: required with more than one input artifact: "
        "name one of Src, Extra",
        "p.yaml: stages[1].actions[0].configuration.EnvironmentVariables: entry 0: value: Field required",
    ]


# --- builds -------------------------------------------------------------------------------------------

SUCCEEDING = {
    "version": 0.2,
    "env": {
        "variables": {"OVER": "spec", "PROJ": "spec", "SPEC_ONLY": "spec"},
        "exported-variables": ["VERSION", "OVER", "PROJ", "SPEC_ONLY", "SEEN_IN_POST", "EXTRA"],
    },
    "phases": {
        "install": {"commands": ["export VERSION=1.$CODEBUILD_BUILD_NUMBER", "COUNT=1"]},
        "pre_build": {
            "commands": ["export COUNT=$((COUNT + 1))", 'export EXTRA="$(cat "$CODEBUILD_SRC_DIR_Extra/x")"']
        },
        "build": {
            "commands": [
                'test "$PWD" = "$CODEBUILD_SRC_DIR" && test -f app.txt',
                "mkdir -p out/deep docs && echo bin > out/deep/app.bin && echo skip > out/deep/skip.tmp",
                "echo guide > docs/guide.md",
                'echo "initiator=$CODEBUILD_INITIATOR id=$CODEBUILD_BUILD_ID"',
            ]
        },
        "post_build": {"commands": ['export SEEN_IN_POST="$VERSION/$COUNT/$CODEBUILD_BUILD_SUCCEEDING"']},
    },
    "artifacts": {
        "files": ["**/*"],
        "base-directory": "out",
        "exclude-paths": ["**/*.tmp"],
        "secondary-artifacts": {"Docs": {"files": ["docs/*.md"], "discard-paths": "yes"}},
    },
}


async def test_one_session_exported_variables_precedence_and_secondary_artifacts(
    conveyor: ConveyorClient, worker: Worker, settings: Settings, server: EmbeddedServer
) -> None:
    name = unique("cb-ok")
    check = {
        "name": "Inspect",
        "provider": "Commands",
        "inputArtifacts": [{"name": "Bundle"}, {"name": "Docs"}],
        "commands": [
            "find . -type f | sort > /dev/stderr",
            'test "$(cat deep/app.bin)" = bin && test ! -e deep/skip.tmp && test ! -e out',
            'test "$(cat "$CODEBUILD_SRC_DIR_Docs/guide.md")" = guide',
            'test "#{Build.SEEN_IN_POST}" = "#{Build.VERSION}/2/1"',
        ],
    }
    declaration = build_pipeline(
        name,
        SUCCEEDING,
        {
            "namespace": "Build",
            "inputArtifacts": [{"name": "Extra"}, {"name": "Src"}],
            "configuration": configuration(
                name, PrimarySource="Src", EnvironmentVariables='[{"name": "OVER", "value": "action"}]'
            ),
            "outputArtifacts": [{"name": "Bundle"}, {"name": "Docs"}],
            "conveyor": {
                "codebuild": {
                    "environment": [{"name": "OVER", "value": "project"}, {"name": "PROJ", "value": "project"}]
                }
            },
        },
        check,
    )
    declaration["stages"][0]["actions"].append(source_action({"x": "extra"}, "Extra"))
    ref, state = await run(conveyor, declaration)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    action = compile_state(state)
    variables = action.output_variables
    assert variables == {
        "VERSION": variables["VERSION"],
        "OVER": "action",  # the action's EnvironmentVariables over the project's over the buildspec's
        "PROJ": "project",
        "SPEC_ONLY": "spec",
        "SEEN_IN_POST": f"{variables['VERSION']}/2/1",  # install's and pre_build's exports seen in post_build
        "EXTRA": "extra",
    }
    assert variables["VERSION"].startswith("1.") and variables["VERSION"] != "1."
    assert [(p.name, p.status) for p in action.phases] == [
        (n, BuildPhaseStatus.SUCCEEDED) for n in ("INSTALL", "PRE_BUILD", "BUILD", "POST_BUILD")
    ]
    assert all(p.started_at and p.finished_at and p.started_at <= p.finished_at for p in action.phases)
    log = build_log(settings, ref)
    assert f"initiator=codepipeline/{name} id={name}:" in log
    assert "not in the project's image" in log and log.count("not in the project's image") == 1
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    status = await cli("status", ref.workflow_id, env=env)
    assert status.code == 0, str(status)
    assert "phase BUILD SUCCEEDED" in status.out and "phase POST_BUILD SUCCEEDED" in status.out


FAILING = {
    "version": 0.2,
    "phases": {
        "install": {"commands": ["echo install"]},
        "pre_build": {
            "on-failure": "CONTINUE",
            "commands": ["echo pre-one", "false", "echo pre-never"],
            "finally": ['echo "pre-finally succeeding=$CODEBUILD_BUILD_SUCCEEDING"'],
        },
        "build": {
            "commands": ["echo build-runs", "exit_code_7() { return 7; }", "exit_code_7", "echo build-never"],
            "finally": ["echo build-finally"],
        },
        "post_build": {"commands": ['echo "post succeeding=$CODEBUILD_BUILD_SUCCEEDING"', "false"]},
    },
}


async def test_on_failure_continue_finally_and_post_build_after_a_failed_build(
    conveyor: ConveyorClient, worker: Worker, settings: Settings, server: EmbeddedServer
) -> None:
    name = unique("cb-fail")
    ref, state = await run(conveyor, build_pipeline(name, FAILING, {"configuration": configuration(name)}))
    assert state.status == ExecutionStatus.FAILED
    action = compile_state(state)
    assert action.error is not None and action.error.code == "BuildFailed"
    assert action.error.message.startswith("phase PRE_BUILD, BUILD, POST_BUILD failed")
    assert [(p.name, p.status) for p in action.phases] == [
        ("INSTALL", BuildPhaseStatus.SUCCEEDED),
        ("PRE_BUILD", BuildPhaseStatus.FAILED),
        ("BUILD", BuildPhaseStatus.FAILED),  # ran: pre_build's on-failure is CONTINUE
        ("POST_BUILD", BuildPhaseStatus.FAILED),  # ran after the failed build phase (ABORT)
    ]
    log = build_log(settings, ref)
    assert "pre-one\n" in log and "pre-never" not in log
    assert "pre-finally succeeding=0\n" in log and "build-runs\n" in log and "build-never" not in log
    assert "[Container] Command did not exit successfully exit_code_7 exit status 7" in log
    assert "build-finally\n" in log and "post succeeding=0\n" in log
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    status = await cli("status", ref.workflow_id, env=env)
    assert "phase PRE_BUILD FAILED" in status.out and "phase INSTALL SUCCEEDED" in status.out, str(status)


async def test_abort_skips_later_phases_and_a_missing_buildspec_is_named(
    conveyor: ConveyorClient, worker: Worker
) -> None:
    name = unique("cb-abort")
    spec = {"version": "0.2", "phases": {"install": {"commands": ["false"]}, "build": {"commands": ["echo b"]}}}
    _, state = await run(conveyor, build_pipeline(name, spec, {"configuration": configuration(name)}))
    assert [(p.name, p.status) for p in compile_state(state).phases] == [("INSTALL", BuildPhaseStatus.FAILED)]
    _, state = await run(conveyor, build_pipeline(name, None, {"configuration": configuration(name)}))
    error = compile_state(state).error
    assert error is not None and error.code == "ConfigurationError"
    assert error.message.startswith("buildspec 'buildspec.yml' not found in the primary input artifact 'Src'")
    batch = build_pipeline(name, None, {"configuration": configuration(name, BatchEnabled="true")})
    _, state = await run(conveyor, batch)
    error = compile_state(state).error
    assert error is not None and error.message.startswith("BatchEnabled: the local runner does not run batch builds")
    spec["env"] = {"shell": "powershell.exe"}
    _, state = await run(conveyor, build_pipeline(name, spec, {"configuration": configuration(name)}))
    error = compile_state(state).error
    assert error is not None and error.message == (
        "buildspec 'buildspec.yml' (primary input): env.shell 'powershell.exe' cannot run on the local runner; "
        "use bash or sh (or the aws runner)"
    )


async def test_buildspec_sources_in_order(conveyor: ConveyorClient, worker: Worker, settings: Settings) -> None:
    """The action's override (a path, else inline), else the imported project's, else buildspec.yml."""

    def spec(word: str) -> dict[str, Any]:
        return {"version": 0.2, "phases": {"build": {"commands": [f"echo from-{word}"]}}}

    name = unique("cb-src")
    base = build_pipeline(name, spec("file"), {"configuration": configuration(name)})
    base["stages"][0]["actions"][0] = source_action(
        {"buildspec.yml": yaml.safe_dump(spec("file")), "ci/other.yml": yaml.safe_dump(spec("path"))}
    )
    cases = [
        ({}, "from-file"),
        ({"buildspec": yaml.safe_dump(spec("imported"))}, "from-imported"),
        (
            {"buildspec": yaml.safe_dump(spec("imported")), "codebuild": {"buildspec": yaml.safe_dump(spec("inline"))}},
            "from-inline",
        ),
        ({"buildspec": yaml.safe_dump(spec("imported")), "codebuild": {"buildspecPath": "ci/other.yml"}}, "from-path"),
    ]
    for extension, expected in cases:
        declaration = json.loads(json.dumps(base))
        declaration["stages"][1]["actions"][0]["conveyor"] = extension
        ref, state = await run(conveyor, declaration)
        assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
        log = build_log(settings, ref)
        assert f"{expected}\n" in log, (extension, log)


async def test_cache_paths_are_restored_on_the_second_execution(
    conveyor: ConveyorClient, worker: Worker, settings: Settings
) -> None:
    name = unique("cb-cache")
    spec = {
        "version": 0.2,
        "phases": {
            "install": {
                "commands": [
                    'if [ -f deps/lib.txt ]; then echo "reused $(cat deps/lib.txt)"; '
                    'else mkdir -p deps && echo "$CODEBUILD_BUILD_NUMBER" > deps/lib.txt && echo fetched; fi'
                ]
            }
        },
        "cache": {"paths": ["deps/**/*", "/root/.m2/**/*"]},
    }
    declaration = build_pipeline(name, spec, {"configuration": configuration(name)})
    first, state = await run(conveyor, declaration)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    log = build_log(settings, first)
    assert "cache: miss" in log and "fetched\n" in log
    assert "paths outside the source directory are not cached locally: /root/.m2/**/*" in log
    second, state = await run(conveyor, declaration)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    log = build_log(settings, second)
    assert "[conveyor] cache: hit, 1 files restored" in log
    assert "reused 1\n" in log  # the first build's file (build number 1), not fetched again


# --- secrets ------------------------------------------------------------------------------------------

PARAMETER = "s3cr3t-parameter-value-81"
SECRET = "s3cr3t-password-value-97"
ACTION_SECRET = "s3cr3t-action-parameter-53"


async def test_parameter_store_and_secrets_manager_values_reach_the_build_masked_and_never_recorded(
    aws: Aws,
    conveyor: ConveyorClient,
    worker: Worker,
    settings: Settings,
    server: EmbeddedServer,
    temporal_client: Client,
) -> None:
    aws.client("ssm").put_parameter(Name="/app/token", Value=PARAMETER, Type="SecureString")
    aws.client("ssm").put_parameter(Name="/app/action", Value=ACTION_SECRET, Type="SecureString")
    secret = aws.client("secretsmanager").create_secret(
        Name="app/db", SecretString=json.dumps({"password": SECRET, "user": "app"})
    )
    name = unique("cb-secret")
    spec = {
        "version": 0.2,
        "env": {
            "parameter-store": {"TOKEN": "/app/token"},
            "secrets-manager": {"DB_PASSWORD": "app/db:password", "DB_USER": f"{secret['ARN']}:user:AWSCURRENT"},
            "exported-variables": ["DB_USER"],
        },
        "phases": {
            "build": {
                "commands": [
                    f'test "$TOKEN" = {PARAMETER} && test "$DB_PASSWORD" = {SECRET} && test "$DB_USER" = app',
                    f'test "$FROM_ACTION" = {ACTION_SECRET}',
                    'test -z "${AWS_SECRET_ACCESS_KEY:-}"',  # the worker's own credentials stay out (clean env)
                    'echo "token=$TOKEN password=$DB_PASSWORD action=$FROM_ACTION"',
                    'echo "again:$TOKEN:end"',
                ]
            },
            "post_build": {"commands": ['echo "failing with $DB_PASSWORD"', "false"]},
        },
    }
    variables = json.dumps([{"name": "FROM_ACTION", "value": "/app/action", "type": "PARAMETER_STORE"}])
    declaration = build_pipeline(
        name, spec, {"configuration": configuration(name, EnvironmentVariables=variables), "namespace": "B"}
    )
    ref, state = await run(conveyor, declaration)
    action = compile_state(state)
    # The build saw the values (its checks passed in the build phase); post_build fails on purpose: the error too.
    assert [(p.name, p.status) for p in action.phases] == [
        ("BUILD", BuildPhaseStatus.SUCCEEDED),
        ("POST_BUILD", BuildPhaseStatus.FAILED),
    ]
    assert action.error is not None and "failing with ***" in action.error.message
    log = build_log(settings, ref)
    assert "token=*** password=*** action=***\n" in log and "again:***:end\n" in log

    records = [log]
    for workflow_id in (ref.workflow_id, *(stage_workflow_id(name, ref.execution_id, s) for s in ("Source", "Build"))):
        handle = temporal_client.get_workflow_handle(workflow_id)
        records.append((await handle.fetch_history()).to_json())
        description = await handle.describe()
        records.append(str(description.raw_description.workflow_execution_info.memo))
        records.append(json.dumps(await description.memo(), default=str))
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    status = await cli("status", ref.workflow_id, "-o", "json", env=env)
    assert status.code == 0, str(status)
    records += [status.out, status.err]
    assert any("failing with ***" in record for record in records[1:])  # the history was read
    for record in records:
        for value in (PARAMETER, SECRET, ACTION_SECRET):
            assert value not in record


async def test_runner_per_action_over_per_pipeline(
    conveyor: ConveyorClient, worker: Worker, settings: Settings
) -> None:
    """`conveyor.codebuildRunner` on the pipeline picks the runner of CodeBuild actions that name none."""
    name = unique("cb-runner")
    spec = {"version": 0.2, "phases": {"build": {"commands": ["echo ran-locally"]}}}
    declaration = build_pipeline(name, spec, {"configuration": configuration(name)})
    declaration["conveyor"] = {"codebuildRunner": "aws"}
    declaration["stages"][1]["actions"][0]["conveyor"] = {"codebuild": {"runner": "local"}}
    ref, state = await run(conveyor, declaration)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert "ran-locally\n" in build_log(settings, ref)
    del declaration["stages"][1]["actions"][0]["conveyor"]
    ref, state = await run(conveyor, declaration)
    assert state.status == ExecutionStatus.FAILED  # the aws runner: it needs an S3 store and a real project
    error = compile_state(state).error
    assert error is not None and "aws CodeBuild runner" in error.message, error
    path = action_log_path(settings.logs_dir, name, ref.execution_id, "Build", "Compile")
    assert "[Container]" not in (path.read_text() if path.exists() else "")  # the local runner never ran


async def test_resolved_source_version_is_the_sources_commit(
    conveyor: ConveyorClient, worker: Worker, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    spec = {
        "version": 0.2,
        "env": {"exported-variables": ["SEEN"]},
        "phases": {"build": {"commands": ['export SEEN="$CODEBUILD_RESOLVED_SOURCE_VERSION"']}},
    }
    (repo / "buildspec.yml").write_text(yaml.safe_dump(spec))
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q", "-b", "main"], ["add", "."], ["commit", "-q", "-m", "first"]):
        process = await asyncio.create_subprocess_exec(*git, *args)
        assert await process.wait() == 0
    process = await asyncio.create_subprocess_exec(*git, "rev-parse", "HEAD", stdout=asyncio.subprocess.PIPE)
    commit = (await process.communicate())[0].decode().strip()
    name = unique("cb-rev")
    checkout = {
        "name": "Checkout",
        "provider": "Git",
        "configuration": {"RepositoryUrl": str(repo), "BranchName": "main"},
        "outputArtifacts": [{"name": "Src"}],
    }
    declaration = build_pipeline(name, None, {"configuration": configuration(name)})
    declaration["stages"][0]["actions"] = [checkout]
    _, state = await run(conveyor, declaration)
    assert state.status == ExecutionStatus.SUCCEEDED, state.status_summary
    assert compile_state(state).output_variables == {"SEEN": commit}


def test_every_line_of_a_multi_line_secret_is_masked() -> None:
    key = "-----BEGIN KEY-----\nAAAAsecretline1\nBBBBsecretline2\n-----END KEY-----"
    mask = _masker([key, "tok3n"])
    assert mask("x tok3n y") == "x *** y"
    assert [mask(line) for line in key.splitlines()] == ["***"] * 4
    assert mask("nothing here") == "nothing here"


async def test_cancellation_kills_the_builds_process_group_and_removes_its_workspace(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    store = LocalArtifactStore(settings.artifacts_dir)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.txt").write_text("app")
    spec = {"version": 0.2, "phases": {"build": {"commands": ["sleep 300 & sleep 301"]}}}
    input = CodeBuildInput(
        context=ActionContext(pipeline_name="p", execution_id="e", stage_name="Build", action_name="Compile"),
        identity=AwsIdentity(session_name="p"),
        project_name="p",
        input_artifacts=[store.put("Src", tmp_path / "src", ["**/*"])],
        buildspec=yaml.safe_dump(spec),
    )
    env = ActivityEnvironment()
    beats = Heartbeats(env)
    task = asyncio.create_task(env.run(CodeBuildProvider(settings, store).codebuild, input))
    record = await beats.first_record()
    await wait_for_members(record.pgid, 3)
    env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert live_in_group(record.pgid) == []
    assert list(settings.workspaces_dir.iterdir()) == []


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "codebuild-release"


async def test_the_codebuild_release_example_runs_with_one_command(
    tmp_path: Path, conveyor: ConveyorClient, settings: Settings, server: EmbeddedServer
) -> None:
    """The example exactly as shipped, as a user runs it (`conveyor run FILE`, approving from elsewhere): its
    connection maps to the git bundle beside it, whose buildspec.yml at the root the build runs."""
    deploy = tmp_path / "deployed"
    env = cli_env(settings.data_dir, server.address, settings.task_queue)
    running = asyncio.create_task(
        cli("run", str(EXAMPLE / "pipeline.yaml"), "--worker", "--var", f"DeployRoot={deploy}", env=env, timeout=120)
    )

    async def waiting() -> ExecutionRef:
        while True:
            for summary in await conveyor.list("codebuild-release"):
                state = await conveyor.state(summary.ref)
                stage = state.stage("Approval")
                if stage and any(a.token for a in stage.actions):
                    return summary.ref
            await asyncio.sleep(0.3)

    ref = await asyncio.wait_for(waiting(), 60)
    token = await waiting_token(conveyor, ref, "Approval", "ApproveRelease")
    state = await conveyor.state(ref)
    build = state.stage("Build")
    assert build is not None and build.actions[0].output_variables["SITE_VERSION"].startswith("1.0.")
    await conveyor.decide(ref, "Approval", "ApproveRelease", approve=True, token=token, by="tester")
    done = await running
    assert done.code == 0, str(done)
    page = (deploy / "index.html").read_text()
    assert "<h1>Conveyor example</h1>" in page and "version 1.0." in page  # built by the repository's buildspec
    commit = state.stage("Source").actions[0].output_variables["CommitId"]  # type: ignore[union-attr]
    assert (deploy / "RELEASE.txt").read_text() == f"commit {commit}\n"


def test_build_numbers_of_one_project_are_counted_once_each_when_builds_run_at_once(tmp_path: Path) -> None:
    """CODEBUILD_BUILD_NUMBER: builds of one project started together (several actions or workers on one data
    directory) never get the same number."""
    runner = LocalRunner(Settings(data_dir=tmp_path), LocalArtifactStore(tmp_path / "artifacts"))
    project = CodeBuildInput.model_construct(project_name="site")
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        numbers = list(pool.map(lambda _: runner._build_number(project), range(200)))
    assert sorted(numbers) == list(range(1, 201))
