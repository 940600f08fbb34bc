"""Reading a declaration file (YAML or JSON) from disk."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from conveyor.spec.declaration import Pipeline
from conveyor.variables import REFERENCE

LOST_REFERENCE = re.compile(r"\s(" + REFERENCE.pattern + ")")
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


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def references_lost_to_comments(text: str, data: Any) -> list[SpecIssue]:
    """In YAML, ` #` starts a comment, so an unquoted `echo #{Build.VERSION}` silently loses its
    reference. Flag a line whose parsed value is exactly the text before such a ` #{`."""
    parsed = {value.strip() for value in _strings(data) if value.strip()}
    issues = []
    for number, line in enumerate(text.splitlines(), start=1):
        for match in LOST_REFERENCE.finditer(line):
            before = line[: match.start()].rstrip()
            if any(before.endswith(value) for value in parsed):
                issues.append(
                    SpecIssue(
                        "",
                        f"line {number}: '{match.group(1)}' was read as a YAML comment (' #' starts one); "
                        "quote the whole value, e.g. - 'echo \"#{...}\"'",
                    )
                )
                break
    return issues


def validate_file(path: Path) -> ValidationReport:
    data = read_declaration(path)
    report = validate_pipeline(data)
    if path.suffix.lower() != ".json":
        report.errors = references_lost_to_comments(path.read_text(encoding="utf-8"), data) + report.errors
    return report


def load_pipeline(path: Path) -> tuple[Pipeline, dict[str, Any]]:
    """The validated pipeline and the plain mapping that an execution pins as its snapshot."""
    report = validate_file(path)
    if not report.ok:
        raise DeclarationError(str(path), report.errors)
    assert report.pipeline is not None
    return report.pipeline, report.pipeline.model_dump(mode="json", exclude_none=True)
