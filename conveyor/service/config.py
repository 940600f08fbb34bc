"""`conveyor serve --config FILE`: the service's settings in a YAML file (secrets stay in the environment)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from conveyor.spec.validation import DeclarationError, SpecIssue, format_path


class ServiceConfig(BaseModel):
    """```yaml
    host: 0.0.0.0
    port: 8080
    webhookSecretEnv:            # pipeline -> the environment variable holding its webhook secret
      shop-api: SHOP_API_WEBHOOK_SECRET
    ```
    The file names variables, never secrets: it can be committed and read by anyone."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    webhook_secret_env: dict[str, str] = Field(default_factory=dict)


def load_service_config(path: Path) -> ServiceConfig:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise DeclarationError(str(path), [SpecIssue("", "file not found")]) from None
    except yaml.YAMLError as err:
        raise DeclarationError(str(path), [SpecIssue("", f"invalid YAML: {err}")]) from None
    try:
        return ServiceConfig.model_validate(data)
    except ValidationError as err:
        raise DeclarationError(
            str(path), [SpecIssue(format_path(e["loc"]), e["msg"].lower()) for e in err.errors()]
        ) from None
