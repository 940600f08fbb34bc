"""What `conveyor import` tells about one imported pipeline: what mapped, what became a pipeline variable,
what needs attention, and what a CodeBuild project defined beside it carried over."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ReportKind(StrEnum):
    MAPPED = "maps"
    VARIABLE = "variable"
    ATTENTION = "attention"
    CODEBUILD = "codebuild"


@dataclass(frozen=True)
class ReportLine:
    kind: ReportKind
    path: str  # where in the source file (a resource's address and the path inside it)
    message: str


@dataclass(frozen=True)
class ImportedVariable:
    name: str
    default: str | None
    origin: str  # as the template wrote it: "!Ref GitHubBranch", "var.branch"


@dataclass
class ImportedPipeline:
    """One pipeline of the file, as Conveyor's declaration (a plain mapping in the order a person writes it)."""

    name: str
    resource: str  # its address in the file: "Pipeline" (a logical id), "aws_codepipeline.main"
    declaration: dict[str, Any]
    lines: list[ReportLine] = field(default_factory=list)

    @property
    def resource_name(self) -> str:
        """The resource's own name: `main` of `aws_codepipeline.main`."""
        return self.resource.rsplit(".", 1)[-1]

    def of_kind(self, kind: ReportKind) -> list[ReportLine]:
        return [line for line in self.lines if line.kind == kind]


@dataclass(frozen=True)
class ImportResult:
    source: str  # the file imported
    source_format: str  # "CloudFormation", "Terraform", "CodePipeline"
    pipelines: list[ImportedPipeline]
