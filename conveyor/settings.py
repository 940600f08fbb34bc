"""Where Conveyor keeps its files and which Temporal it talks to, read from the environment."""

from __future__ import annotations

import math
import os
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
    # Configured for AWS (CONVEYOR_AWS): the declaration's pipeline-level `roleArn` (and artifact stores) apply.
    # Off, an imported declaration runs offline on the embedded defaults.
    aws: bool = False
    # Garbage collection (conveyor.gc): closed executions are retained this long after they closed, and
    # nothing is removed that was used (stored, found, read) more recently than the minimum age.
    retain_days: float = 30.0
    gc_min_age_minutes: float = 60.0

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
            aws=(env.get("CONVEYOR_AWS", "").lower() in ("1", "true", "yes")),
            retain_days=_non_negative_number(env, "CONVEYOR_RETAIN_DAYS", 30.0, "days"),
            gc_min_age_minutes=_positive_number(env, "CONVEYOR_GC_MIN_AGE_MINUTES", 60.0, "minutes"),
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


def action_log_path(logs_dir: Path, pipeline: str, execution_id: str, stage: str, action: str) -> Path:
    """One log file per action execution; the CLI reads the same path the worker writes."""
    return logs_dir / pipeline / execution_id / stage / f"{action}.log"


def compensation_log_name(action: str) -> str:
    """The name an action's compensation (its rollback commands) logs under: `conveyor logs ... Install.rollback`."""
    return f"{action}.rollback"
