"""CodeBuild's buildspec, version 0.2: the model the local CodeBuild runner runs, and its loading from YAML.

Pure: no I/O beyond parsing the text it is given. Errors name the buildspec (its file or where it was declared) and
the key, and an unknown key gets a "did you mean". Keys the local runner cannot apply (`runtime-versions`, `reports`,
`run-as`, `proxy`, ...) are accepted and listed by `not_applied_locally` so the runner can say so once.
"""

from __future__ import annotations

import difflib
from enum import StrEnum
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

DEFAULT_BUILDSPEC = "buildspec.yml"
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
PHASE_NAMES = ("install", "pre_build", "build", "post_build")  # in the order CodeBuild runs them


class BuildspecError(ValueError):
    """A buildspec that cannot be run: the message names the buildspec and the key."""


def _text(value: Any) -> Any:
    """YAML gives numbers and booleans where CodeBuild reads text (`VERSION: 1.2`, `DEBUG: true`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _yes_no(value: Any) -> Any:
    """`discard-paths: yes` (YAML 1.1 makes it True), "yes", "no", true, false."""
    if isinstance(value, str) and value.lower() in ("yes", "no", "true", "false"):
        return value.lower() in ("yes", "true")
    return value


def _lines(value: Any) -> Any:
    """A single string where a list is expected (`files: '**/*'`)."""
    return [value] if isinstance(value, str) else value


Text = Annotated[str, BeforeValidator(_text)]
YesNo = Annotated[bool, BeforeValidator(_yes_no)]
Lines = Annotated[list[Text], BeforeValidator(_lines)]


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class OnFailure(StrEnum):
    ABORT = "ABORT"  # the later phases are skipped (post_build still runs after a failed build phase)
    CONTINUE = "CONTINUE"  # the next phase runs; the build still fails


class BuildspecEnv(SpecModel):
    shell: str | None = None
    variables: dict[str, Text] = Field(default_factory=dict)
    parameter_store: dict[str, Text] = Field(default_factory=dict, alias="parameter-store")
    secrets_manager: dict[str, Text] = Field(default_factory=dict, alias="secrets-manager")
    exported_variables: Lines = Field(default_factory=list, alias="exported-variables")
    git_credential_helper: YesNo = Field(default=False, alias="git-credential-helper")


class Phase(SpecModel):
    commands: Lines = Field(default_factory=list)
    finally_: Lines = Field(default_factory=list, alias="finally")
    on_failure: OnFailure = Field(default=OnFailure.ABORT, alias="on-failure")
    runtime_versions: dict[str, Text] = Field(default_factory=dict, alias="runtime-versions")
    run_as: str | None = Field(default=None, alias="run-as")


class Phases(SpecModel):
    install: Phase | None = None
    pre_build: Phase | None = None
    build: Phase | None = None
    post_build: Phase | None = None

    def in_order(self) -> list[tuple[str, Phase]]:
        return [(name, phase) for name in PHASE_NAMES if (phase := getattr(self, name)) is not None]


class ArtifactSet(SpecModel):
    """The primary artifact, or one secondary artifact."""

    files: Lines = Field(default_factory=list)
    name: Text | None = None
    base_directory: str | None = Field(default=None, alias="base-directory")
    discard_paths: YesNo = Field(default=False, alias="discard-paths")
    exclude_paths: Lines = Field(default_factory=list, alias="exclude-paths")
    enable_symlinks: YesNo = Field(default=False, alias="enable-symlinks")
    s3_prefix: str | None = Field(default=None, alias="s3-prefix")


class Artifacts(ArtifactSet):
    secondary_artifacts: dict[str, ArtifactSet] = Field(default_factory=dict, alias="secondary-artifacts")


class Cache(SpecModel):
    paths: Lines = Field(default_factory=list)
    key: str | None = None
    fallback_keys: Lines = Field(default_factory=list, alias="fallback-keys")
    action: str | None = None


class Buildspec(SpecModel):
    version: Text
    run_as: str | None = Field(default=None, alias="run-as")
    env: BuildspecEnv = Field(default_factory=BuildspecEnv)
    proxy: dict[str, Any] | None = None
    batch: dict[str, Any] | None = None
    phases: Phases = Field(default_factory=Phases)
    reports: dict[str, Any] | None = None
    artifacts: Artifacts | None = None
    cache: Cache | None = None

    def not_applied_locally(self) -> list[str]:
        """What this buildspec asks for that the local runner does not apply (said once, in the build's log)."""
        found = []
        if self.run_as:
            found.append("run-as")
        if self.proxy:
            found.append("proxy")
        if self.batch:
            found.append("batch")
        if self.reports:
            found.append("reports")
        if self.env.git_credential_helper:
            found.append("env.git-credential-helper")
        for name, phase in self.phases.in_order():
            if phase.runtime_versions:
                found.append(f"phases.{name}.runtime-versions")
            if phase.run_as:
                found.append(f"phases.{name}.run-as")
        if self.artifacts is not None:
            for where, spec in [("artifacts", self.artifacts), *self._secondary()]:
                if spec.enable_symlinks:
                    found.append(f"{where}.enable-symlinks")
        return found

    def _secondary(self) -> list[tuple[str, ArtifactSet]]:
        assert self.artifacts is not None
        return [(f"artifacts.secondary-artifacts.{k}", v) for k, v in self.artifacts.secondary_artifacts.items()]


def load_buildspec(text: str, source: str) -> Buildspec:
    """The buildspec in `text` (YAML); `source` names it in errors (a path in the input, or the declaration)."""
    try:
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader: libyaml's when available)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise BuildspecError(f"buildspec {source}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if not isinstance(data, dict):
        raise BuildspecError(f"buildspec {source}: must be a mapping with `version: 0.2` and `phases`")
    version = _text(data.get("version"))
    if version is None:
        raise BuildspecError(f"buildspec {source}: `version` is missing; write `version: 0.2`")
    if version == "0.1":
        raise BuildspecError(
            f"buildspec {source}: version 0.1 runs each command in its own shell and is not supported; "
            "write `version: 0.2` (one shell session per build: check commands that relied on a fresh shell)"
        )
    if version != "0.2":
        raise BuildspecError(f"buildspec {source}: version {version!r} is not a buildspec version; write 0.2")
    unknown = _unknown_key(data, Buildspec, ())
    if unknown is not None:
        raise BuildspecError(f"buildspec {source}: {unknown}")
    try:
        return Buildspec.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise BuildspecError(f"buildspec {source}: {where}: {first['msg']}") from None


def _unknown_key(data: Any, model: type[BaseModel], path: tuple[str, ...]) -> str | None:
    """The first key of `data` that `model` does not know, with the nearest known ones."""
    if not isinstance(data, dict):
        return None  # the type error is pydantic's to report
    known = {(field.alias or name): field.annotation for name, field in model.model_fields.items()}
    for key, value in data.items():
        if key not in known:
            where = ".".join((*path, str(key)))
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known keys here: {', '.join(sorted(known))}"
            return f"unknown key '{where}'{hint}"
        annotation = known[key]
        mapped = _mapped_model(annotation)
        inner = None if mapped else _model_of(annotation)
        if mapped is not None and isinstance(value, dict):
            found = next(
                (f for k, v in value.items() if (f := _unknown_key(v, mapped, (*path, str(key), str(k))))), None
            )
        else:
            found = _unknown_key(value, inner, (*path, str(key))) if inner is not None else None
        if found:
            return found
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _mapped_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):  # `dict[str, X]` or `dict[str, X] | None`
        if get_origin(candidate) is dict:
            return _model_of(get_args(candidate)[1])
    return None
