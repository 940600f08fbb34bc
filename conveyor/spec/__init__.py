"""The pipeline declaration: models, loading, validation and JSON Schema."""

from typing import Any

from conveyor.spec.declaration import Action, ExecutionMode, Pipeline, Stage
from conveyor.spec.validation import (
    DeclarationError,
    SpecIssue,
    ValidationReport,
    parse_pipeline,
    validate_declaration,
    validate_pipeline,
)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the declaration, for editors (`conveyor schema`)."""
    schema = Pipeline.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Conveyor pipeline declaration"
    return schema


__all__ = [
    "Action",
    "DeclarationError",
    "ExecutionMode",
    "Pipeline",
    "SpecIssue",
    "Stage",
    "ValidationReport",
    "json_schema",
    "parse_pipeline",
    "validate_declaration",
    "validate_pipeline",
]
