"""Turning a template's expressions into values: what both formats share. An expression with no static
value becomes a pipeline variable where CodePipeline resolves variables (configuration, environment
variables), and is `Unresolved` elsewhere (names, roles, artifact stores), where the mapper decides."""

from __future__ import annotations

import re
from typing import Any, Protocol

from conveyor.spec.importing.report import ImportedVariable, ReportKind, ReportLine

VARIABLE_NAME = re.compile(r"[^A-Za-z0-9@\-_]")


class NoValue:
    """CloudFormation's AWS::NoValue: the property is left out."""

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = NoValue()


class Unresolved(Exception):
    """An expression with no value known before the pipeline runs."""

    def __init__(self, origin: str, variable: str, default: str | None = None, attention: str | None = None) -> None:
        super().__init__(origin)
        self.origin = origin  # as the template wrote it
        self.variable = variable  # the pipeline variable it becomes where variables resolve
        self.default = default  # the template's default (a Parameter's Default, a variable's default)
        self.attention = attention  # why a person should look at it, beyond becoming a variable


class Book:
    """The pipeline variables and report lines of one pipeline being imported."""

    def __init__(self) -> None:
        self.variables: dict[str, ImportedVariable] = {}
        self.lines: list[ReportLine] = []

    def variable(self, unresolved: Unresolved, path: str) -> str:
        """The `#{variables.NAME}` reference that stands for an unresolved expression, declared once."""
        name = VARIABLE_NAME.sub("", unresolved.variable)[:128] or "Value"
        known = self.variables.get(name)
        suffix = 2
        while known is not None and known.origin != unresolved.origin:
            name = f"{name[:120]}{suffix}"
            known, suffix = self.variables.get(name), suffix + 1
        if known is None:
            self.variables[name] = ImportedVariable(name, unresolved.default, unresolved.origin)
            default = "no default" if unresolved.default is None else f"default '{unresolved.default}'"
            self.note(ReportKind.VARIABLE, path, f"{unresolved.origin} -> #{{variables.{name}}} ({default})")
        if unresolved.attention:
            self.attention(path, unresolved.attention)
        return f"#{{variables.{name}}}"

    def stand_in(self, unresolved: Unresolved, path: str, *, static: bool) -> str:
        """What an unresolved expression becomes: a variable reference, or (static) the template's default."""
        if not static:
            return self.variable(unresolved, path)
        if unresolved.default is None:
            raise unresolved
        self.attention(
            path,
            f"{unresolved.origin}: used its default '{unresolved.default}' (a variable cannot stand here)",
        )
        return unresolved.default

    def note(self, kind: ReportKind, path: str, message: str) -> None:
        line = ReportLine(kind, path, message)
        if line not in self.lines:
            self.lines.append(line)

    def attention(self, path: str, message: str) -> None:
        self.note(ReportKind.ATTENTION, path, message)


class Resolver(Protocol):
    """A format's expression evaluator."""

    def resolve(self, raw: Any, path: str, book: Book, *, static: bool = False) -> Any:
        """The value of `raw`. Unresolved parts become pipeline variable references, or in a static
        position (a name, a role) their default, else Unresolved is raised."""

    def is_expression(self, raw: Any) -> bool:
        """Whether `raw` is an expression rather than a literal value."""
