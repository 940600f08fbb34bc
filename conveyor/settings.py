"""Where Conveyor keeps its files and which Temporal it talks to, read from the environment."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel

DEFAULT_TASK_QUEUE = "conveyor"
# A live, idle worker re-polls when its long poll ends (the server holds one up to a minute), so its
# newest poll can be a minute old; the rest is margin for a busy worker and a skewed clock.
DEFAULT_WORKER_POLL_WINDOW = 90.0


def default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "conveyor"


class SettingsError(ValueError):
    """An environment variable Conveyor reads has a value it cannot use; the message names it."""


def _positive_number(env: Mapping[str, str], name: str, default: float, unit: str) -> float:
    """A finite number greater than 0 from the environment, or SettingsError naming the variable."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise SettingsError(f"{name}='{raw}': write a number of {unit} greater than 0, e.g. {name}={default:g}")
    return value


def _non_negative_number(env: Mapping[str, str], name: str, default: float, unit: str) -> float:
    """A finite number of at least 0 from the environment, or SettingsError naming the variable."""
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise SettingsError(f"{name}='{raw}': write a number of {unit} of at least 0, e.g. {name}={default:g}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    """A true/false switch from the environment, or SettingsError naming the variable."""
    raw = env.get(name, "").strip()
    if raw.lower() in ("", "0", "false", "no", "off"):
        return False
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    raise SettingsError(f"{name}='{raw}': write true or false, e.g. {name}=true")


class S3Location(BaseModel):
    """A bucket and a key prefix (no leading or trailing slash) in S3."""

    bucket: str
    prefix: str = ""


# The rules S3 puts on bucket names (3-63 lowercase letters, digits, dots and hyphens).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def parse_s3_url(name: str, raw: str) -> S3Location:
    """`s3://bucket[/prefix]` -> S3Location, or SettingsError naming the variable `name`."""
    example = f"{name}=s3://my-bucket/conveyor"
    if not raw.startswith("s3://"):
        raise SettingsError(f"{name}='{raw}': write an S3 URL, e.g. {example} (or leave it unset for the local store)")
    bucket, _, prefix = raw.removeprefix("s3://").partition("/")
    if not _BUCKET_RE.fullmatch(bucket):
        raise SettingsError(f"{name}='{raw}': '{bucket}' is not a valid S3 bucket name, e.g. {example}")
    return S3Location(bucket=bucket, prefix=prefix.strip("/"))


class Settings(BaseModel):
    """Process-wide settings; every field has an environment variable."""

    data_dir: Path
    temporal_address: str | None = None  # None: use the embedded server
    temporal_namespace: str = "default"
    temporal_api_key: str | None = None
    temporal_tls: bool = False
    task_queue: str = DEFAULT_TASK_QUEUE
    coordinator_continue_as_new_every: int = 500  # messages a pipeline coordinator handles per run
    # Seconds since a worker's last poll within which commands count it as present.
    worker_poll_window: float = DEFAULT_WORKER_POLL_WINDOW
    coordinator_idle_minutes: float = 10.0  # how long a coordinator with nothing to keep waits before it closes
    artifact_store: S3Location | None = None  # None: the local store in the data directory
    artifact_kms_key: str | None = None  # SSE-KMS key id/ARN/alias for the S3 store; None: the bucket's default
    # The worker is configured for AWS: a declaration's artifactStore(s) and roleArn apply (offline they are ignored).
    aws: bool = False
    # Garbage collection (conveyor.gc): closed executions are retained this long after they closed, and
    # nothing is removed that was used (stored, found, read) more recently than the minimum age.
    retain_days: float = 30.0
    gc_min_age_minutes: float = 60.0
    codebuild_poll_seconds: float = 5.0  # how often the `aws` CodeBuild runner asks for its build's state
    step_functions_poll_seconds: float = 5.0  # how often a StepFunctions action asks for its execution's state
    alarm_poll_seconds: float = 60.0  # how often a CloudWatchAlarm rule checks its alarms while it watches
    cloudformation_poll_seconds: float = 5.0  # how often a CloudFormation action asks for its stack's state
    beanstalk_poll_seconds: float = 5.0  # how often an ElasticBeanstalk action asks for its environment's state
    ecs_poll_seconds: float = 5.0  # how often an ECS action asks for its deployment's state
    codedeploy_poll_seconds: float = 5.0  # how often a CodeDeploy action asks for its deployment's state
    # Where Git-hosted sources clone from and with which credential (conveyor/connections.py); None: the
    # data directory's connections.yaml if present, else the defaults.
    connections_file: Path | None = None
    # host:port where a worker serves Prometheus metrics (the SDK's and Conveyor's) at /metrics; None: off.
    metrics_address: str | None = None
    events_file: Path | None = None  # CONVEYOR_EVENTS_FILE: every delivered event appended as a JSON line

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            data_dir=Path(env.get("CONVEYOR_DATA_DIR") or default_data_dir()).expanduser(),
            temporal_address=env.get("TEMPORAL_ADDRESS") or None,
            temporal_namespace=env.get("TEMPORAL_NAMESPACE") or "default",
            temporal_api_key=env.get("TEMPORAL_API_KEY") or None,
            temporal_tls=(env.get("TEMPORAL_TLS", "").lower() in ("1", "true", "yes")),
            task_queue=env.get("CONVEYOR_TASK_QUEUE") or DEFAULT_TASK_QUEUE,
            coordinator_continue_as_new_every=int(env.get("CONVEYOR_COORDINATOR_CONTINUE_AS_NEW_EVERY") or 500),
            worker_poll_window=_positive_number(
                env, "CONVEYOR_WORKER_POLL_WINDOW", DEFAULT_WORKER_POLL_WINDOW, "seconds"
            ),
            coordinator_idle_minutes=_positive_number(env, "CONVEYOR_COORDINATOR_IDLE_MINUTES", 10.0, "minutes"),
            artifact_store=_artifact_store(env),
            artifact_kms_key=_artifact_kms_key(env),
            aws=_flag(env, "CONVEYOR_AWS"),
            retain_days=_non_negative_number(env, "CONVEYOR_RETAIN_DAYS", 30.0, "days"),
            gc_min_age_minutes=_positive_number(env, "CONVEYOR_GC_MIN_AGE_MINUTES", 60.0, "minutes"),
            codebuild_poll_seconds=_positive_number(env, "CONVEYOR_CODEBUILD_POLL_SECONDS", 5.0, "seconds"),
            step_functions_poll_seconds=_positive_number(env, "CONVEYOR_STEP_FUNCTIONS_POLL_SECONDS", 5.0, "seconds"),
            alarm_poll_seconds=_positive_number(env, "CONVEYOR_ALARM_POLL_SECONDS", 60.0, "seconds"),
            cloudformation_poll_seconds=_positive_number(env, "CONVEYOR_CLOUDFORMATION_POLL_SECONDS", 5.0, "seconds"),
            beanstalk_poll_seconds=_positive_number(env, "CONVEYOR_BEANSTALK_POLL_SECONDS", 5.0, "seconds"),
            ecs_poll_seconds=_positive_number(env, "CONVEYOR_ECS_POLL_SECONDS", 5.0, "seconds"),
            codedeploy_poll_seconds=_positive_number(env, "CONVEYOR_CODEDEPLOY_POLL_SECONDS", 5.0, "seconds"),
            connections_file=Path(env["CONVEYOR_CONNECTIONS"]).expanduser()
            if env.get("CONVEYOR_CONNECTIONS")
            else None,
            metrics_address=_metrics_address(env),
            events_file=Path(env["CONVEYOR_EVENTS_FILE"]).expanduser() if env.get("CONVEYOR_EVENTS_FILE") else None,
        )

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"


def _metrics_address(env: Mapping[str, str]) -> str | None:
    raw = env.get("CONVEYOR_METRICS_ADDRESS", "").strip()
    if not raw:
        return None
    host, sep, port = raw.rpartition(":")
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))  # the SDK's exporter binds IPs only
        valid = bool(sep) and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        valid = False
    if not valid:
        raise SettingsError(
            f"CONVEYOR_METRICS_ADDRESS='{raw}': write IP:PORT, e.g. CONVEYOR_METRICS_ADDRESS=127.0.0.1:9464 "
            "(0.0.0.0:9464 for every interface, [::1]:9464 for IPv6), or leave it unset for no metrics"
        )
    return raw


def _artifact_store(env: Mapping[str, str]) -> S3Location | None:
    raw = env.get("CONVEYOR_ARTIFACT_STORE", "").strip()
    return parse_s3_url("CONVEYOR_ARTIFACT_STORE", raw) if raw else None


def _artifact_kms_key(env: Mapping[str, str]) -> str | None:
    raw = env.get("CONVEYOR_ARTIFACT_KMS_KEY", "").strip()
    if raw and not env.get("CONVEYOR_ARTIFACT_STORE", "").strip():
        raise SettingsError(
            f"CONVEYOR_ARTIFACT_KMS_KEY='{raw}' applies to the S3 artifact store only: set CONVEYOR_ARTIFACT_STORE "
            "(e.g. s3://my-bucket/conveyor) or unset CONVEYOR_ARTIFACT_KMS_KEY"
        )
    if any(c.isspace() for c in raw):
        raise SettingsError(f"CONVEYOR_ARTIFACT_KMS_KEY='{raw}': write a KMS key id, ARN or alias/NAME (no spaces)")
    return raw or None


def action_log_path(logs_dir: Path, pipeline: str, execution_id: str, stage: str, action: str) -> Path:
    """One log file per action execution; the CLI reads the same path the worker writes."""
    return logs_dir / pipeline / execution_id / stage / f"{action}.log"


def compensation_log_name(action: str) -> str:
    """The name an action's compensation (its rollback commands) logs under: `conveyor logs ... Install.rollback`."""
    return f"{action}.rollback"
