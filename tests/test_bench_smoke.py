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
