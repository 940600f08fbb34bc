"""Reading a declaration file (YAML or JSON) from disk."""

from __future__ import annotations

import bisect
import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from conveyor.spec.declaration import Pipeline
from conveyor.spec.validation import DeclarationError, SpecIssue, ValidationReport, format_path, validate_declaration
from conveyor.variables import REFERENCE

M = TypeVar("M", bound=BaseModel)
# A reference after whitespace (or at a line's start): where a YAML comment can begin.
LOST_REFERENCE = re.compile(r"(?<!\S)(" + REFERENCE.pattern + ")")
# Tokens that carry no text of their own: they do not make a line hold a value.
_ZERO_WIDTH_TOKENS = (
    yaml.StreamStartToken,
    yaml.StreamEndToken,
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.BlockEndToken,
    yaml.KeyToken,
)


class DuplicateKeyError(ValueError):
    """A key given twice in one mapping: YAML and JSON would silently keep the last."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (with both lines)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` then an explicit key is an override, not a repeat
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, str) and key in seen:
                raise DuplicateKeyError(
                    f"line {line}: key '{key}' is given twice in one mapping (first on line {seen[key]}); "
                    "keep one: YAML would silently use the last"
                )
            if isinstance(key, str):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise DuplicateKeyError(f"key '{key}' is given twice in one object; keep one: JSON would use the last")
    return dict(pairs)


def _decode(raw: bytes) -> str:
    """UTF-8 text, or a UnicodeDecodeError re-worded with the line and column of the bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(
            f"line {line}, column {column}: byte 0x{raw[exc.start]:02x} is not valid UTF-8; save the file as UTF-8"
        ) from None


def read_declaration(path: Path, *, missing: str = "file not found") -> Any:
    """The file's raw content; DeclarationError (naming the file and line) if it cannot be read."""
    source = str(path)
    try:
        text = _decode(path.read_bytes())
    except FileNotFoundError:
        raise DeclarationError(source, [SpecIssue("", missing)]) from None
    except OSError as exc:
        raise DeclarationError(source, [SpecIssue("", f"cannot read the file: {exc.strerror or exc}")]) from None
    except ValueError as exc:
        raise DeclarationError(source, [SpecIssue("", str(exc))]) from None
    with parse_errors(source):
        if path.suffix.lower() == ".json":
            return json.loads(text, object_pairs_hook=_unique_pairs)
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


@contextlib.contextmanager
def parse_errors(source: str) -> Iterator[None]:
    """A repeated key, bad JSON or bad YAML in `source` as a DeclarationError naming the line."""
    try:
        yield
    except DuplicateKeyError as exc:
        raise DeclarationError(source, [SpecIssue("", str(exc))]) from None
    except json.JSONDecodeError as exc:
        raise DeclarationError(source, [SpecIssue("", f"line {exc.lineno}: invalid JSON: {exc.msg}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DeclarationError(source, [SpecIssue("", f"{where}invalid YAML: {problem}")]) from None


def load_model_file(path: Path, model: type[M], *, missing: str = "file not found") -> M:
    """A settings file (YAML or JSON) as `model`; DeclarationError naming the file, the path inside it
    and what is wrong, as for a declaration."""
    data = read_declaration(path, missing=missing) or {}
    try:
        return model.model_validate(data)
    except ValidationError as err:
        issues = [SpecIssue(format_path(e["loc"]), e["msg"].lower()) for e in err.errors()]
        raise DeclarationError(str(path), issues) from None


def references_lost_to_comments(text: str, data: Any = None) -> list[SpecIssue]:
    """In YAML, ` #` starts a comment, so an unquoted `- echo #{Build.VERSION}` silently loses its
    reference. Flag a reference that YAML's scanner read as a comment trailing a value on the same
    line; a reference inside a quoted or block scalar, or in a whole-line comment, is left alone.
    (`data` is unused; kept for callers of the earlier signature.)"""
    try:
        tokens = list(yaml.scan(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return []  # unreadable YAML is reported by read_declaration
    # Both in text order: tokens with text of their own come one after another.
    scalars = [(t.start_mark.index, t.end_mark.index) for t in tokens if isinstance(t, yaml.ScalarToken)]
    starts = [start for start, _ in scalars]
    ends = [t.end_mark.index for t in tokens if not isinstance(t, _ZERO_WIDTH_TOKENS)]
    issues = []
    reported_lines: set[int] = set()
    for match in LOST_REFERENCE.finditer(text):
        at = match.start()
        inside = bisect.bisect_right(starts, at) - 1
        if inside >= 0 and at < scalars[inside][1]:
            continue  # part of a value: not a comment
        line_start = max(text.rfind("\n", 0, at), text.rfind("\r", 0, at)) + 1
        before = bisect.bisect_right(ends, at) - 1
        if before < 0 or ends[before] < line_start:
            continue  # a whole-line comment: meant as one
        number = text.count("\n", 0, at) + 1
        if number in reported_lines:
            continue
        reported_lines.add(number)
        issues.append(
            SpecIssue(
                "",
                f"line {number}: '{match.group(1)}' was read as a YAML comment (' #' starts one); "
                "quote the whole value, e.g. - 'echo \"#{...}\"'",
            )
        )
    return issues


def validate_file(path: Path) -> ValidationReport:
    data = read_declaration(path)
    report = validate_declaration(data)
    if path.suffix.lower() != ".json":
        report.errors = references_lost_to_comments(_decode(path.read_bytes())) + report.errors
    return report


def load_pipeline(path: Path) -> tuple[Pipeline, dict[str, Any]]:
    """The validated pipeline and the plain mapping that an execution pins as its snapshot."""
    report = validate_file(path)
    if not report.ok:
        raise DeclarationError(str(path), report.errors)
    assert report.pipeline is not None
    return report.pipeline, report.pipeline.model_dump(mode="json", exclude_none=True)
