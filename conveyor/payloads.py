"""Conveyor's data converter: pydantic's JSON, leaving out every field at its default value.

Every payload is written to history (and results and stage inputs are copied into the parent's
history too), so a compact encoding is a smaller history and less work for the server. Reading a
payload back as its model restores the defaults; a field is never left out unless it equals its
default, so nothing is lost.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import SchemaSerializer, core_schema
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import CompositePayloadConverter, DataConverter, DefaultPayloadConverter
from temporalio.converter import JSONPlainPayloadConverter as StandardJSON

_ANY = SchemaSerializer(core_schema.any_schema())


class CompactJSONPayloadConverter(PydanticJSONPlainPayloadConverter):
    def to_payload(self, value: Any) -> Payload | None:
        return Payload(metadata={"encoding": self.encoding.encode()}, data=_ANY.to_json(value, exclude_defaults=True))


class CompactPayloadConverter(CompositePayloadConverter):
    """The standard converters, with the JSON one replaced (as `temporalio.contrib.pydantic` does)."""

    def __init__(self) -> None:
        compact = CompactJSONPayloadConverter()
        super().__init__(
            *(
                compact if isinstance(c, StandardJSON) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


data_converter = DataConverter(payload_converter_class=CompactPayloadConverter)
