"""The archive format of artifacts: deterministic zips, packed and unpacked safely.

An artifact is a zip of the files an action declared (CodeBuild-style `files` globs). The archive is
built deterministically (sorted entries, fixed timestamps and permissions, only the executable bit
kept), so identical content always has the identical `sha256:` digest and is stored once.

Extraction never trusts the archive: entries that would land outside the destination (zip-slip),
symlinks that point outside it, and writes through symlinks are refused before anything is written.

`pack` and `unpack` are what the stores (local, S3) use; everything else here is how they work.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
_FILE_MODE = 0o644
_EXEC_MODE = 0o755
_LINK_MODE = 0o777
_CHUNK = 1024 * 1024
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_MAX_LINK_HOPS = 40  # like the kernel's ELOOP limit


class ArtifactError(ValueError):
    """An artifact cannot be built, found or read; the message names the artifact."""


class UnsafeArchiveError(ArtifactError):
    """An archive entry would write outside the extraction directory."""


@dataclass(frozen=True)
class Packed:
    digest: str  # "sha256:<hex>" of the archive's bytes
    size: int


def pack(name: str, source_dir: Path, patterns: list[str], out: IO[bytes]) -> Packed:
    """Write the artifact `name` (the files under `source_dir` matching `patterns`) to `out` as a
    deterministic zip; its digest and size. `out` must be a regular file opened for writing."""
    entries = collect_entries(name, source_dir, patterns)
    start = out.tell()
    write_deterministic_zip(out, source_dir, entries)
    out.flush()
    size = out.tell() - start
    out.seek(start)
    digest = hashlib.sha256()
    while chunk := out.read(_CHUNK):
        digest.update(chunk)
    return Packed(digest=f"sha256:{digest.hexdigest()}", size=size)


def unpack(name: str, archive: Path, digest: str, dest: Path) -> None:
    """Extract the artifact `name` from `archive` into `dest`, refusing it unless its content has `digest`."""
    if f"sha256:{sha256_file(archive)}" != digest:
        raise ArtifactError(f"artifact '{name}' is corrupt or was changed: digest mismatch")
    try:
        safe_extract_zip(archive, dest)
    except UnsafeArchiveError as exc:
        raise UnsafeArchiveError(f"artifact '{name}': {exc}") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- Packing --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    arcname: str  # posix path relative to the source directory
    link_target: str | None  # set for symlinks


def collect_entries(name: str, source_dir: Path, patterns: list[str]) -> list[_Entry]:
    """The files and symlinks under `source_dir` that match `patterns`, sorted by name."""
    candidates = _walk(source_dir)
    selected = sorted(p for p in candidates if any(_matches(pat, p) for pat in patterns))
    if not selected:
        raise ArtifactError(f"output artifact '{name}': no files matched {patterns!r}")
    return [_Entry(p, _checked_link_target(name, source_dir, p)) for p in selected]


def _walk(source_dir: Path) -> list[str]:
    """Relative paths of regular files and symlinks; symlinked directories are not descended."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(source_dir):
        rel_dir = PurePosixPath(Path(dirpath).relative_to(source_dir).as_posix())
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                found.append(str(rel_dir / d))
        for f in filenames:
            full = os.path.join(dirpath, f)
            if os.path.islink(full) or os.path.isfile(full):  # skip sockets, fifos, devices
                found.append(str(rel_dir / f))
    return found


def _matches(pattern: str, rel_path: str) -> bool:
    """CodeBuild-style glob: `*` stays inside one directory, `**` spans any number of them.

    A pattern without wildcards that names a directory selects everything under it.
    """
    pat = [p for p in pattern.strip().removeprefix("./").split("/") if p not in ("", ".")]
    parts = rel_path.split("/")
    if _match_parts(pat, parts):
        return True
    is_literal = not any(c in pattern for c in "*?[")
    return is_literal and len(pat) < len(parts) and parts[: len(pat)] == pat


def _match_parts(pat: list[str], parts: list[str]) -> bool:
    if not pat:
        return not parts
    if pat[0] == "**":
        return any(_match_parts(pat[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pat[0]) and _match_parts(pat[1:], parts[1:])


def _checked_link_target(name: str, source_dir: Path, rel_path: str) -> str | None:
    """The symlink's target, made relative; refused when it leaves the source directory."""
    full = source_dir / rel_path
    if not full.is_symlink():
        return None
    target = os.readlink(full)
    root = os.path.realpath(source_dir)
    parent = os.path.realpath(full.parent)
    lexical = os.path.normpath(os.path.join(parent, target))  # where extraction will point it
    resolved = os.path.realpath(full)  # where it points now, through any other links
    if not (_within(root, lexical) and _within(root, resolved)):
        raise ArtifactError(
            f"output artifact '{name}': symlink '{rel_path}' points outside the source directory "
            f"({target}); it would leak files from the worker"
        )
    # Absolute targets inside the tree are made relative so the link still works where it is extracted.
    return os.path.relpath(lexical, parent) if os.path.isabs(target) else target


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def write_deterministic_zip(out: IO[bytes], source_dir: Path, entries: list[_Entry]) -> None:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for entry in entries:
            info = zipfile.ZipInfo(entry.arcname, date_time=_ZIP_EPOCH)
            info.create_system = 3  # Unix, so external_attr carries the mode
            info.compress_type = zipfile.ZIP_DEFLATED
            if entry.link_target is not None:
                info.external_attr = (stat.S_IFLNK | _LINK_MODE) << 16
                zf.writestr(info, entry.link_target)
                continue
            full = source_dir / entry.arcname
            st = full.stat()
            mode = _EXEC_MODE if st.st_mode & 0o111 else _FILE_MODE
            info.external_attr = (stat.S_IFREG | mode) << 16
            info.file_size = st.st_size  # lets zipfile decide on zip64 up front
            with full.open("rb") as src, zf.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


# --- Extraction -----------------------------------------------------------------------------------


def safe_extract_zip(archive: Path, dest: Path) -> None:
    """Extract `archive` into `dest`, refusing every entry that could write outside `dest`.

    All entries are validated before the first byte is written, so a refused archive leaves
    nothing behind outside `dest` (and nothing at all inside it).
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            plan = _validate(zf, root)
            _extract_planned(zf, root, plan)
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"{archive} is not a valid zip archive: {exc}") from exc


@dataclass(frozen=True)
class _Planned:
    info: zipfile.ZipInfo
    rel: str  # normalised posix path relative to dest
    kind: str  # "dir" | "file" | "link"
    link_target: str | None = None


def _validate(zf: zipfile.ZipFile, root: str) -> list[_Planned]:
    plan: list[_Planned] = []
    links: dict[str, str] = {}
    files: set[str] = set()
    seen: set[str] = set()
    for info in zf.infolist():
        rel = _safe_relative_name(info.filename)
        if rel in seen and not info.is_dir():
            raise UnsafeArchiveError(f"entry '{info.filename}' appears twice in the archive")
        seen.add(rel)
        for ancestor in _ancestors(rel):
            if ancestor in links or os.path.islink(os.path.join(root, ancestor)):
                raise UnsafeArchiveError(f"entry '{info.filename}' would be written through the symlink '{ancestor}'")
            if ancestor in files:
                raise UnsafeArchiveError(f"entry '{info.filename}' is inside '{ancestor}', which is a file")
        if info.is_dir():
            plan.append(_Planned(info, rel, "dir"))
        elif stat.S_ISLNK(info.external_attr >> 16):
            target = zf.read(info).decode("utf-8", errors="strict")
            links[rel] = target
            plan.append(_Planned(info, rel, "link", target))
        else:
            files.add(rel)
            plan.append(_Planned(info, rel, "file"))
    for rel, target in links.items():
        if os.path.isabs(target) or _DRIVE_RE.match(target) or _resolve_virtual(rel, links, root) is None:
            raise UnsafeArchiveError(f"symlink entry '{rel}' points outside the destination ({target})")
    return plan


def _safe_relative_name(name: str) -> str:
    """The entry name as a relative posix path, or UnsafeArchiveError."""
    if name.startswith(("/", "\\")) or _DRIVE_RE.match(name) or "\x00" in name:
        raise UnsafeArchiveError(f"entry '{name}' has an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"entry '{name}' contains a '..' component")
    if not parts:
        raise UnsafeArchiveError(f"entry '{name}' has an empty path")
    return "/".join(parts)


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def _resolve_virtual(rel: str, links: dict[str, str], root: str) -> list[str] | None:
    """Follow `rel` through the archive's (and dest's existing) symlinks; None if it leaves dest.

    Done on paper, before anything exists on disk, so a chain of individually harmless links
    (`a -> b/..`, `b -> x/y`) cannot add up to an escape.
    """
    pending = rel.split("/")
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        candidate = "/".join([*resolved, part])
        target = links.get(candidate)
        if target is None and os.path.islink(os.path.join(root, candidate)):
            target = os.readlink(os.path.join(root, candidate))
        if target is None:
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS or os.path.isabs(target) or _DRIVE_RE.match(target):
            return None
        pending = target.replace("\\", "/").split("/") + pending
    return resolved


def _extract_planned(zf: zipfile.ZipFile, root: str, plan: list[_Planned]) -> None:
    # Symlinks last: no file of this archive is ever written after (and so through) one of them.
    order = {"dir": 0, "file": 1, "link": 2}
    for item in sorted(plan, key=lambda p: order[p.kind]):
        path = os.path.join(root, item.rel)
        if item.kind == "dir":
            os.makedirs(path, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path) and (item.kind == "link" or os.path.islink(path)):
            os.unlink(path)
        if item.kind == "link":
            os.symlink(item.link_target or "", path)
            continue
        mode = _EXEC_MODE if (item.info.external_attr >> 16) & 0o111 else _FILE_MODE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as dst, zf.open(item.info) as src:
            shutil.copyfileobj(src, dst, _CHUNK)
        os.chmod(path, mode)
