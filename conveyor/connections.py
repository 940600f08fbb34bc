"""Where a Git-hosted source (CodeStarSourceConnection, GitHub, CodeCommit) is cloned from, and with which credential.

Worker configuration, never part of a declaration: a YAML (or JSON) mapping, read from the file
`CONVEYOR_CONNECTIONS` names, else (for the worker `conveyor run FILE` brings up) a `connections.yaml` beside
FILE, else `<data dir>/connections.yaml` when it exists; a relative path in it is relative to the file's
directory. Each key matches actions:
an exact ConnectionArn first, then a provider name, then `*`. Without a matching entry the defaults apply
(github.com for CodeStarSourceConnection and GitHub, AWS's CodeCommit endpoint with the AWS credential chain).

    "arn:aws:codestar-connections:eu-west-1:111122223333:connection/abc":
      url: "file:///srv/git/{FullRepositoryId}.git"
    GitHub:
      url: "https://github.example.com/{Owner}/{Repo}.git"
      credential: {env: GITHUB_TOKEN}
    "*":
      credential: {helper: "store --file /etc/conveyor/git-credentials"}

The file names where a credential is (an environment variable, a file, a git credential helper, the AWS chain),
never the credential itself.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from conveyor.settings import Settings

CONNECTIONS_VARIABLE = "CONVEYOR_CONNECTIONS"
DEFAULT_FILE_NAME = "connections.yaml"
WILDCARD = "*"
PLACEHOLDERS = frozenset({"FullRepositoryId", "Owner", "Repo", "RepositoryName", "region"})
DEFAULT_URLS = {
    "CodeStarSourceConnection": "https://github.com/{FullRepositoryId}.git",
    "GitHub": "https://github.com/{Owner}/{Repo}.git",
    "CodeCommit": "https://git-codecommit.{region}.amazonaws.com/v1/repos/{RepositoryName}",
}
DEFAULT_USERNAME = "x-access-token"  # what GitHub expects with a token; any non-empty name works for most hosts


class ConnectionsError(ValueError):
    """The connections file cannot be used; the message names the file and the entry/field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Credential(_Strict):
    """Where the credential is: exactly one of `env`, `file`, `helper`, `aws`."""

    env: str | None = None  # an environment variable of the worker holding the token
    file: Path | None = None  # a file holding the token (its first line)
    helper: str | None = None  # a git credential helper, as `credential.helper` takes it
    aws: bool = (
        False  # CodeCommit: the AWS credential chain (git-remote-codecommit or `aws codecommit credential-helper`)
    )
    username: str = DEFAULT_USERNAME  # sent with an `env`/`file` token

    @model_validator(mode="after")
    def _exactly_one(self) -> Credential:
        given = [name for name in ("env", "file", "helper") if getattr(self, name)] + (["aws"] if self.aws else [])
        if len(given) != 1:
            what = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of env, file, helper, aws (given: {what})")
        return self


class Connection(_Strict):
    """One entry: the URL template to clone from and the credential to clone with."""

    url: str | None = None  # None: the provider's default
    credential: Credential | None = None  # None: git's own configuration (public repositories, ssh keys)

    @field_validator("url")
    @classmethod
    def _known_placeholders(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            names = {field for _, field, _, _ in string.Formatter().parse(url) if field is not None}
        except ValueError as err:
            raise ValueError(f"{url!r} is not a URL template: {err}") from None
        unknown = sorted(n for n in names if n not in PLACEHOLDERS)
        if unknown:
            known = ", ".join(sorted(f"{{{p}}}" for p in PLACEHOLDERS))
            raise ValueError(f"unknown placeholder {{{unknown[0]}}} in {url!r}; use {known}")
        return url


ConnectionsFile = Mapping[Annotated[str, Field(min_length=1)], Connection]


class ResolvedConnection(BaseModel):
    """What a clone uses: the URL (no credential in it) and the credential's source."""

    model_config = ConfigDict(frozen=True)

    url: str
    credential: Credential | None
    matched: str  # the entry that matched ("default" without one), for errors and logs


def connections_path(settings: Settings) -> Path | None:
    """The connections file the worker reads: CONVEYOR_CONNECTIONS, else `<data dir>/connections.yaml` if present."""
    if settings.connections_file is not None:
        return settings.connections_file
    default = settings.data_dir / DEFAULT_FILE_NAME
    return default if default.is_file() else None


def load_connections(path: Path | None) -> dict[str, Connection]:
    """The file's entries; `ConnectionsError` naming the file and the field when it is unreadable or wrong."""
    if path is None:
        return {}
    try:
        text = path.read_text()
    except OSError as err:
        raise ConnectionsError(f"connections file {path}: cannot read it ({err.strerror or err})") from None
    try:
        raw: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except ValueError as err:
        raise ConnectionsError(f"connections file {path}: not valid JSON: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConnectionsError(f"connections file {path}: not valid YAML{where}: {problem}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConnectionsError(
            f"connections file {path}: expected a mapping of ConnectionArn, provider name or '*' to "
            f"{{url, credential}}, found {type(raw).__name__}"
        )
    entries: dict[str, Connection] = {}
    for key, value in raw.items():
        try:
            entry = Connection.model_validate(value if value is not None else {})
        except ValidationError as err:
            problem = err.errors()[0]
            where = ".".join(str(part) for part in (key, *problem["loc"]))
            message = problem["msg"].removeprefix("Value error, ")
            raise ConnectionsError(f"connections file {path}: {where}: {message}") from None
        if entry.url is not None and _relative_path(entry.url):
            entry = entry.model_copy(update={"url": str(path.parent.absolute() / entry.url)})
        credential = entry.credential
        if credential is not None and credential.file is not None and not credential.file.expanduser().is_absolute():
            located = credential.model_copy(update={"file": path.parent.absolute() / credential.file})
            entry = entry.model_copy(update={"credential": located})
        entries[str(key)] = entry
    return entries


def _relative_path(url: str) -> bool:
    """A relative local path (no scheme, no `host:path`): relative to the connections file's directory."""
    return ":" not in url and not url.startswith(("/", "~"))


def beside(pipeline_file: Path) -> Path | None:
    """The `connections.yaml` beside a pipeline file, if there is one (`conveyor run FILE`'s own worker)."""
    candidate = pipeline_file.parent / DEFAULT_FILE_NAME
    return candidate if candidate.is_file() else None


def resolve_connection(
    entries: Mapping[str, Connection], provider: str, connection_arn: str | None, placeholders: Mapping[str, str]
) -> ResolvedConnection:
    """The entry for an action (its ConnectionArn, else its provider, else `*`), its URL rendered."""
    matched, entry = "default", Connection()
    for key in (connection_arn, provider, WILDCARD):
        if key and key in entries:
            matched, entry = key, entries[key]
            break
    template = entry.url or DEFAULT_URLS[provider]
    credential = entry.credential
    if credential is None and entry.url is None and provider == "CodeCommit":
        credential = Credential(aws=True)  # AWS's endpoint takes only AWS credentials
    needed = {field for _, field, _, _ in string.Formatter().parse(template) if field}
    missing = sorted(name for name in needed if not placeholders.get(name))
    if missing:
        hint = "; set the action's `region` or AWS_REGION on the worker" if "region" in missing else ""
        raise ConnectionsError(
            f"connection '{matched}': the URL template {template!r} needs {{{missing[0]}}}, which this action "
            f"does not give{hint}"
        )
    values = {name: placeholders.get(name, "") for name in PLACEHOLDERS}
    return ResolvedConnection(url=template.format(**values), credential=credential, matched=matched)
