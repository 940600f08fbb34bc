"""Commands about declarations: validate, schema, import."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.common import (
    UsageError,
    app,
    console,
    errors,
    print_error,
    run_async,
    say,
)
from conveyor.spec import json_schema
from conveyor.spec.importing import ReportKind, dump_declaration, import_file
from conveyor.spec.loading import validate_file
from conveyor.spec.validation import DeclarationError

# --- declarations --------------------------------------------------------------------------------------


@app.command(rich_help_panel="Declarations")
def validate(file: Annotated[Path, typer.Argument(help="Pipeline declaration (YAML or JSON)")]) -> None:
    """Check a declaration; every problem is listed with its path and what to change."""

    async def check() -> int:
        report = validate_file(file)
        for warning in report.warnings:
            say(f"warning: {warning.render(str(file))}", to=errors)
        if not report.ok:
            raise DeclarationError(str(file), report.errors)
        assert report.pipeline is not None
        actions = sum(len(s.actions) for s in report.pipeline.stages)
        say(f"{file}: valid ({len(report.pipeline.stages)} stages, {actions} actions)")
        return 0

    run_async(check())


@app.command(rich_help_panel="Declarations")
def schema() -> None:
    """Print the JSON Schema of the declaration (for editors)."""
    sys.stdout.write(json.dumps(json_schema(), indent=2) + "\n")


REPORT_ORDER = (ReportKind.MAPPED, ReportKind.VARIABLE, ReportKind.CODEBUILD, ReportKind.ATTENTION)


@app.command("import", rich_help_panel="Declarations")
def import_(
    file: Annotated[Path, typer.Argument(help="CloudFormation template (YAML or JSON) or Terraform file (.tf)")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the one pipeline here ('-': standard output)")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Write each pipeline to DIR/<name>.yaml (default: .)")
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option("--pipeline", help="Import only this pipeline (its name or resource name)")
    ] = None,
) -> None:
    """Turn a CloudFormation or Terraform pipeline into Conveyor's YAML, with a report of what maps, what
    became a pipeline variable and what needs attention."""

    async def convert() -> int:
        if output is not None and output_dir is not None:
            raise UsageError("give --output or --output-dir, not both")
        try:
            result = import_file(file)
        except DeclarationError as err:
            for problem in str(err).splitlines():
                say(problem, to=errors)
            return 1
        chosen = [p for p in result.pipelines if pipeline is None or pipeline in (p.name, p.resource, p.resource_name)]
        if not chosen:
            found = ", ".join(p.name for p in result.pipelines)
            print_error(
                f"{file}: no pipeline named '{pipeline}' (the file holds: {found})"
                if pipeline and found
                else f"{file}: no pipeline found in this {result.source_format} file"
            )
            return 1
        if output is not None and len(chosen) > 1:
            names = ", ".join(p.name for p in chosen)
            raise UsageError(
                f"{file} holds {len(chosen)} pipelines ({names}): use --output-dir, or --pipeline NAME with --output"
            )
        to_stdout = output == Path("-")
        report = errors if to_stdout else console
        for imported in chosen:
            target = output if output is not None else (output_dir or Path(".")) / f"{imported.name}.yaml"
            header = (
                f"Imported by `conveyor import` from {file} ({result.source_format} {imported.resource}).\n"
                "Check what the import report marked for attention before running it."
            )
            text = dump_declaration(imported.declaration, header)
            if to_stdout:
                sys.stdout.write(text)
            else:
                if target.resolve() == file.resolve():
                    raise UsageError(f"{target} is the file being imported: choose another output")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            where = "standard output" if to_stdout else str(target)
            say(f"{file}: {imported.resource} -> {where} (pipeline {imported.name})", to=report)
            for kind in REPORT_ORDER:
                for entry in imported.of_kind(kind):
                    say(f"  {kind.value:<9} {entry.path}: {entry.message}", to=report)
        return 0

    run_async(convert())
