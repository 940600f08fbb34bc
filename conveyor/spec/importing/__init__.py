"""`conveyor import`: CloudFormation templates and Terraform files holding CodePipeline pipelines, turned into
Conveyor's declaration with a report. Pure apart from reading the one file; not imported by the workflows
(python-hcl2 and its parser stay out of the sandbox)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from conveyor.spec.importing import cloudformation, terraform
from conveyor.spec.importing.report import ImportedPipeline, ImportResult, ReportKind, ReportLine
from conveyor.spec.loading import _decode, parse_errors
from conveyor.spec.validation import DeclarationError, SpecIssue, unwrap_declaration

__all__ = ["ImportResult", "ImportedPipeline", "ReportKind", "ReportLine", "dump_declaration", "import_file"]


def import_file(path: Path) -> ImportResult:
    """The pipelines of a CloudFormation template, a Terraform file or a CodePipeline declaration (get-pipeline
    JSON, taken as it is); DeclarationError naming the file and line when it cannot be read."""
    source = str(path)
    try:
        text = _decode(path.read_bytes())
    except FileNotFoundError:
        raise DeclarationError(source, [SpecIssue("", "file not found")]) from None
    except OSError as exc:
        raise DeclarationError(source, [SpecIssue("", f"cannot read the file: {exc.strerror or exc}")]) from None
    except ValueError as exc:
        raise DeclarationError(source, [SpecIssue("", str(exc))]) from None
    if path.suffix.lower() == ".tf":
        try:
            module = terraform.parse(text)
        except terraform.TerraformSyntaxError as exc:
            raise DeclarationError(source, [SpecIssue("", str(exc))]) from None
        return ImportResult(source, "Terraform", terraform.import_module(module))
    data = _load(text, source, json_text=path.suffix.lower() == ".json")
    if cloudformation.is_template(data):
        return ImportResult(source, "CloudFormation", cloudformation.import_template(data))
    declaration = unwrap_declaration(data)
    if isinstance(declaration, dict) and "stages" in declaration:
        name = str(declaration.get("name", path.stem))
        line = ReportLine(ReportKind.MAPPED, name, "a CodePipeline declaration: taken as it is")
        return ImportResult(source, "CodePipeline", [ImportedPipeline(name, name, declaration, [line])])
    raise DeclarationError(
        source,
        [
            SpecIssue(
                "",
                "no pipeline found: expected a CloudFormation template with AWS::CodePipeline::Pipeline resources "
                "(YAML or JSON), a Terraform file (.tf) with aws_codepipeline resources, or a CodePipeline "
                "declaration",
            )
        ],
    )


def _load(text: str, source: str, *, json_text: bool) -> Any:
    with parse_errors(source):
        return cloudformation.load_template(text, json_text=json_text)


class _DeclarationDumper(yaml.SafeDumper):
    """YAML a person reads: keys in the order given, multi-line text (a buildspec) as a block."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and not value.strip(" \n") == "" and " \n" not in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_DeclarationDumper.add_representer(str, _text)


def dump_declaration(declaration: dict[str, Any], header: str = "") -> str:
    """The declaration as YAML that `conveyor validate` loads, with `header` as a leading comment."""
    body = yaml.dump(declaration, Dumper=_DeclarationDumper, sort_keys=False, allow_unicode=True, width=120)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + body
