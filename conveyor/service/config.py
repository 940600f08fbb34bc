"""`conveyor serve --config FILE`: the service's settings in a YAML file (secrets stay in the environment)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from conveyor.console.config import ConsoleConfig
from conveyor.spec.loading import load_model_file

_CONFIG = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid")


class SlackConfig(BaseModel):
    """The Slack app: HTTP mode at `/slack/events` (needs the signing secret), Socket Mode (needs the
    app-level token) or both. Defaults are Slack's usual variable names."""

    model_config = _CONFIG

    signing_secret_env: str = "SLACK_SIGNING_SECRET"
    bot_token_env: str = "SLACK_BOT_TOKEN"
    app_token_env: str = "SLACK_APP_TOKEN"
    socket_mode: bool = False
    api_url: str | None = Field(default=None, pattern=r"^https?://")  # default: $SLACK_API_URL or Slack's


class JobListenerConfig(BaseModel):
    """The listener Lambda functions report to (PutJobSuccessResult / PutJobFailureResult); off unless configured.
    Its own port, not the webhooks': only the functions need to reach it."""

    model_config = _CONFIG

    host: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535)


class ServiceConfig(BaseModel):
    """```yaml
    host: 0.0.0.0
    port: 8080
    webhookSecretEnv:            # pipeline -> the environment variable holding its webhook secret
      shop-api: SHOP_API_WEBHOOK_SECRET
    identities: identities.yaml  # Slack team+user / emails / GitHub logins -> identities
    slack:
      socketMode: true           # receive clicks over a websocket: no public URL needed
    jobs:                        # Lambda actions' PutJob*Result listener (off unless set)
      host: 0.0.0.0
      port: 8081
    console:                     # the web console at /console/ (off unless set; README "Console")
      trustedProxies: [127.0.0.1/32]   # the SSO proxy: only it may name the user (X-Forwarded-User)
      viewers: ["*"]                   # identities, emails (email:...) or "*": anyone signed in
      operators: [alice]               # may also act: transitions, release change, stop, retry, ...
      tokens:                          # scripts: Authorization: Bearer $CONVEYOR_CONSOLE_TOKEN_CI
        - {name: ci, env: CONVEYOR_CONSOLE_TOKEN_CI, role: operator}
      anonymous: viewer                # read-only for anyone (default: off, 401)
      csrfSecretEnv: CONVEYOR_CONSOLE_CSRF_SECRET  # forms' signing key (default: random per process)
    ```
    The file names variables, never secrets: it can be committed and read by anyone."""

    model_config = _CONFIG

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    webhook_secret_env: dict[str, str] = Field(default_factory=dict)
    identities: Path | None = None  # default: $CONVEYOR_IDENTITIES, the worker's
    slack: SlackConfig | None = None
    jobs: JobListenerConfig | None = None
    console: ConsoleConfig | None = None


def load_service_config(path: Path) -> ServiceConfig:
    config = load_model_file(path, ServiceConfig)
    if config.identities is not None and not config.identities.is_absolute():
        config.identities = path.parent / config.identities  # relative to the file that names it
    return config
