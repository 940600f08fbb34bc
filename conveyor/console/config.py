"""The console's settings: the `console:` section of `conveyor serve --config FILE` (variables' names, no secret)."""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

_CONFIG = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid")
HeaderName = str


class Role(StrEnum):
    """What a person may do in the console. Approving is not a role: the approval policy decides it."""

    VIEWER = "viewer"  # read every page
    OPERATOR = "operator"  # also act: transitions, release change, stop, retry, rollback, override


class BearerToken(BaseModel):
    """A token for scripts (`Authorization: Bearer ...`): the variable holding it, the name it acts as, its role."""

    model_config = _CONFIG

    name: str = Field(min_length=1, pattern=r"^[^\s:]+$")
    env: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    role: Role = Role.VIEWER


class ConsoleConfig(BaseModel):
    """```yaml
    console:
      trustedProxies: [127.0.0.1/32]   # the SSO proxy's addresses: only they may name the user
      userHeader: X-Forwarded-User     # the header naming the user (oauth2-proxy's)
      emailHeader: X-Forwarded-Email   # optional: also the user's email
      groupsHeader: X-Forwarded-Groups # optional: the proxy's groups (comma-separated), matched as group:NAME
      viewers: ["*"]                   # identities, email:..., group:... or "*" (anyone signed in)
      operators: [alice, email:bob@example.com, group:release-managers]
      tokens:
        - {name: deploy-bot, env: CONVEYOR_CONSOLE_TOKEN_BOT, role: operator}
      anonymous: viewer                # default: off (401)
      csrfSecretEnv: CONVEYOR_CONSOLE_CSRF_SECRET   # default: a random secret per process
    ```"""

    model_config = _CONFIG

    trusted_proxies: list[IPv4Network | IPv6Network] = Field(default_factory=list)
    user_header: HeaderName = Field(default="X-Forwarded-User", min_length=1)
    email_header: HeaderName | None = None
    groups_header: HeaderName | None = None
    viewers: list[str] = Field(default_factory=list)
    operators: list[str] = Field(default_factory=list)
    tokens: list[BearerToken] = Field(default_factory=list)
    anonymous: Literal[Role.VIEWER] | None = None  # read-only at most: acting always needs a known person
    csrf_secret_env: str | None = None
