"""The benchmark harness runs end to end at tiny scale. Nothing here asserts a timing: targets are
measured by `python -m bench`, never asserted in tests."""

from __future__ import annotations

import json
import numbers
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ("overhead", "big", "recovery", "handoff", "codebuild", "invoke")


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_bench_runs_every_scenario_at_tiny_scale(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--scenarios", ",".join(SCENARIOS), "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(out.read_text())
    assert report["machine"]["cpu_count"]
    for name in SCENARIOS:
        scenario = report["scenarios"][name]
        assert "error" not in scenario, scenario.get("error")
        assert "ratio" in scenario
        assert scenario["cases"], name
        for case_name, case in scenario["cases"].items():
            assert "ratio" in case, case_name
            headline = case["headline"]
            for side in ("conveyor", "baseline"):
                assert isinstance(case[side][headline]["median"], numbers.Real), (name, case_name, side)
                assert isinstance(case[side][headline]["p95"], numbers.Real), (name, case_name, side)
    assert report["scenarios"]["recovery"]["completed_actions_run_twice"] == 0
    assert "| overhead |" in completed.stdout  # the table


@pytest.mark.timeout(150)
def test_bench_console_scenario_at_tiny_scale(tmp_path: Path) -> None:
    """The console's pages over loopback HTTP against their floors, on a tiny history (12 executions, 2 held)."""
    out = tmp_path / "console.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--scenarios", "console", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    scenario = json.loads(out.read_text())["scenarios"]["console"]
    assert "error" not in scenario, scenario.get("error")
    assert scenario["executions"] == 14 and scenario["held_at_approval"] == 2
    pages = {"pipelines list", "pipeline page", "history first page", "history status=Failed", "history fourth page"}
    assert pages <= set(scenario["cases"])
    for case in scenario["cases"].values():
        assert isinstance(case["p95_ms"], numbers.Real) and isinstance(case["ratio"], numbers.Real)
        assert case["conveyor"]["get_ms"]["n"] == case["baseline"]["get_ms"]["n"] > 0
    assert "execution page" in scenario["cases"] or any("execution page" in note for note in scenario["notes"])
