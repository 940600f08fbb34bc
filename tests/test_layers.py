"""The import contract ([tool.importlinter] in pyproject.toml) places every module of conveyor/ in a layer.

`lint-imports` (run by CI) checks the contracts; it cannot see a module that no contract names, so a new
module of conveyor/ left out of both lists would escape them. This test, with no server, says which.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOWER_LAYERS = {"workflows", "activities"}


def contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["id"]: contract for contract in config["contracts"]}


def foundation() -> list[str]:
    return list(contracts()["foundation"]["source_modules"])


def apps() -> list[str]:
    return list(contracts()["middle"]["forbidden_modules"])


def conveyor_modules() -> list[str]:
    """Every module of the conveyor package, from its files (nothing imported)."""
    names = []
    for path in sorted((ROOT / "conveyor").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def covers(expression: str, module: str) -> bool:
    """As import-linter reads a source or forbidden module: a package stands for its descendants too;
    `package.**` for its descendants only."""
    if expression.endswith(".**"):
        return module.startswith(expression.removesuffix("**"))
    return module == expression or module.startswith(expression + ".")


def layer_of(module: str) -> list[str]:
    return [
        name
        for name, listed in (("foundation", foundation()), ("apps", apps()))
        if any(covers(e, module) for e in listed)
    ]


@pytest.mark.parametrize(
    ("expression", "module", "expected"),
    [
        ("conveyor.spec", "conveyor.spec", True),
        ("conveyor.spec", "conveyor.spec.loading", True),
        ("conveyor.spec", "conveyor.special", False),
        ("conveyor.providers.**", "conveyor.providers.commands", True),
        ("conveyor.providers.**", "conveyor.providers", False),
        ("conveyor.slack.app", "conveyor.slack", False),
    ],
)
def test_covers_reads_expressions_as_import_linter_does(expression: str, module: str, expected: bool) -> None:
    assert covers(expression, module) is expected


@pytest.mark.parametrize("module", [m for m in conveyor_modules() if m not in ("conveyor", "conveyor.slack")])
def test_every_conveyor_module_is_foundation_or_app(module: str) -> None:
    layers = layer_of(module)
    assert len(layers) == 1, (
        f"{module} is in {layers or 'no layer'} of [tool.importlinter] in pyproject.toml: list it (or its package) "
        "once, in the 'foundation' contract's source_modules or, for an app, in the forbidden_modules of "
        "'middle' and 'foundation'"
    )


def test_the_apps_are_forbidden_to_the_foundation_and_to_the_middle_alike() -> None:
    forbidden_to_foundation = set(contracts()["foundation"]["forbidden_modules"])
    assert forbidden_to_foundation == set(apps()) | LOWER_LAYERS


def test_only_the_composition_root_imports_workflows_and_activities() -> None:
    root = contracts()["composition-root"]
    assert set(root["protected_modules"]) == LOWER_LAYERS
    assert root["allowed_importers"] == ["conveyor.worker"]
