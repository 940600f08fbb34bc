"""`python -m bench`: start an embedded Temporal server, run the scenarios, write JSON and a table."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import psutil

from bench.report import machine_info, notes, table, tuning, tuning_table, write_json
from bench.scenarios import SCENARIOS, BenchContext
from conveyor.devserver import EmbeddedServer
from conveyor.settings import Settings

DEFAULT_SCENARIOS = "overhead,big,recovery"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scenarios",
        default=DEFAULT_SCENARIOS,
        help=f"comma-separated, from {','.join(SCENARIOS)} (default {DEFAULT_SCENARIOS})",
    )
    parser.add_argument("--repeat", type=int, default=None, help="repetitions per side (default: per scenario)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the scenarios' sizes (default 1)")
    parser.add_argument(
        "--approval-rate", type=float, default=5.0, help="approvals per second in the approvals scenario (default 5)"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default bench/results/<timestamp>.json)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repetition: the smoke test")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="an earlier JSON report: add a `tuning` section (before -> after per case and metric)",
    )
    args = parser.parse_args(argv)
    args.scenario_list = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in args.scenario_list if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.out is None:
        args.out = RESULTS_DIR / f"{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def server_pid() -> int | None:
    """The embedded server is our child process; its CPU time is reported per execution."""
    for child in psutil.Process().children():
        try:
            if child.name().startswith("temporal"):
                return child.pid
        except psutil.Error:
            continue
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    server = EmbeddedServer(Settings(data_dir=data_dir), headless=True)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {
            "scenarios": args.scenario_list,
            "repeat": args.repeat,
            "scale": args.scale,
            "tiny": args.tiny,
            "approval_rate": args.approval_rate,
            "server_db": str(data_dir / "temporal.sqlite"),  # its filesystem matters: TMPDIR=/dev/shm is tmpfs
        },
        "scenarios": {},
    }
    try:
        client = await server.start()
        log(f"embedded Temporal server at {server.address}")
        ctx = BenchContext(
            client=client,
            address=server.address,
            data_dir=data_dir,
            server_pid=server_pid(),
            repeat=args.repeat,
            scale=args.scale,
            tiny=args.tiny,
            approval_rate=args.approval_rate,
            log=log,
        )
        for name in args.scenario_list:
            started = time.perf_counter()
            try:
                result = await SCENARIOS[name](ctx)
            except Exception as exc:  # noqa: BLE001 - reported, and the exit code says so
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"}
            result["elapsed_s"] = time.perf_counter() - started
            report["scenarios"][name] = result
            log(f"{name} done in {result['elapsed_s']:.1f} s")
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(0.1)  # let the SDK's connection close before the loop does (sdk-python#300)
        shutil.rmtree(data_dir, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(run(args))
    if args.before is not None:
        report["tuning"] = tuning(json.loads(args.before.read_text()), report, str(args.before))
    write_json(report, args.out)
    print(table(report))
    extra = notes(report)
    if extra:
        print(extra)
    changes = tuning_table(report)
    if changes:
        print(changes)
    print(f"report: {args.out}")
    return 1 if any("error" in r for r in report["scenarios"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
