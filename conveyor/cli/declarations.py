"""Commands about declarations: validate, schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from conveyor.cli.common import (
    app,
    errors,
    run_async,
    say,
)
from conveyor.spec import json_schema
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
