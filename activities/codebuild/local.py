"""The `local` CodeBuild runner: the action's buildspec 0.2 run on the worker, in the Commands provider's sandbox
(clean environment, process group, heartbeats, cancellation, log in the store).

The whole build is ONE bash session: the phases become one generated script whose markers (a file beside it) tell
the runner where each phase started and ended and how; so `export X=1` in install is seen by post_build. CodeBuild's
phase rules: a failed command ends its phase (its `finally` still runs); with `on-failure: ABORT` (the default) the
later phases are skipped, except post_build after a failed build phase; with CONTINUE the next phase runs and the
build still fails. Environment (later wins): the sandbox's base, the buildspec's `env` (variables, parameter-store,
secrets-manager), the project's (`conveyor.codebuild.environment`), the action's `EnvironmentVariables`, then
CodeBuild's built-in variables. Values read from SSM or Secrets Manager are replaced by `***` in the log.

Not applied locally (said once in the log): the project's Docker image, `runtime-versions`, `reports`, `run-as`,
`proxy`, `batch`, `git-credential-helper`; the build runs with the worker's tools.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shlex
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws.session import AwsSessions, aws_errors
from activities.providers.commands import (
    DEFAULT_PATH,
    PASS_ENV_VARIABLE,
    WORKER_ENV_NAMES,
    Workspace,
    kill_previous_attempt_orphans,
    non_retryable,
    parse_env_dump,
    prepare_workspace,
    remove_workspace,
    run_sandboxed,
    workspace_key,
)
from conveyor.buildspec import DEFAULT_BUILDSPEC, Buildspec, BuildspecError, OnFailure, Phase, load_buildspec
from conveyor.model import PHASES_DETAIL, ActionOutcome, ArtifactRef, BuildPhase, BuildPhaseStatus
from conveyor.providers.codebuild import BuildVariable, BuildVariableType, CodeBuildInput
from conveyor.settings import Settings
from conveyor.stores.archive import matching_files
from conveyor.stores.artifacts import ArtifactError, ArtifactStore, store_for_outputs
from conveyor.stores.logs import ActionLogName, attempt_label, open_action_log

MASK = "***"
CACHE_DIR = "codebuild-cache"
BUILD_NUMBERS = "codebuild-build-numbers"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_NOT_LOCAL = (
    "[conveyor] local CodeBuild runner: the build runs on the worker with its tools, not in the project's image"
)


class LocalRunner:
    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings = settings
        self.store = store
        self.sessions = AwsSessions(settings)

    async def run(self, input: CodeBuildInput) -> ActionOutcome:
        ctx = input.context
        log = structlog.get_logger().bind(
            pipeline=ctx.pipeline_name, execution=ctx.execution_id, stage=ctx.stage_name, action=ctx.action_name
        )
        await kill_previous_attempt_orphans(log)
        if input.batch_enabled:
            raise non_retryable(
                "BatchEnabled: the local runner does not run batch builds; set it to false or use the aws runner "
                "(conveyor.codebuild.runner: aws)",
                "ConfigurationError",
            )
        attempt = ctx.action_attempt
        workspace = Workspace(
            self.settings.workspaces_dir / workspace_key(ctx) / f"attempt-{attempt}-{activity.info().attempt}"
        )
        try:
            await asyncio.to_thread(prepare_workspace, self.store, input.input_artifacts, workspace)
            spec = await asyncio.to_thread(_buildspec, input, workspace)
            secrets = await asyncio.to_thread(self._resolve_secrets, input, spec)
            env = build_environment(input, spec, workspace, os.environ, secrets, self._build_number(input))
            cache = self.settings.data_dir / CACHE_DIR / _UNSAFE.sub("_", input.project_name)
            notes = [*_not_applied(spec), *await asyncio.to_thread(_restore_cache, spec, cache, workspace)]
            await asyncio.to_thread(workspace.script.write_text, render_build_script(spec, workspace, notes))
            log_name = ActionLogName(ctx.pipeline_name, ctx.execution_id, ctx.stage_name, ctx.action_name)
            log_file = await asyncio.to_thread(
                open_action_log, self.settings, log_name, attempt_label(attempt, activity.info().attempt)
            )
            masked = _masker(list(secrets.values()))
            done = await run_sandboxed(workspace, env, log_file, attempt, input.timeout_seconds, log, masked)
            phases = await asyncio.to_thread(read_phases, _markers(workspace))
            if done.returncode != 0 or any(p.status != BuildPhaseStatus.SUCCEEDED for p in phases):
                raise _build_failure(phases, done.returncode, [masked(line) for line in done.tail])
            exported = parse_env_dump(workspace.env_dump.read_bytes()) if workspace.env_dump.exists() else {}
            variables = {n: exported[n] for n in spec.env.exported_variables if n in exported}
            artifacts = await self._put_artifacts(input, spec, workspace)
            saved = await asyncio.to_thread(_save_cache, spec, cache, workspace)
        finally:
            await asyncio.to_thread(remove_workspace, workspace)
        log.info("codebuild.local.succeeded", phases=len(phases), artifacts=len(artifacts), cached=saved)
        return ActionOutcome(
            output_variables=variables,
            output_artifacts=artifacts,
            summary=f"build of {input.project_name} succeeded ({len(phases)} phases, locally)",
            phases=phases,
        )

    def _resolve_secrets(self, input: CodeBuildInput, spec: Buildspec) -> dict[str, str]:
        """Every PARAMETER_STORE and SECRETS_MANAGER value the build gets, by variable name (blocking)."""
        wanted: list[tuple[str, BuildVariableType, str]] = [
            *((n, BuildVariableType.PARAMETER_STORE, v) for n, v in spec.env.parameter_store.items()),
            *((n, BuildVariableType.SECRETS_MANAGER, v) for n, v in spec.env.secrets_manager.items()),
            *(
                (v.name, v.type, v.value)
                for v in [*input.project_environment_variables, *input.environment_variables]
                if v.type != BuildVariableType.PLAINTEXT
            ),
        ]
        if not wanted:
            return {}
        action = input.context.action_name
        role = self.sessions.role(input.identity)
        resolved: dict[str, str] = {}
        for name, kind, reference in wanted:
            if kind == BuildVariableType.PARAMETER_STORE:
                with aws_errors(input.context.action_name, "ssm:GetParameter", role, target=reference):
                    answer = self.sessions.client(input.identity, "ssm", action).get_parameter(
                        Name=reference, WithDecryption=True
                    )
                resolved[name] = answer["Parameter"]["Value"]
            else:
                secrets = self.sessions.client(input.identity, "secretsmanager", action)
                resolved[name] = _secret_value(secrets, action, role, name, reference)
        return resolved

    def _build_number(self, input: CodeBuildInput) -> int:
        """CODEBUILD_BUILD_NUMBER: this project's builds on this worker's data directory, counted."""
        path = self.settings.data_dir / BUILD_NUMBERS / _UNSAFE.sub("_", input.project_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Locked: two builds of one project at once (two actions, two workers on one data directory) count twice.
        with path.open("a+") as counter:
            fcntl.flock(counter, fcntl.LOCK_EX)
            counter.seek(0)
            try:
                number = int(counter.read().strip() or 0) + 1
            except ValueError:
                number = 1
            counter.seek(0)
            counter.truncate()
            counter.write(f"{number}\n")
            return number

    async def _put_artifacts(self, input: CodeBuildInput, spec: Buildspec, workspace: Workspace) -> list[ArtifactRef]:
        try:
            store = store_for_outputs(self.store, input.context.artifact_stores)
        except ArtifactError as exc:
            raise non_retryable(str(exc), "ArtifactError") from exc
        refs = []
        for index, name in enumerate(input.output_artifacts):
            staging = workspace.meta / "artifacts" / name
            root, files = await asyncio.to_thread(_stage_artifact, spec, name, index, workspace.src, staging)
            try:
                refs.append(await asyncio.to_thread(store.put, name, root, files))
            except ArtifactError as exc:
                raise non_retryable(str(exc), "ArtifactError") from exc
        return refs


# --- The buildspec --------------------------------------------------------------------------------


def _buildspec(input: CodeBuildInput, workspace: Workspace) -> Buildspec:
    """The override or imported buildspec, else the file in the primary input (`buildspec_path`, buildspec.yml)."""
    spec, source = _load(input, workspace)
    _check_shell(spec, source)
    return spec


def _load(input: CodeBuildInput, workspace: Workspace) -> tuple[Buildspec, str]:
    try:
        if input.buildspec is not None and input.buildspec_path is None:
            source = f"of action '{input.context.action_name}' (conveyor)"
            return load_buildspec(input.buildspec, source), source
        rel = input.buildspec_path or DEFAULT_BUILDSPEC
        path = _inside(workspace.src, rel)
        if path is None or not path.is_file():
            raise non_retryable(
                f"buildspec '{rel}' not found in the primary input artifact"
                + (f" '{input.input_artifacts[0].name}'" if input.input_artifacts else "")
                + ": add it to the source, or set conveyor.codebuild.buildspec (inline) or .buildspecPath",
                "ConfigurationError",
            )
        source = f"'{rel}' (primary input)"
        return load_buildspec(path.read_text(errors="replace"), source), source
    except BuildspecError as err:
        raise non_retryable(str(err), "ConfigurationError") from None


def _inside(root: Path, rel: str) -> Path | None:
    """`rel` under `root`, or None when it would leave it."""
    parts = PurePosixPath(rel).parts
    if PurePosixPath(rel).is_absolute() or ".." in parts:
        return None
    return root.joinpath(*parts)


BASH_SHELLS = frozenset({"bash", "/bin/bash", "/usr/bin/bash"})
SH_SHELLS = frozenset({"sh", "/bin/sh"})  # run with bash: a superset for the commands buildspecs hold


def _check_shell(spec: Buildspec, source: str) -> None:
    shell = spec.env.shell
    if shell is not None and shell not in BASH_SHELLS | SH_SHELLS:
        raise non_retryable(
            f"buildspec {source}: env.shell '{shell}' cannot run on the local runner; use bash or sh "
            "(or the aws runner)",
            "ConfigurationError",
        )


def _not_applied(spec: Buildspec) -> list[str]:
    keys = spec.not_applied_locally()
    if spec.env.shell in SH_SHELLS:
        keys.append(f"env.shell {spec.env.shell} (run with bash)")
    line = _NOT_LOCAL + (f"; not applied locally: {', '.join(keys)}" if keys else "")
    return [line + " (README: CodeBuild, what `local` cannot do)"]


# --- Environment ----------------------------------------------------------------------------------


def _secret_value(client: Any, action: str, role: str | None, name: str, reference: str) -> str:
    """`secret-id:json-key:version-stage:version-id` (an ARN secret-id has colons of its own)."""
    parts = reference.split(":")
    split = 7 if reference.startswith("arn:") else 1
    secret_id, rest = ":".join(parts[:split]), parts[split:] + ["", "", ""]
    json_key, stage, version = rest[0], rest[1], rest[2]
    call: dict[str, str] = {"SecretId": secret_id}
    if stage:
        call["VersionStage"] = stage
    if version:
        call["VersionId"] = version
    with aws_errors(action, "secretsmanager:GetSecretValue", role, target=secret_id):
        text = str(client.get_secret_value(**call).get("SecretString", ""))
    if not json_key:
        return text
    try:
        value = json.loads(text)[json_key]
    except (ValueError, KeyError, TypeError):
        raise non_retryable(
            f"variable '{name}': secret '{secret_id}' has no JSON key '{json_key}'", "ConfigurationError"
        ) from None
    return value if isinstance(value, str) else json.dumps(value)


def build_environment(
    input: CodeBuildInput,
    spec: Buildspec,
    workspace: Workspace,
    worker_env: Mapping[str, str],
    secrets: Mapping[str, str],
    build_number: int,
) -> dict[str, str]:
    """The build's environment, later entries winning (module docstring)."""
    env = {name: worker_env[name] for name in WORKER_ENV_NAMES if name in worker_env}
    env.setdefault("PATH", DEFAULT_PATH)
    env["TMPDIR"] = str(workspace.tmp)
    ctx = input.context
    env |= {
        "CONVEYOR_PIPELINE_NAME": ctx.pipeline_name,
        "CONVEYOR_EXECUTION_ID": ctx.execution_id,
        "CONVEYOR_STAGE_NAME": ctx.stage_name,
        "CONVEYOR_ACTION_NAME": ctx.action_name,
    }
    for name in (n.strip() for n in worker_env.get(PASS_ENV_VARIABLE, "").split(",")):
        if name and name in worker_env:
            env[name] = worker_env[name]
    env |= spec.env.variables
    env |= {name: secrets[name] for name in [*spec.env.parameter_store, *spec.env.secrets_manager]}
    for variable in [*input.project_environment_variables, *input.environment_variables]:
        env[variable.name] = _value(variable, secrets)
    region = input.identity.region or worker_env.get("AWS_REGION") or worker_env.get("AWS_DEFAULT_REGION") or ""
    build_id = f"{input.project_name}:{workspace_key(ctx)}"
    env |= {
        "CODEBUILD_SRC_DIR": str(workspace.src),
        "CONVEYOR_SRC_DIR": str(workspace.src),
        "CODEBUILD_BUILD_ID": build_id,
        "CODEBUILD_BUILD_NUMBER": str(build_number),
        "CODEBUILD_INITIATOR": f"codepipeline/{ctx.pipeline_name}",
        "CODEBUILD_RESOLVED_SOURCE_VERSION": input.source_version or "",
        "CODEBUILD_BUILD_SUCCEEDING": "1",
        "CODEBUILD_START_TIME": str(int(time.time() * 1000)),
        "CODEBUILD_LOCAL": "true",
    }
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    for ref in input.input_artifacts[1:]:
        env[f"CODEBUILD_SRC_DIR_{ref.name}"] = env[f"CONVEYOR_SRC_DIR_{ref.name}"] = str(
            workspace.artifact_dir(ref.name)
        )
    return env


def _value(variable: BuildVariable, secrets: Mapping[str, str]) -> str:
    return variable.value if variable.type == BuildVariableType.PLAINTEXT else secrets[variable.name]


def _masker(values: list[str]) -> Callable[[str], str]:
    """Each secret value replaced by `***` wherever it appears, longest first (one may contain another). The log
    is masked line by line, so each line of a multi-line value (a key in PEM) is masked too."""
    pieces = {v for v in values if v} | {line.strip() for v in values for line in v.splitlines()[1:] if line.strip()}
    pieces |= {line.strip() for v in values if "\n" in v for line in v.splitlines()[:1] if line.strip()}
    ordered = sorted(pieces, key=len, reverse=True)
    if not ordered:
        return lambda line: line
    pattern = re.compile("|".join(re.escape(v) for v in ordered))
    return lambda line: pattern.sub(MASK, line)


# --- The script and its markers -------------------------------------------------------------------


def _markers(workspace: Workspace) -> Path:
    return workspace.meta / "phases"


def render_build_script(spec: Buildspec, workspace: Workspace, notes: list[str]) -> str:
    """One bash script for the whole build (module docstring: CodeBuild's phase rules)."""
    markers = shlex.quote(str(_markers(workspace)))
    lines = [
        "__cb_abort=0 __cb_abort_after_build=0 __cb_failed=0",
        f'__cb_mark() {{ printf \'%s %s\\n\' "$*" "$EPOCHREALTIME" >> {markers}; }}',
        *(f"printf '%s\\n' {shlex.quote(note)}" for note in notes),
    ]
    for name, phase in spec.phases.in_order():
        lines += _phase_lines(name, phase)
    lines += [
        f"env -0 > {shlex.quote(str(workspace.env_dump))}",
        'exit "$__cb_failed"',
    ]
    return "\n".join(lines) + "\n"


def _phase_lines(name: str, phase: Phase) -> list[str]:
    label = name.upper()
    runs = '[ "$__cb_abort" = 0 ]' + (' || [ "$__cb_abort_after_build" = 1 ]' if name == "post_build" else "")
    out = [
        f"if {runs}; then",
        "__cb_ok=1",
        f"__cb_mark START {label}",
        f"printf '%s\\n' {shlex.quote(f'[Container] Entering phase {label}')}",
    ]
    for command in phase.commands:
        out += _command_lines(command, guarded=True)
    for command in phase.finally_:
        out += _command_lines(command, guarded=False)
    abort = "__cb_abort=1" + ("; __cb_abort_after_build=1" if name == "build" else "")
    on_failure = abort if phase.on_failure == OnFailure.ABORT else ":"
    out += [
        'if [ "$__cb_ok" = 1 ]; then __cb_state=SUCCEEDED; else __cb_state=FAILED; '
        f"__cb_failed=1; CODEBUILD_BUILD_SUCCEEDING=0; export CODEBUILD_BUILD_SUCCEEDING; {on_failure}; fi",
        f"__cb_mark END {label} $__cb_state",
        f"printf '%s\\n' \"[Container] Phase complete: {label} State: $__cb_state\"",
        "fi",
    ]
    return out


def _command_lines(command: str, guarded: bool) -> list[str]:
    """A command in the session, its status kept; `guarded` ones are skipped once their phase failed."""
    announce = f"printf '%s\\n' {shlex.quote(f'[Container] Running command {command}')}"
    body = [
        announce,
        command,
        '__cb_rc=$?; if [ "$__cb_rc" != 0 ]; then __cb_ok=0 CODEBUILD_BUILD_SUCCEEDING=0; '
        f"printf '%s\\n' \"[Container] Command did not exit successfully {_quoted_for_dq(command)} "
        'exit status $__cb_rc"; fi',
    ]
    if not guarded:
        return body
    return ['if [ "$__cb_ok" = 1 ]; then', *body, "fi"]


def _quoted_for_dq(command: str) -> str:
    """The command's first line, safe inside a double-quoted bash string."""
    first = command.strip().splitlines()[0] if command.strip() else ""
    return re.sub(r'(["$`\\])', r"\\\1", first[:200])


def read_phases(markers: Path) -> list[BuildPhase]:
    """The phases the script marked; one started and never ended (the shell exited in it) failed then."""
    phases: list[BuildPhase] = []
    try:
        text = markers.read_text()
    except OSError:
        return phases
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        at = datetime.fromtimestamp(float(parts[-1]), UTC)
        if parts[0] == "START":
            phases.append(BuildPhase(name=parts[1], status=BuildPhaseStatus.IN_PROGRESS, started_at=at))
        elif parts[0] == "END" and phases and phases[-1].name == parts[1] and len(parts) == 4:
            phases[-1] = phases[-1].model_copy(update={"status": BuildPhaseStatus(parts[2]), "finished_at": at})
    now = datetime.now(UTC)
    return [
        p.model_copy(update={"status": BuildPhaseStatus.FAILED, "finished_at": now})
        if p.status == BuildPhaseStatus.IN_PROGRESS
        else p
        for p in phases
    ]


def _build_failure(phases: list[BuildPhase], returncode: int | None, tail: list[str]) -> ApplicationError:
    failed = [p.name for p in phases if p.status != BuildPhaseStatus.SUCCEEDED]
    if returncode is not None and returncode < 0:
        what = f"the build was killed by signal {-returncode}"
    elif failed:
        what = f"phase {', '.join(failed)} failed"
    else:
        what = f"the build's shell exited with code {returncode}"
    output = "\n".join(line[:500] for line in tail) if tail else "(no output)"
    return ApplicationError(
        f"{what}; last output:\n{output}",
        {PHASES_DETAIL: [p.model_dump(mode="json") for p in phases]},
        type="BuildFailed",
        non_retryable=True,
    )


# --- Cache and artifacts --------------------------------------------------------------------------


def _cache_patterns(spec: Buildspec) -> tuple[list[str], list[str]]:
    """The cache paths the local runner keeps (under the source directory) and those it cannot (absolute)."""
    paths = spec.cache.paths if spec.cache else []
    kept = [p for p in paths if not p.startswith(("/", "~")) and ".." not in PurePosixPath(p).parts]
    return kept, [p for p in paths if p not in kept]


def _restore_cache(spec: Buildspec, cache: Path, workspace: Workspace) -> list[str]:
    kept, outside = _cache_patterns(spec)
    notes = [f"[conveyor] cache: paths outside the source directory are not cached locally: {', '.join(outside)}"]
    notes = notes if outside else []
    if not kept:
        return notes
    if not cache.is_dir():
        return [*notes, "[conveyor] cache: miss (nothing cached yet for this project)"]
    try:
        files = matching_files(cache, kept)
        for rel in files:
            target = workspace.src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(cache / rel, target, follow_symlinks=False)
    except OSError as err:  # another build of the project replaced the cache meanwhile: build without it
        return [*notes, f"[conveyor] cache: not restored ({err.strerror}); the build runs without it"]
    return [*notes, f"[conveyor] cache: hit, {len(files)} files restored"]


def _save_cache(spec: Buildspec, cache: Path, workspace: Workspace) -> int:
    """After a successful build: the cache paths' files replace the project's cache (atomically)."""
    kept, _ = _cache_patterns(spec)
    if not kept:
        return 0
    files = matching_files(workspace.src, kept)
    fresh = cache.with_name(f"{cache.name}.{os.getpid()}.{time.monotonic_ns()}")
    for rel in files:
        target = fresh / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(workspace.src / rel, target, follow_symlinks=False)
    fresh.mkdir(parents=True, exist_ok=True)
    old = cache.with_name(f"{cache.name}.old.{os.getpid()}.{time.monotonic_ns()}")
    if cache.exists():
        cache.rename(old)
    fresh.rename(cache)
    shutil.rmtree(old, ignore_errors=True)
    return len(files)


def _stage_artifact(spec: Buildspec, name: str, index: int, src: Path, staging: Path) -> tuple[Path, list[str]]:
    """Where the files of output artifact `name` (a secondary artifact of that identifier, or the primary for the
    first output) are, laid out as CodeBuild lays them out, and the patterns to pack: the base directory itself
    when nothing is excluded or flattened, else a copy in `staging`."""
    artifacts = spec.artifacts
    chosen = artifacts.secondary_artifacts.get(name) if artifacts else None
    if chosen is None and artifacts is not None and index == 0 and artifacts.files:
        chosen = artifacts
    if chosen is None:
        known = ", ".join(artifacts.secondary_artifacts) if artifacts and artifacts.secondary_artifacts else "none"
        raise non_retryable(
            f"output artifact '{name}': the buildspec has no `artifacts.files` for it"
            + ("" if index == 0 else f" and no secondary artifact '{name}' (its secondary-artifacts: {known})"),
            "ConfigurationError",
        )
    base = _inside(src, chosen.base_directory or ".")
    if base is None or not base.is_dir():
        raise non_retryable(
            f"output artifact '{name}': base-directory '{chosen.base_directory}' is not a directory of the build",
            "ArtifactError",
        )
    if not chosen.exclude_paths and not chosen.discard_paths:
        return base, chosen.files  # the store reports a pattern that matches nothing
    excluded = set(matching_files(base, chosen.exclude_paths))
    selected = [rel for rel in matching_files(base, chosen.files) if rel not in excluded]
    if not selected:
        raise non_retryable(f"output artifact '{name}': no files matched {chosen.files!r}", "ArtifactError")
    for rel in selected:
        target = staging / (PurePosixPath(rel).name if chosen.discard_paths else rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(base / rel, target, follow_symlinks=False)
    return staging, ["**/*"]
