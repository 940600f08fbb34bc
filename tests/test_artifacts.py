"""The local artifact store: deterministic packing, digest checks, and refusal of unsafe archives."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from conveyor.stores.archive import safe_extract_zip
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
