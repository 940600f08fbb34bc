"""Scenario `codebuild`: a local CodeBuild build against a bash script running the same commands, same run.

The build: a buildspec of N commands (20; `--scale` multiplies) spread over install, pre_build, build and
post_build, each some work (5,000 lines generated, kept and hashed: about 50 ms) and 100 lines of output for the
log; one exported variable and one output artifact (the commands' checksums). Conveyor's side is the `codebuild`
activity itself (the local runner through the SDK's ActivityEnvironment: input artifact extracted, buildspec
loaded, the generated script in its process group with heartbeats, the log pumped into the store, markers read,
variables exported, the artifact packed); the floor ("baseline") is `bash script.sh > build.log` of the same
commands in a fresh copy of the same source. Headline: wall seconds, ratio = Conveyor / floor (the issue's
target: at most 1.10). A light case (500 lines per command) is reported only: there the runner's fixed cost shows.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from temporalio.testing import ActivityEnvironment

from activities.providers.codebuild import CodeBuildProvider
from bench.report import summarize_case
from conveyor.aws.identity import AwsIdentity
from conveyor.model import ActionContext
from conveyor.providers.codebuild import CodeBuildInput
from conveyor.settings import Settings
from conveyor.stores.artifacts import LocalArtifactStore

LINES = 5000  # lines each command generates and hashes (about 50 ms of work)
LIGHT_LINES = 500  # the light case: the runner's fixed cost dominates
PHASES = ("install", "pre_build", "build", "post_build")


def command(n: int, lines: int = LINES) -> str:
    """Some work, and 100 lines of output for the log."""
    return (
        f'for i in $(seq 1 {lines}); do echo "command {n} line $i"; done | tee -a out/all.txt | sha256sum'
        f" > out/sum-{n}.txt; tail -n 100 out/all.txt"
    )


def buildspec(count: int, lines: int = LINES) -> dict[str, Any]:
    per_phase: dict[str, list[str]] = {phase: [] for phase in PHASES}
    for n in range(count):
        per_phase[PHASES[n * len(PHASES) // count]].append(command(n, lines))
    per_phase["install"] = ["mkdir -p out", "export BUILT=yes", *per_phase["install"]]
    return {
        "version": 0.2,
        "env": {"exported-variables": ["BUILT"]},
        "phases": {phase: {"commands": commands} for phase, commands in per_phase.items() if commands},
        "artifacts": {"files": ["out/sum-*.txt"]},
    }


def bash_script(count: int, lines: int = LINES) -> str:
    commands = (command(n, lines) for n in range(count))
    return "\n".join(["set -e", "mkdir -p out", "export BUILT=yes", *commands]) + "\n"


def _floor_once(src: Path, work: Path, script: Path) -> float:
    tree = work / f"floor-{uuid.uuid4().hex[:8]}"
    began = time.perf_counter()
    shutil.copytree(src, tree)
    with (work / "build.log").open("wb") as log:
        subprocess.run(["bash", str(script)], cwd=tree, stdout=log, stderr=subprocess.STDOUT, check=True)
    elapsed = time.perf_counter() - began
    shutil.rmtree(tree, ignore_errors=True)
    return elapsed


async def codebuild(ctx: Any) -> dict[str, Any]:
    count = ctx.scaled(20, tiny=4)
    repeats = ctx.repeats(5)
    work = Path(tempfile.mkdtemp(prefix="codebuild-", dir=ctx.data_dir))
    cases: dict[str, Any] = {}
    notes = []
    try:
        for label, lines, reported_only in (("", LINES, False), ("-light", LIGHT_LINES, True)):
            case = await _case(ctx, work / f"case{label}", count, lines, repeats)
            case["reported_only"] = reported_only
            cases[f"{count}-commands{label}"] = case
            c, b = case["conveyor"]["wall_s"]["median"], case["baseline"]["wall_s"]["median"]
            notes.append(
                f"{count} commands x {lines} lines{' (reported only)' if reported_only else ''}: local CodeBuild "
                f"{c:.3f} s vs bash script {b:.3f} s: ratio {case['ratio']:.2f}"
                + ("" if reported_only else " (target <= 1.10)")
                + f"; the runner's own cost {1000 * (c - b):.0f} ms per build"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    headline = cases[f"{count}-commands"]
    return {"cases": cases, "ratio": headline["ratio"], "repeat": repeats, "notes": notes}


async def _case(ctx: Any, work: Path, count: int, lines: int, repeats: int) -> dict[str, Any]:
    settings = Settings(data_dir=work / "data")
    store = LocalArtifactStore(settings.artifacts_dir)
    src = work / "src"
    (src / "app").mkdir(parents=True)
    (src / "app" / "main.txt").write_text("source\n" * 1000)
    ref = store.put("Src", src, ["**/*"])
    script = work / "script.sh"
    script.write_text(bash_script(count, lines))
    text = yaml.safe_dump(buildspec(count, lines))
    activity = CodeBuildProvider(settings, store).codebuild
    ctx.log(f"codebuild: {count} commands x {lines} lines; {repeats} repetitions per side")

    async def conveyor_once() -> float:
        context = ActionContext(
            pipeline_name="bench", execution_id=uuid.uuid4().hex, stage_name="Build", action_name="Compile"
        )
        input = CodeBuildInput(
            context=context,
            identity=AwsIdentity(session_name="bench"),
            project_name="bench",
            input_artifacts=[ref],
            output_artifacts=["Out"],
            buildspec=text,
        )
        began = time.perf_counter()
        outcome = await ActivityEnvironment().run(activity, input)
        elapsed = time.perf_counter() - began
        assert outcome.output_variables == {"BUILT": "yes"}, outcome
        return elapsed

    async def floor_once() -> float:
        return await asyncio.to_thread(_floor_once, src, work, script)

    sides = {"conveyor": conveyor_once, "baseline": floor_once}
    if not ctx.tiny:
        for side in sides.values():
            await side()
    raw: dict[str, dict[str, list[float]]] = {"conveyor": {}, "baseline": {}}
    for rep in range(repeats):
        for side in ("conveyor", "baseline") if rep % 2 == 0 else ("baseline", "conveyor"):
            raw[side].setdefault("wall_s", []).append(await sides[side]())
    return summarize_case(raw, "wall_s", commands=count, lines_per_command=lines)
