"""Where events go: the sinks (webhook, SNS, EventBridge, Slack notification rules), their filters, and the file
that configures them globally (CONVEYOR_EVENTS_CONFIG); a pipeline adds its own under `conveyor.events.sinks`.

Secrets never appear here, only the names of the worker's environment variables holding them. Pure: no I/O but
reading the configuration file. Imports nothing from conveyor.events (which carries these models in its batches):
state and scope names are checked against its enums lazily.
"""

from __future__ import annotations

import fnmatch
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

EVENTS_CONFIG_ENV = "CONVEYOR_EVENTS_CONFIG"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SINK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(
            f"'{value}' is not an environment variable name: give the NAME of the worker's variable holding the "
            "secret (e.g. CONVEYOR_WEBHOOK_SECRET), never the secret itself"
        )
    return value


def _names_of(enum_name: str) -> list[str]:
    from conveyor import events  # lazily: conveyor.events imports this module

    return [member.value for member in getattr(events, enum_name)]


def _checked(values: list[str], enum_name: str, what: str) -> list[str]:
    allowed = _names_of(enum_name)
    by_upper = {name.upper(): name for name in allowed}
    out = []
    for value in values:
        if str(value).upper() not in by_upper:
            raise ValueError(f"unknown {what} '{value}': one of {', '.join(allowed)}")
        out.append(by_upper[str(value).upper()])
    return out


class SinkFilter(_Model):
    """Which events a sink gets: every list empty (or absent) means all."""

    pipelines: list[str] = Field(default_factory=list)  # glob patterns of pipeline names ("prod-*")
    scopes: list[str] = Field(default_factory=list)  # Pipeline, Stage, Action
    states: list[str] = Field(default_factory=list)  # STARTED, SUCCEEDED, FAILED, ...

    @field_validator("scopes", mode="before")
    @classmethod
    def _scopes(cls, value: object) -> object:
        return _checked(value, "EventScope", "scope") if isinstance(value, list) else value

    @field_validator("states", mode="before")
    @classmethod
    def _states(cls, value: object) -> object:
        return _checked(value, "EventState", "state") if isinstance(value, list) else value

    def matches(self, pipeline: str, scope: str, state: str) -> bool:
        return (
            (not self.pipelines or any(fnmatch.fnmatchcase(pipeline, p) for p in self.pipelines))
            and (not self.scopes or scope in self.scopes)
            and (not self.states or state in self.states)
        )


class SinkType(StrEnum):
    WEBHOOK = "webhook"
    SNS = "sns"
    EVENTBRIDGE = "eventbridge"
    SLACK = "slack"


class _Sink(_Model):
    # Each sink's `type` has no default: Conveyor's data converter leaves fields at their defaults out of payloads,
    # and a sink read back from one (EventBatch.pipeline_sinks, StageInput.event_sinks) needs its tag.
    name: str
    filter: SinkFilter = Field(default_factory=SinkFilter)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _SINK_NAME.match(value):
            raise ValueError(f"'{value}': a sink name is 1-64 letters, digits, '.', '_' or '-'")
        return value


class WebhookSink(_Sink):
    """POSTs each batch's events as a JSON array, signed with HMAC-SHA256 (README "Events")."""

    type: Literal["webhook"]  # SinkType.WEBHOOK: a string Literal, so errors list the tags as written
    url: str
    secret_env: str  # the worker's environment variable holding the HMAC secret
    timeout_seconds: float = Field(default=5.0, gt=0, le=30)

    @field_validator("secret_env")
    @classmethod
    def _secret_env(cls, value: str) -> str:
        return _env_name(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises for a port that is not a number up to 65535)
        except ValueError as err:
            raise ValueError(f"'{value}' is not a usable URL: {err}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value


class _AwsSink(_Sink):
    region: str | None = None  # None: the topic's/bus's ARN's, else the worker's
    role_arn: str | None = None  # a role the worker assumes to publish; None: the worker's credentials


class SnsSink(_AwsSink):
    """Publishes each event to an SNS topic, with message attributes to filter subscriptions on."""

    type: Literal["sns"]  # SinkType.SNS: a string Literal, so errors list the tags as written
    topic_arn: str

    @field_validator("topic_arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        if not re.match(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$", value):
            raise ValueError(f"'{value}' is not an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:NAME)")
        return value


class EventBridgeSink(_AwsSink):
    """PutEvents to an event bus, in batches of 10: Source "conveyor", DetailType as CodePipeline's."""

    type: Literal["eventbridge"]  # SinkType.EVENTBRIDGE: a string Literal, so errors list the tags as written
    event_bus_name: str = "default"  # a name or an ARN


class NotificationRule(StrEnum):
    """What a Slack sink posts about."""

    FAILURE = "failure"  # a pipeline execution failed
    APPROVAL_WAITING = "approval-waiting"  # a manual approval action started waiting
    ROLLBACK_STARTED = "rollback-started"  # a rollback execution started


class SlackSink(_Sink):
    """Notification rules: a message through the Slack Web API for the events the rules choose."""

    type: Literal["slack"]  # SinkType.SLACK: a string Literal, so errors list the tags as written
    channel: str
    rules: list[NotificationRule] = Field(default_factory=lambda: list(NotificationRule), min_length=1)
    token_env: str = "SLACK_BOT_TOKEN"

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        return _env_name(value)


SinkConfig = Annotated[WebhookSink | SnsSink | EventBridgeSink | SlackSink, Field(discriminator="type")]


def _unique(sinks: list[WebhookSink | SnsSink | EventBridgeSink | SlackSink]) -> None:
    seen: set[str] = set()
    for sink in sinks:
        if sink.name in seen:
            raise ValueError(f"two sinks are named '{sink.name}': give each its own name")
        seen.add(sink.name)


class EventsConfig(_Model):
    """The global configuration file, and a pipeline's `conveyor.events`."""

    sinks: list[SinkConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> EventsConfig:
        _unique(self.sinks)
        return self


class SinkResult(_Model):
    """What delivering a batch to one sink came to: `error` set when it still failed after the bounded retries
    (the caller dead-letters the batch for that sink)."""

    sink: str
    delivered: int = 0  # events the sink accepted
    failed: int = 0  # events it did not
    undelivered: list[str] = Field(default_factory=list)  # their ids: what to dead-letter for this sink
    error: str | None = None  # free of secrets: a webhook's URL shows its scheme and host only


class EventsConfigError(ValueError):
    """The events configuration is unusable; the message names the file and the field."""


def describe_errors(err: ValidationError, where: str) -> str:
    lines = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-after"))
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (secrets are given by environment variable name: secretEnv, tokenEnv)"
        elif error["type"] == "union_tag_invalid":
            message = f"unknown sink type: one of {', '.join(t.value for t in SinkType)}"
        elif error["type"] == "union_tag_not_found":
            message = f"a sink needs a type: one of {', '.join(t.value for t in SinkType)}"
        lines.append(f"{where}: {field or '(top)'}: {message}")
    return "\n".join(lines)


def load_events_config(path: Path) -> EventsConfig:
    """The file's sinks, or EventsConfigError naming the file and each bad field."""
    try:
        data = yaml.safe_load(path.read_text()) if path.exists() else None
    except (OSError, yaml.YAMLError) as err:
        raise EventsConfigError(f"{path}: cannot read it as YAML: {err}") from None
    if not path.exists():
        raise EventsConfigError(f"{path} (from {EVENTS_CONFIG_ENV}): no such file")
    if data is None:
        return EventsConfig()
    if not isinstance(data, dict):
        raise EventsConfigError(f"{path}: expected a mapping with a 'sinks' list, got {type(data).__name__}")
    try:
        return EventsConfig.model_validate(data)
    except ValidationError as err:
        raise EventsConfigError(describe_errors(err, str(path))) from None


def global_events_config(env: dict[str, str] | None = None) -> EventsConfig:
    """The sinks of the file named by CONVEYOR_EVENTS_CONFIG; none when it is unset."""
    raw = (env if env is not None else dict(os.environ)).get(EVENTS_CONFIG_ENV, "").strip()
    return load_events_config(Path(raw).expanduser()) if raw else EventsConfig()
