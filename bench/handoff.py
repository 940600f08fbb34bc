"""Scenario `handoff`: one artifact hand-off (put, then extract with verification) against the plain tools.

The tree: 200 MB in 2,000 files (`--scale` multiplies both), half incompressible (random bytes) and half
text-like, from a fixed seed, so every run and both sides see the same bytes. The floor ("baseline" in the
report) is what a shell script would do, run as subprocesses and timed end to end: `tar -c | zstd -1` to a
file and `sha256sum` of it (pack), `zstd -d | tar -x` (extract). Conveyor's side is `LocalArtifactStore.put`
(pack, digest, store) and `.extract` (verify while extracting) of the same tree. Headline: total seconds,
ratio = Conveyor / floor (the issue's target: at most 1.5). The S3 store is measured the same way on a moto
server (a subprocess on loopback) when `conveyor.stores.s3` exists, and reported only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from bench.moto import moto_server
from bench.report import summarize_case
from conveyor.model import ArtifactRef
from conveyor.stores.artifacts import LocalArtifactStore

SEED = 14
_WORDS = 4096  # vocabulary of the text-like files


class _Store(Protocol):
    def put(self, name: str, source_dir: Path, files: list[str]) -> ArtifactRef: ...

    def extract(self, ref: ArtifactRef, dest: Path) -> None: ...


# --- the tree ------------------------------------------------------------------------------------


def _text_corpus(rng: random.Random, size: int) -> bytes:
    """Lines of words from a fixed vocabulary: compresses like source code or logs (deflate ~0.45)."""
    letters = "etaoinshrdlcumwfgypbvkjxqz_"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(_WORDS)]
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(_WORDS)))  # Zipf-like, as in text
    lines: list[str] = []
    total = 0
    while total < size:
        indent = "    " * rng.randint(0, 3)
        line = indent + " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(3, 12))) + "\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def make_tree(root: Path, total_bytes: int, files: int, seed: int = SEED) -> int:
    """`files` files of `total_bytes` in all under `root` (in subdirectories of 100), alternately random
    and text-like; sizes vary (0.2x-1.8x the mean). Deterministic in `seed`. Returns the bytes written."""
    rng = random.Random(seed)
    mean = total_bytes // files
    corpus = _text_corpus(rng, min(max(8 * mean, 1 << 20), 8 << 20))
    written = 0
    for n in range(files):
        size = max(1, int(mean * (0.2 + 1.6 * rng.random())))
        folder = root / f"d{n // 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if n % 2:
            data = rng.randbytes(size)
            path = folder / f"blob{n:05d}.bin"
        else:
            header = f"# file {n}\n".encode()
            start = rng.randrange(len(corpus))
            body = (corpus[start:] + corpus)[: size - len(header)] if size > len(header) else b""
            data = header + body
            path = folder / f"text{n:05d}.txt"
        path.write_bytes(data)
        written += len(data)
    return written


# --- the two sides -------------------------------------------------------------------------------


def _run(script: str) -> None:
    subprocess.run(["bash", "-o", "pipefail", "-ec", script], check=True, stdout=subprocess.DEVNULL)


def floor_once(src: Path, work: Path) -> dict[str, float]:
    """The plain tools: tar | zstd -1 to a file, sha256sum of it; zstd -d | tar -x."""
    archive, dest = work / "floor.tar.zst", work / "floor-out"
    dest.mkdir()
    began = time.perf_counter()
    _run(f"tar -C '{src}' -cf - . | zstd -1 -q -T1 -o '{archive}'; sha256sum '{archive}'")
    packed = time.perf_counter()
    _run(f"zstd -d -q -c '{archive}' | tar -C '{dest}' -xf -")
    done = time.perf_counter()
    size = archive.stat().st_size
    archive.unlink()
    shutil.rmtree(dest)
    return {"pack_s": packed - began, "extract_s": done - packed, "total_s": done - began, "archive_mb": size / 1e6}


def store_once(store: _Store, src: Path, work: Path) -> dict[str, float]:
    """Conveyor's hand-off: put (pack, digest, store) and extract (verified) the same tree."""
    dest = work / "store-out"
    dest.mkdir()
    began = time.perf_counter()
    ref = store.put("Handoff", src, ["**/*"])
    packed = time.perf_counter()
    store.extract(ref, dest)
    done = time.perf_counter()
    shutil.rmtree(dest)
    return {"pack_s": packed - began, "extract_s": done - packed, "total_s": done - began, "archive_mb": ref.size / 1e6}


def _same_tree(src: Path, dest: Path) -> None:
    """The extraction is checked once, outside the clock: the same names and bytes."""
    mine = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    theirs = sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())
    if mine != theirs or any((src / p).read_bytes() != (dest / p).read_bytes() for p in mine):
        raise RuntimeError(f"extracting the hand-off into {dest} did not give back the tree {src}")


# --- the S3 store on moto (reported, when it exists) ----------------------------------------------


@contextlib.contextmanager
def _moto_s3(work: Path) -> Iterator[Callable[[], _Store]]:
    """A moto server subprocess (bench.moto) and a factory of S3 stores on it."""
    import boto3

    from conveyor.settings import S3Location
    from conveyor.stores.s3 import S3ArtifactStore

    with moto_server(work):
        boto3.client("s3").create_bucket(Bucket="bench-handoff")
        tmp = work / "s3-tmp"
        tmp.mkdir(exist_ok=True)
        yield lambda: S3ArtifactStore(S3Location(bucket="bench-handoff", prefix="bench"), tmp_dir=tmp)


def _s3_available() -> bool:
    try:
        import conveyor.stores.s3  # noqa: F401
    except ImportError:
        return False
    return True


# --- the scenario --------------------------------------------------------------------------------


def _measure(
    total_bytes: int, files: int, repeats: int, warmup: bool, work: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    src = work / "tree"
    written = make_tree(src, total_bytes, files)
    log(f"handoff: {files} files, {written / 1e6:.0f} MB; {repeats} repetitions per side")
    raw: dict[str, dict[str, list[float]]] = {"conveyor": {}, "baseline": {}}
    rounds = 0

    def local_once() -> dict[str, float]:
        nonlocal rounds
        rounds += 1
        root = work / f"store-{rounds}"  # a fresh store each time: no deduplication shortcut
        try:
            return store_once(LocalArtifactStore(root), src, work)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    sides: dict[str, Callable[[], dict[str, float]]] = {
        "conveyor": local_once,
        "baseline": lambda: floor_once(src, work),
    }
    check = LocalArtifactStore(work / "store-check")
    ref = check.put("Handoff", src, ["**/*"])
    check.extract(ref, work / "check-out")
    _same_tree(src, work / "check-out")
    shutil.rmtree(work / "check-out")
    shutil.rmtree(work / "store-check")
    if warmup:
        for side in sides.values():
            side()
    for rep in range(repeats):
        for side in ("conveyor", "baseline") if rep % 2 == 0 else ("baseline", "conveyor"):
            for metric, value in sides[side]().items():
                raw[side].setdefault(metric, []).append(value)
    case = summarize_case(raw, "total_s", files=files, tree_mb=written / 1e6)
    c, b = case["conveyor"], case["baseline"]
    notes = [
        f"{files} files, {written / 1e6:.0f} MB: local store {c['total_s']['median']:.2f} s "
        f"(pack {c['pack_s']['median']:.2f} + extract {c['extract_s']['median']:.2f}) vs floor "
        f"{b['total_s']['median']:.2f} s (tar|zstd -1 + sha256sum {b['pack_s']['median']:.2f} + untar "
        f"{b['extract_s']['median']:.2f}): ratio {case['ratio']:.2f} (target <= 1.5); archive "
        f"{c['archive_mb']['median']:.0f} MB vs {b['archive_mb']['median']:.0f} MB"
    ]
    result: dict[str, Any] = {"cases": {f"{files}-files-local": case}, "ratio": case["ratio"], "notes": notes}
    if not _s3_available():
        notes.append("S3 store: conveyor.stores.s3 does not exist in this tree; not measured")
        return result
    s3_raw: dict[str, dict[str, list[float]]] = {"conveyor": {}, "baseline": raw["baseline"]}
    with _moto_s3(work) as make_store:
        for _ in range(repeats):
            sample = store_once(make_store(), src, work)
            for metric, value in sample.items():
                s3_raw["conveyor"].setdefault(metric, []).append(value)
    s3 = summarize_case(s3_raw, "total_s", files=files, tree_mb=written / 1e6, reported_only=True)
    result["cases"][f"{files}-files-s3-moto"] = s3
    sc = s3["conveyor"]
    notes.append(
        f"S3 store on moto (reported): {sc['total_s']['median']:.2f} s (pack+upload {sc['pack_s']['median']:.2f} + "
        f"download+extract {sc['extract_s']['median']:.2f}), ratio to the floor {s3['ratio']:.2f}"
    )
    return result


async def handoff(ctx: Any) -> dict[str, Any]:
    """The artifact hand-off against the plain-tools floor (see the module's docstring)."""
    files = ctx.scaled(2000, tiny=20)
    total = ctx.scaled(200_000_000, tiny=2_000_000)
    repeats = ctx.repeats(3)
    work = Path(tempfile.mkdtemp(prefix="handoff-", dir=ctx.data_dir))
    try:
        result = await asyncio.to_thread(_measure, total, files, repeats, not ctx.tiny, work, ctx.log)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["repeat"] = repeats
    return result
