"""Values quoted in messages (errors, summaries) are cut: a 5 MB value never travels whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.providers.commands import CommandsProvider
from conveyor.model import ActionContext, CommandsInput
from conveyor.settings import Settings
from conveyor.spec.validation import validate_pipeline
from conveyor.stores.artifacts import LocalArtifactStore
from conveyor.text import shorten

HUGE = 5_000_000


def test_shorten_keeps_short_values_and_says_how_much_it_cut() -> None:
    assert shorten("x" * 200) == "x" * 200
    assert shorten("x" * 201) == "x" * 200 + "... (1 more characters)"
    assert shorten("abcdef", 2) == "ab... (4 more characters)"


async def test_a_huge_command_and_huge_output_lines_are_cut_in_the_error(tmp_path: Path) -> None:
    """A 5 MB command line (and a 1 MB line of output) is not echoed whole into the error, which ends up
    in history, in `status` and on the worker's stderr."""
    settings = Settings(data_dir=tmp_path / "data")
    provider = CommandsProvider(settings, LocalArtifactStore(settings.artifacts_dir))
    huge = "true " + "x" * HUGE + "; exit 4"
    context = ActionContext(pipeline_name="shop", execution_id="exec-1", stage_name="Build", action_name="Compile")
    commands = ["head -c 1000000 /dev/zero | tr '\\0' y; echo", huge]
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(provider.run_commands, CommandsInput(context=context, commands=commands))
    message = raised.value.message
    assert len(message) < 10_000, len(message)
    assert "command 2 ('true xxxx" in message and "failed with exit code 4" in message
    assert f"... ({len(huge) - 200} more characters)" in message  # the command: its first 200 characters
    assert "yyyy... (" in message  # each output line as well


def test_a_huge_wrong_value_is_cut_in_the_validation_message() -> None:
    report = validate_pipeline({"name": "p " * (HUGE // 2), "stages": []})
    text = "\n".join(issue.render("p.yaml") for issue in report.errors)
    assert "name: string should have at most 100 characters" in text
    assert f"... ({HUGE - 200} more characters)" in text
    assert len(text) < 5_000, len(text)
