"""Reading a declaration file (YAML or JSON) from disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from conveyor.spec.declaration import Pipeline
from conveyor.spec.validation import DeclarationError, SpecIssue, ValidationReport, validate_pipeline


def read_declaration(path: Path) -> Any:
    """The file's raw content; DeclarationError (naming the file and line) if it cannot be read."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeclarationError(source, [SpecIssue("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DeclarationError(source, [SpecIssue("", f"cannot read the file: {exc}")]) from None
    try:
        if path.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise DeclarationError(source, [SpecIssue("", f"line {exc.lineno}: invalid JSON: {exc.msg}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DeclarationError(source, [SpecIssue("", f"{where}invalid YAML: {problem}")]) from None


def validate_file(path: Path) -> ValidationReport:
    return validate_pipeline(read_declaration(path))


def load_pipeline(path: Path) -> tuple[Pipeline, dict[str, Any]]:
    """The validated pipeline and the plain mapping that an execution pins as its snapshot."""
    report = validate_file(path)
    if not report.ok:
        raise DeclarationError(str(path), report.errors)
    assert report.pipeline is not None
    return report.pipeline, report.pipeline.model_dump(mode="json", exclude_none=True)
