"""The local artifact store: deterministic packing, digest checks, and refusal of unsafe archives."""

from __future__ import annotations

import hashlib
import io
import os
import random
import stat
import struct
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from conveyor.stores import zipio
from conveyor.stores.archive import Packed, pack, safe_extract_zip
from conveyor.stores.artifacts import ArtifactError, LocalArtifactStore, UnsafeArchiveError


def make_tree(root: Path) -> Path:
    (root / "dist").mkdir(parents=True)
    (root / "dist" / "app.whl").write_bytes(b"wheel")
    (root / "report.txt").write_text("ok\n")
    (root / "bin").mkdir()
    (root / "bin" / "run").write_text("#!/bin/sh\necho hi\n")
    (root / "bin" / "run").chmod(0o755)
    return root


def test_round_trip_keeps_content_exec_bit_and_inner_symlinks(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    os.symlink("dist/app.whl", src / "latest.whl")
    store = LocalArtifactStore(tmp_path / "store")

    ref = store.put("Build", src, ["**/*"])
    assert ref.digest.startswith("sha256:") and ref.location.startswith("file://")
    hex_digest = ref.digest.removeprefix("sha256:")
    assert (tmp_path / "store" / "sha256" / hex_digest[:2] / f"{hex_digest}.zip").stat().st_size == ref.size

    out = tmp_path / "out"
    store.extract(ref, out)
    assert (out / "dist" / "app.whl").read_bytes() == b"wheel"
    assert (out / "report.txt").read_text() == "ok\n"
    assert os.access(out / "bin" / "run", os.X_OK)
    assert not os.access(out / "report.txt", os.X_OK)
    assert os.readlink(out / "latest.whl") == "dist/app.whl"


def test_identical_content_gives_identical_digest(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    first = store.put("A", make_tree(tmp_path / "one"), ["**/*"])
    second_src = make_tree(tmp_path / "two")
    os.utime(second_src / "report.txt", (1_000_000_000, 1_000_000_000))  # timestamps don't count
    second = store.put("A", second_src, ["**/*"])
    assert first.digest == second.digest and first.location == second.location
    (second_src / "report.txt").write_text("changed\n")
    assert store.put("A", second_src, ["**/*"]).digest != first.digest


def test_globs_select_files(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put("Wheels", src, ["dist/*.whl", "report.txt"])
    with zipfile.ZipFile(store.path_for(ref.digest)) as zf:
        assert zf.namelist() == ["dist/app.whl", "report.txt"]
    with pytest.raises(ArtifactError, match=r"output artifact 'Out': no files matched \['nothing/\*'\]"):
        store.put("Out", src, ["nothing/*"])


def test_symlink_pointing_outside_source_is_refused(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    (tmp_path / "secret").write_text("worker secret")
    os.symlink(tmp_path / "secret", src / "leak")
    with pytest.raises(ArtifactError, match="symlink 'leak' points outside"):
        LocalArtifactStore(tmp_path / "store").put("Build", src, ["**/*"])


def test_digest_mismatch_and_missing_archive_are_refused(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put("Build", make_tree(tmp_path / "src"), ["**/*"])
    archive = store.path_for(ref.digest)
    archive.write_bytes(archive.read_bytes() + b"tampered")
    with pytest.raises(ArtifactError, match="artifact 'Build' is corrupt or was changed: digest mismatch"):
        store.extract(ref, tmp_path / "out")
    archive.unlink()
    with pytest.raises(ArtifactError, match="artifact 'Build' is missing from the store at"):
        store.extract(ref, tmp_path / "out")


def crafted_zip(path: Path, entries: list[tuple[str, bytes, bool]]) -> Path:
    """A zip with arbitrary entry names; (name, content, is_symlink)."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, content, is_link in entries:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = ((stat.S_IFLNK | 0o777) if is_link else (stat.S_IFREG | 0o644)) << 16
            zf.writestr(info, content)
    return path


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("ok.txt", b"x", False), ("../escaped.txt", b"x", False)], r"'\.\./escaped.txt' contains a '\.\.'"),
        ([("ok.txt", b"x", False), ("a/../../escaped.txt", b"x", False)], "contains a '..'"),
        ([("ok.txt", b"x", False), ("/tmp/escaped.txt", b"x", False)], "absolute path"),
        ([("ok.txt", b"x", False), ("C:/escaped.txt", b"x", False)], "absolute path"),
        ([("ok.txt", b"x", False), ("link", b"../outside", True)], "symlink entry 'link' points outside"),
        ([("ok.txt", b"x", False), ("link", b"/etc", True)], "symlink entry 'link' points outside"),
        ([("a", b"b/..", True), ("b", b"c/d/../../..", True)], "points outside"),
        ([("dir", b".", True), ("dir/escaped.txt", b"x", False)], "written through the symlink 'dir'"),
    ],
)
def test_unsafe_archives_are_refused_before_anything_is_written(
    tmp_path: Path, entries: list[tuple[str, bytes, bool]], message: str
) -> None:
    archive = crafted_zip(tmp_path / "evil.zip", entries)
    dest = tmp_path / "box" / "dest"
    with pytest.raises(UnsafeArchiveError, match=message):
        safe_extract_zip(archive, dest)
    assert list(dest.iterdir()) == []  # validated first: not even the harmless entries
    assert sorted(p.name for p in tmp_path.iterdir()) == ["box", "evil.zip"]
    assert sorted(p.name for p in (tmp_path / "box").iterdir()) == ["dest"]


def test_symlink_inside_destination_is_extracted(tmp_path: Path) -> None:
    archive = crafted_zip(
        tmp_path / "ok.zip",
        [("lib/real.txt", b"content", False), ("lib/alias.txt", b"real.txt", True), ("top", b"lib", True)],
    )
    dest = tmp_path / "dest"
    safe_extract_zip(archive, dest)
    assert (dest / "lib" / "alias.txt").read_bytes() == b"content"
    assert (dest / "top" / "real.txt").read_bytes() == b"content"
    assert os.path.islink(dest / "top")


# --- the fast format (issue 14): still standard, deterministic zips; verified while extracted ---------


def mixed_tree(root: Path, files: int = 12, size: int = 40_000) -> Path:
    """Alternately incompressible (random) and text-like files, in two directories."""
    rng = random.Random(14)
    for n in range(files):
        folder = root / f"d{n % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        if n % 2:
            (folder / f"blob{n}.bin").write_bytes(rng.randbytes(size + n))
        else:
            words = [rng.choice(["alpha", "beta", "gamma", "delta", "pipeline", "stage"]) for _ in range(size // 6)]
            (folder / f"text{n}.txt").write_text(" ".join(words))
    return root


def packed_bytes(src: Path) -> tuple[bytes, Packed]:
    out = io.BytesIO()
    packed = pack("Mixed", src, ["**/*"], out)
    return out.getvalue(), packed


class WriteOnly(io.RawIOBase):
    """A pipe-like sink: no seek, no read, so the digest can only come from hashing while writing."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.data += bytes(b)
        return len(b)


def test_archive_is_a_standard_zip_that_unzip_and_zipfile_read(tmp_path: Path) -> None:
    src = mixed_tree(tmp_path / "src")
    (src / "d0" / "run.sh").write_text("#!/bin/sh\n")
    (src / "d0" / "run.sh").chmod(0o755)
    (src / "empty").write_bytes(b"")
    (src / "naïve.txt").write_text("utf-8 name")
    archive = tmp_path / "a.zip"
    archive.write_bytes(packed_bytes(src)[0])
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None
        assert zf.read("d1/blob1.bin") == (src / "d1" / "blob1.bin").read_bytes()
        assert "naïve.txt" in zf.namelist()
        assert (zf.getinfo("d0/run.sh").external_attr >> 16) & 0o777 == 0o755
        assert zf.getinfo("d0/run.sh").date_time == (1980, 1, 1, 0, 0, 0)
    tested = subprocess.run(["unzip", "-t", str(archive)], capture_output=True, text=True)
    assert tested.returncode == 0 and "No errors detected" in tested.stdout, tested.stdout + tested.stderr


def test_incompressible_entries_are_stored_and_text_is_deflated(tmp_path: Path) -> None:
    src = mixed_tree(tmp_path / "src")
    with zipfile.ZipFile(io.BytesIO(packed_bytes(src)[0])) as zf:
        methods = {info.filename: info.compress_type for info in zf.infolist()}
    assert methods["d1/blob1.bin"] == zipfile.ZIP_STORED
    assert methods["d0/text0.txt"] == zipfile.ZIP_DEFLATED


def test_the_bytes_do_not_depend_on_thread_scheduling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = mixed_tree(tmp_path / "src", files=40)
    first, _ = packed_bytes(src)
    monkeypatch.setattr(zipio, "workers", lambda: 1)  # strictly sequential
    assert packed_bytes(src)[0] == first
    monkeypatch.setattr(zipio, "workers", lambda: 8)
    monkeypatch.setattr(zipio, "IN_FLIGHT", 1)  # one entry ahead of the writer at most
    assert packed_bytes(src)[0] == first


def test_the_digest_is_hashed_while_writing(tmp_path: Path) -> None:
    sink = WriteOnly()
    packed = pack("Mixed", mixed_tree(tmp_path / "src"), ["**/*"], sink)  # type: ignore[arg-type]
    assert packed.digest == f"sha256:{hashlib.sha256(sink.data).hexdigest()}"
    assert packed.size == len(sink.data)


def test_large_entries_spill_stream_and_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The paths for entries larger than memory buffers, exercised with small thresholds."""
    for name, value in {"CHUNK": 4096, "_IN_MEMORY": 10_000, "INLINE": 5_000, "_TRIAL": 1024, "_PIECE": 3000}.items():
        monkeypatch.setattr(zipio, name, value)
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(3)
    (src / "big.txt").write_bytes(b"conveyor stage action\n" * 4000)  # deflated, spilled, streamed out
    (src / "big.bin").write_bytes(rng.randbytes(50_000))  # stored, read again when written
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put("Big", src, ["**/*"])
    with zipfile.ZipFile(store.path_for(ref.digest)) as zf:
        assert zf.testzip() is None
        assert zf.getinfo("big.bin").compress_type == zipfile.ZIP_STORED
    store.extract(ref, tmp_path / "out")
    for name in ("big.txt", "big.bin"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()


def test_zip64_records_are_written_where_values_do_not_fit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zipio, "_ZIP64_LIMIT", 1000)  # as if every size and offset were over 4 GiB
    monkeypatch.setattr(zipio, "_ZIP64_COUNT_LIMIT", 3)
    src = mixed_tree(tmp_path / "src", files=6, size=2000)
    archive = tmp_path / "a.zip"
    archive.write_bytes(packed_bytes(src)[0])
    with zipfile.ZipFile(archive) as zf:
        assert zf.testzip() is None and len(zf.infolist()) == 6
        assert zf.read("d1/blob5.bin") == (src / "d1" / "blob5.bin").read_bytes()
    tested = subprocess.run(["unzip", "-t", str(archive)], capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    safe_extract_zip(archive, tmp_path / "out")
    assert (tmp_path / "out" / "d0" / "text4.txt").read_bytes() == (src / "d0" / "text4.txt").read_bytes()


def test_a_corrupt_archive_leaves_nothing_in_dest(tmp_path: Path) -> None:
    """Verified while extracting: a byte changed inside an entry (the zip still parses) is caught by the digest,
    and neither the destination nor its parent keeps anything of it (the staging directory is removed)."""
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put("Mixed", mixed_tree(tmp_path / "src"), ["**/*"])
    archive = store.path_for(ref.digest)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("d1/blob3.bin")  # stored: a flipped byte keeps the archive readable
    data[info.header_offset + 30 + len(info.filename) + 100] ^= 0xFF
    archive.write_bytes(bytes(data))
    box = tmp_path / "box"
    (box / "dest").mkdir(parents=True)
    (box / "dest" / "mine.txt").write_text("kept")
    with pytest.raises(ArtifactError, match="artifact 'Mixed' is corrupt or was changed: digest mismatch"):
        store.extract(ref, box / "dest")
    assert sorted(p.name for p in box.iterdir()) == ["dest"]
    assert sorted(p.name for p in (box / "dest").iterdir()) == ["mine.txt"]
    with pytest.raises(ArtifactError, match="d1/blob3.bin' is corrupt: size or CRC mismatch"):
        safe_extract_zip(archive, box / "other")  # without a digest, the entry's CRC still catches it
    assert list((box / "other").iterdir()) == []


def test_extracting_into_a_non_empty_directory_merges(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path / "store")
    ref = store.put("Build", make_tree(tmp_path / "src"), ["**/*"])
    dest = tmp_path / "dest"
    (dest / "dist").mkdir(parents=True)
    (dest / "dist" / "old.whl").write_bytes(b"old")
    (dest / "report.txt").write_text("stale\n")
    store.extract(ref, dest)
    assert (dest / "dist" / "old.whl").read_bytes() == b"old"
    assert (dest / "dist" / "app.whl").read_bytes() == b"wheel"
    assert (dest / "report.txt").read_text() == "ok\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "src", "store"]


def test_an_entry_larger_than_it_declares_is_refused(tmp_path: Path) -> None:
    """A zip bomb's lie (a small declared size, a large content) stops at the declared size."""
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros", b"\0" * 100_000)
    data = bytearray(archive.read_bytes())
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, central + 24, 10)  # the central directory's uncompressed size
    archive.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="'zeros' is corrupt"):
        safe_extract_zip(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_zips_made_elsewhere_are_read(tmp_path: Path) -> None:
    """An S3 source's zip is stored as it is: data descriptors and directory entries (zipfile writing to a
    pipe) take the fast path; bzip2 and LZMA entries the slow one, digest checked first."""
    sink = WriteOnly()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as zf:  # type: ignore[arg-type]
        zf.mkdir("docs")
        zf.writestr("docs/readme.md", "read me\n" * 100)
        with zf.open("app/main.py", "w") as entry:
            entry.write(b"print('hi')\n" * 100)
    piped = tmp_path / "piped.zip"
    piped.write_bytes(bytes(sink.data))
    with zipfile.ZipFile(piped) as zf:
        assert all(info.flag_bits & 0x08 for info in zf.infolist() if not info.is_dir())  # data descriptors
    safe_extract_zip(piped, tmp_path / "piped", digest=f"sha256:{hashlib.sha256(sink.data).hexdigest()}")
    assert (tmp_path / "piped" / "app" / "main.py").read_bytes() == b"print('hi')\n" * 100
    assert (tmp_path / "piped" / "docs").is_dir()

    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("a.txt", "bzip2 " * 1000, compress_type=zipfile.ZIP_BZIP2)
        zf.writestr("b/c.txt", "lzma " * 1000, compress_type=zipfile.ZIP_LZMA)
    digest = f"sha256:{hashlib.sha256(other.read_bytes()).hexdigest()}"
    with pytest.raises(ArtifactError, match="digest mismatch"):
        safe_extract_zip(other, tmp_path / "refused", digest="sha256:" + "0" * 64)
    assert list((tmp_path / "refused").iterdir()) == []
    safe_extract_zip(other, tmp_path / "other", digest=digest)
    assert (tmp_path / "other" / "a.txt").read_text() == "bzip2 " * 1000
    assert (tmp_path / "other" / "b" / "c.txt").read_text() == "lzma " * 1000
