"""A FAKE of Elastic Beanstalk, for the tests only: moto does not serve application versions and environment
updates, so this serves exactly the calls the ElasticBeanstalk provider makes (DescribeEnvironments,
DescribeApplicationVersions, CreateApplicationVersion, UpdateEnvironment, AbortEnvironmentUpdate, DescribeEvents)
in Elastic Beanstalk's query protocol over HTTP on 127.0.0.1 (port 0). boto3 reaches it through
AWS_ENDPOINT_URL_ELASTIC_BEANSTALK while S3 and STS stay on moto. It checks no credentials.

Outcomes are scripted per update (`Outcome`: how long it stays Updating, the health it ends in, an ERROR event), and
every call is counted. What it does not model: real deployment policies, instances, basic vs enhanced health (it
reports both Health and HealthStatus); an update shows its new VersionLabel at once; AbortEnvironmentUpdate (FAKE
behaviour, as documented: an update under way is cancelled and the environment rolled back) puts the environment
back on the version it ran before, Updating for `ABORT_SECONDS`, then Ready and Green.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

NAMESPACE = "http://elasticbeanstalk.amazonaws.com/docs/2010-12-01/"
ABORT_SECONDS = 0.3  # how long the fake's rollback after AbortEnvironmentUpdate stays Updating


@dataclass
class Outcome:
    """How the next UpdateEnvironment ends."""

    seconds: float = 0.3  # Updating this long
    health: str = "Green"
    health_status: str = "Ok"
    error_event: str | None = None  # an ERROR event logged when the update ends


@dataclass
class _Environment:
    application: str
    name: str
    version_label: str | None
    status: str = "Ready"
    health: str = "Green"
    health_status: str = "Ok"
    pending: tuple[float, Outcome] | None = None  # (when the update began, how it ends)
    previous_label: str | None = None  # what an update replaced: where AbortEnvironmentUpdate goes back to
    id: str = field(default_factory=lambda: f"e-{uuid.uuid4().hex[:10]}")


@dataclass
class _Event:
    at: float
    application: str
    environment: str
    severity: str
    message: str


class BeanstalkFake:
    """The fake's state and scripting; `endpoint` is its URL."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.updates: list[tuple[str, str]] = []  # (environment, version label) per UpdateEnvironment
        self.aborts: list[tuple[str, str | None]] = []  # (environment, label aborted) per AbortEnvironmentUpdate
        self.outcomes: list[Outcome] = []  # consumed by updates in order; none left: Outcome()
        self.environments: dict[str, _Environment] = {}
        self.versions: dict[tuple[str, str], dict[str, str]] = {}
        self.events: list[_Event] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> BeanstalkFake:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- scripting ------------------------------------------------------------------------------------------

    def environment(self, application: str, name: str, version_label: str | None) -> None:
        """An environment, Ready and Green on `version_label` (its version is listed too)."""
        with self.lock:
            self.environments[name] = _Environment(application, name, version_label)
            if version_label:
                self.versions[(application, version_label)] = {"Description": "made before the test"}

    def script(self, *outcomes: Outcome) -> None:
        with self.lock:
            self.outcomes.extend(outcomes)

    def version_label(self, name: str) -> str | None:
        with self.lock:
            return self.environments[name].version_label

    def status(self, name: str) -> str:
        with self.lock:
            self._advance()
            return self.environments[name].status

    # --- the calls ------------------------------------------------------------------------------------------

    def handle(self, action: str, params: dict[str, str]) -> tuple[int, str]:
        with self.lock:
            self.calls[action] += 1
            self._advance()
            handler = getattr(self, f"_{action}", None)
            if handler is None:
                return _error("InvalidAction", f"the fake does not serve {action}")
            result: tuple[int, str] = handler(params)
            return result

    def _advance(self) -> None:
        now = time.time()
        for env in self.environments.values():
            if env.pending is None or now - env.pending[0] < env.pending[1].seconds:
                continue
            _, outcome = env.pending
            env.pending = None
            env.status, env.health, env.health_status = "Ready", outcome.health, outcome.health_status
            if outcome.error_event:
                self.events.append(_Event(now, env.application, env.name, "ERROR", outcome.error_event))
            self.events.append(_Event(now, env.application, env.name, "INFO", "Environment update completed."))

    def _DescribeEnvironments(self, params: dict[str, str]) -> tuple[int, str]:
        names = _members(params, "EnvironmentNames")
        application = params.get("ApplicationName")
        found = [
            e
            for e in self.environments.values()
            if (not names or e.name in names) and (application is None or e.application == application)
        ]
        members = "".join(f"<member>{_environment_xml(e)}</member>" for e in found)
        return _ok("DescribeEnvironments", f"<Environments>{members}</Environments>")

    def _DescribeApplicationVersions(self, params: dict[str, str]) -> tuple[int, str]:
        application = params["ApplicationName"]
        labels = _members(params, "VersionLabels")
        members = "".join(
            f"<member>{_version_xml(application, label, v)}</member>"
            for (app, label), v in self.versions.items()
            if app == application and (not labels or label in labels)
        )
        return _ok("DescribeApplicationVersions", f"<ApplicationVersions>{members}</ApplicationVersions>")

    def _CreateApplicationVersion(self, params: dict[str, str]) -> tuple[int, str]:
        application, label = params["ApplicationName"], params["VersionLabel"]
        if (application, label) in self.versions:
            return _error("InvalidParameterValue", f"Application Version {label} already exists.")
        version = {
            "Description": params.get("Description", ""),
            "S3Bucket": params.get("SourceBundle.S3Bucket", ""),
            "S3Key": params.get("SourceBundle.S3Key", ""),
        }
        self.versions[(application, label)] = version
        body = f"<ApplicationVersion>{_version_xml(application, label, version)}</ApplicationVersion>"
        return _ok("CreateApplicationVersion", body)

    def _UpdateEnvironment(self, params: dict[str, str]) -> tuple[int, str]:
        env = self.environments.get(params["EnvironmentName"])
        label = params.get("VersionLabel")
        if env is None:
            return _error(
                "InvalidParameterValue", f"No Environment found for EnvironmentName = '{params['EnvironmentName']}'."
            )
        if env.status != "Ready":
            return _error("InvalidParameterValue", f"Environment named {env.name} is in an invalid state for this "
                          f"operation. Must be Ready.")  # fmt: skip
        if label is None or (env.application, label) not in self.versions:
            return _error("InvalidParameterValue", f"No Application Version named '{label}' found.")
        outcome = self.outcomes.pop(0) if self.outcomes else Outcome()
        self.updates.append((env.name, label))
        env.previous_label = env.version_label
        env.version_label, env.status, env.health, env.health_status = label, "Updating", "Grey", "Info"
        env.pending = (time.time(), outcome)
        self.events.append(_Event(time.time(), env.application, env.name, "INFO", "Environment update is starting."))
        return _ok("UpdateEnvironment", _environment_xml(env))

    def _AbortEnvironmentUpdate(self, params: dict[str, str]) -> tuple[int, str]:
        """FAKE: cancels the update under way; the environment goes back to the version it ran before."""
        env = self.environments.get(params.get("EnvironmentName", ""))
        if env is None:
            return _error("InvalidParameterValue", f"No Environment found for EnvironmentName = "
                          f"'{params.get('EnvironmentName')}'.")  # fmt: skip
        if env.status != "Updating" or env.pending is None:
            return _error("InvalidParameterValue", f"Environment named {env.name} has no update in progress.")
        self.aborts.append((env.name, env.version_label))
        env.version_label = env.previous_label
        env.pending = (time.time(), Outcome(seconds=ABORT_SECONDS))
        self.events.append(_Event(time.time(), env.application, env.name, "INFO", "Aborting environment update."))
        return _ok("AbortEnvironmentUpdate", "")

    def _DescribeEvents(self, params: dict[str, str]) -> tuple[int, str]:
        since = (
            datetime.fromisoformat(params["StartTime"].replace("Z", "+00:00")).timestamp()
            if "StartTime" in params
            else 0.0
        )
        severities = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]
        floor = severities.index(params.get("Severity", "TRACE"))
        found = [
            e
            for e in self.events
            if e.at >= since
            and severities.index(e.severity) >= floor
            and e.application == params.get("ApplicationName", e.application)
            and e.environment == params.get("EnvironmentName", e.environment)
        ]
        members = "".join(
            f"<member><EventDate>{_time(e.at)}</EventDate><Message>{escape(e.message)}</Message>"
            f"<ApplicationName>{escape(e.application)}</ApplicationName>"
            f"<EnvironmentName>{escape(e.environment)}</EnvironmentName><Severity>{e.severity}</Severity></member>"
            for e in reversed(found)  # newest first, as Elastic Beanstalk lists them
        )
        return _ok("DescribeEvents", f"<Events>{members}</Events>")


def _members(params: dict[str, str], name: str) -> list[str]:
    return [v for k, v in sorted(params.items()) if k.startswith(f"{name}.member.")]


def _time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _environment_xml(env: _Environment) -> str:
    version = f"<VersionLabel>{escape(env.version_label)}</VersionLabel>" if env.version_label else ""
    return (
        f"<EnvironmentName>{escape(env.name)}</EnvironmentName><EnvironmentId>{env.id}</EnvironmentId>"
        f"<ApplicationName>{escape(env.application)}</ApplicationName>{version}<Status>{env.status}</Status>"
        f"<Health>{env.health}</Health><HealthStatus>{env.health_status}</HealthStatus>"
    )


def _version_xml(application: str, label: str, version: dict[str, str]) -> str:
    return (
        f"<ApplicationName>{escape(application)}</ApplicationName><VersionLabel>{escape(label)}</VersionLabel>"
        f"<Description>{escape(version.get('Description', ''))}</Description>"
        f"<SourceBundle><S3Bucket>{escape(version.get('S3Bucket', ''))}</S3Bucket>"
        f"<S3Key>{escape(version.get('S3Key', ''))}</S3Key></SourceBundle><Status>PROCESSED</Status>"
    )


def _ok(action: str, body: str) -> tuple[int, str]:
    return 200, (
        f'<{action}Response xmlns="{NAMESPACE}"><{action}Result>{body}</{action}Result>'
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></{action}Response>"
    )


def _error(code: str, message: str) -> tuple[int, str]:
    return 400, (
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    )


def _handler(fake: BeanstalkFake) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode(), keep_blank_values=True).items()}
            status, body = fake.handle(form.get("Action", ""), form)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
