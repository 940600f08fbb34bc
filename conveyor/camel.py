"""The base of every model that crosses a boundary: camelCase JSON names (people type them into `temporal workflow`
commands), accepted by name or alias. Its own module so conveyor.events and conveyor.model can both build on it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class CamelModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )
