"""The archive format of artifacts: deterministic zips, packed and unpacked fast and safely.

An artifact is a zip of the files an action declared (CodeBuild-style `files` globs). The archive is
built deterministically (sorted entries, fixed timestamps and permissions, only the executable bit
kept, a pinned deflate implementation), so identical content always has the identical `sha256:` digest
and is stored once.

Speed (issue 14): entries are compressed by a thread pool with ISA-L's deflate (`isal`, which releases
the GIL; about 3-4x the standard library's zlib at level 1) and written in order, so the bytes do not
depend on thread scheduling; an entry whose first block does not compress is STORED; the archive's
digest is computed as it is written (no second read). Extraction reads the archive once, in order,
hashing every byte as it goes, and inflates and writes entries in parallel.

Extraction never trusts the archive: entries that would land outside the destination (zip-slip),
symlinks that point outside it, and writes through symlinks are refused before anything is written.
With a digest, nothing of an archive that does not have it reaches the destination: entries go to a
staging directory beside `dest` (same filesystem), which replaces an empty `dest` by one rename (or whose
entries are moved into a non-empty one) only after the digest matched, and is removed otherwise.

`pack` and `unpack` are what the stores (local, S3) use; everything else here is how they work, with
the zip records themselves (writing, streaming, inflating) in conveyor.stores.zipio.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from conveyor.stores import zipio
from conveyor.stores.errors import ArtifactError, DigestMismatchError, UnsafeArchiveError
from conveyor.stores.zipio import Entry, HashingReader, HashingWriter

_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_MAX_LINK_HOPS = 40  # like the kernel's ELOOP limit


@dataclass(frozen=True)
class Packed:
    digest: str  # "sha256:<hex>" of the archive's bytes
    size: int


def pack(name: str, source_dir: Path, patterns: list[str], out: IO[bytes]) -> Packed:
    """Write the artifact `name` (the files under `source_dir` matching `patterns`) to `out` as a
    deterministic zip; its digest and size. `out` is only written to, in order (a file, a pipe)."""
    entries = collect_entries(name, source_dir, patterns)
    hashing = HashingWriter(out)
    zipio.write_zip(hashing, source_dir, entries)
    out.flush()
    return Packed(digest=f"sha256:{hashing.sha256.hexdigest()}", size=hashing.size)


def unpack(name: str, archive: Path, digest: str, dest: Path) -> None:
    """Extract the artifact `name` from `archive` into `dest`, refusing it unless its content has `digest`
    (checked while extracting; on a mismatch nothing of it is left in `dest`)."""
    try:
        safe_extract_zip(archive, dest, digest=digest)
    except DigestMismatchError:
        raise DigestMismatchError(f"artifact '{name}' is corrupt or was changed: digest mismatch") from None
    except ArtifactError as exc:
        # Refused before the digest was known: a changed archive is reported as such, not by its symptom.
        if f"sha256:{sha256_file(archive)}" != digest:
            raise DigestMismatchError(f"artifact '{name}' is corrupt or was changed: digest mismatch") from None
        raise type(exc)(f"artifact '{name}': {exc}") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(zipio.CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- Packing --------------------------------------------------------------------------------------


def collect_entries(name: str, source_dir: Path, patterns: list[str]) -> list[Entry]:
    """The files and symlinks under `source_dir` that match `patterns`, sorted by name."""
    candidates = _walk(source_dir)
    selected = sorted(p for p in candidates if any(_matches(pat, p) for pat in patterns))
    if not selected:
        raise ArtifactError(f"output artifact '{name}': no files matched {patterns!r}")
    return [Entry(p, _checked_link_target(name, source_dir, p)) for p in selected]


def matching_files(source_dir: Path, patterns: list[str]) -> list[str]:
    """Relative paths under `source_dir` matching any of the CodeBuild-style `patterns`, sorted (may be none)."""
    return sorted(p for p in _walk(source_dir) if any(_matches(pat, p) for pat in patterns))


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


# --- Extraction -----------------------------------------------------------------------------------


def safe_extract_zip(archive: Path, dest: Path, digest: str | None = None) -> None:
    """Extract `archive` into `dest`, refusing every entry that could write outside `dest`.

    All entries are validated before the first byte is written, so a refused archive leaves nothing
    behind outside `dest` (and nothing at all inside it). The archive is then read once, in order:
    hashed as it is read (with `digest`, a mismatch raises DigestMismatchError and leaves `dest` as it
    was), inflated and written by a thread pool into a staging directory beside `dest`, which takes
    its place only once the whole archive was read and checked.
    """
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    with archive.open("rb") as f:
        try:
            zf = zipfile.ZipFile(f)
            plan = _validate(zf, root)
        except ArtifactError:
            raise
        except (zipfile.BadZipFile, NotImplementedError, EOFError, ValueError, struct.error, zlib.error) as exc:
            raise ArtifactError(f"{archive} is not a valid zip archive: {exc}") from exc
        with zf:
            staging = tempfile.mkdtemp(
                prefix=f".{os.path.basename(root)}.", suffix=".extracting", dir=os.path.dirname(root)
            )
            try:
                if all(zipio.streamable(item.info) for item in plan):
                    f.seek(zf.start_dir)
                    directory = zipio.digest_of_rest(f)  # what the plan was made from: streamed, it must be the same
                    f.seek(0)
                    _stream_into(f, plan, directory, zf.start_dir, staging, digest)
                else:
                    _extract_with_zipfile(zf, archive, plan, staging, digest)
                _install(staging, root)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise


def _extract_with_zipfile(
    zf: zipfile.ZipFile, archive: Path, plan: list[_Planned], staging: str, digest: str | None
) -> None:
    """The slow path, for a zip made elsewhere with bzip2 or LZMA entries (Conveyor writes none): the digest
    is checked first, then each entry is read through zipfile (which stops at its declared size and checks
    its CRC), one at a time, into the staging directory; symlinks last."""
    if digest is not None and f"sha256:{sha256_file(archive)}" != digest:
        raise DigestMismatchError("digest mismatch")
    for item in sorted(plan, key=lambda p: ("dir", "file", "link").index(p.kind)):
        path = os.path.join(staging, item.rel)
        if item.kind == "dir":
            os.makedirs(path, exist_ok=True)
        elif item.kind == "link":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.symlink(item.link_target or "", path)
        else:
            try:
                with os.fdopen(zipio.create_file(item.info, path), "wb") as out, zf.open(item.info) as src:
                    shutil.copyfileobj(src, out, zipio.CHUNK)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, EOFError, ValueError) as exc:
                raise ArtifactError(f"entry '{item.info.filename}' cannot be read: {exc}") from exc


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


def _stream_into(
    f: BinaryIO, plan: list[_Planned], directory: bytes, start_dir: int, staging: str, digest: str | None
) -> None:
    """Read the archive once, in order, into `staging`: small entries are inflated and written by a
    pool (at most `zipio.IN_FLIGHT` compressed bytes ahead), large ones here as they stream; symlinks last,
    and only once every byte was read, checked against the plan and (with `digest`) hashed to it."""
    reader = HashingReader(f)
    for item in plan:
        if item.kind == "dir":
            os.makedirs(os.path.join(staging, item.rel), exist_ok=True)
    links: list[_Planned] = []
    pending: deque[tuple[Future[None], int]] = deque()
    in_flight = 0
    with ThreadPoolExecutor(max_workers=zipio.extract_workers(), thread_name_prefix="conveyor-extract") as pool:
        try:
            for item in sorted(plan, key=lambda p: p.info.header_offset):
                info = item.info
                zipio.check_entry(info, reader.position)
                reader.skip_to(info.header_offset)
                zipio.read_local_header(reader, info)
                if reader.position + info.compress_size > start_dir:
                    raise ArtifactError(f"entry '{info.filename}' overlaps the archive's central directory")
                if item.kind == "dir":
                    reader.skip_to(reader.position + info.compress_size)
                elif item.kind == "link":
                    target = zipio.inflate(info, reader.read_exact(info.compress_size))
                    if target.decode("utf-8", errors="replace") != item.link_target:
                        raise ArtifactError(f"entry '{info.filename}' changed while the archive was read")
                    links.append(item)
                elif info.compress_size > zipio.INLINE or info.file_size > 4 * zipio.INLINE:
                    zipio.write_streamed(reader, info, os.path.join(staging, item.rel))
                else:
                    data = reader.read_exact(info.compress_size)
                    future = pool.submit(zipio.write_whole, info, data, os.path.join(staging, item.rel))
                    pending.append((future, len(data)))
                    in_flight += len(data)
                    while in_flight > zipio.IN_FLIGHT:
                        done, size = pending.popleft()
                        done.result()
                        in_flight -= size
            reader.skip_to(start_dir)
            tail = reader.read_rest()
        except BaseException:
            for future, _ in pending:
                future.cancel()
            raise
        errors = [e for future, _ in pending if (e := future.exception()) is not None]
    if digest is not None and f"sha256:{reader.sha256.hexdigest()}" != digest:
        raise DigestMismatchError("digest mismatch")
    if errors:
        raise errors[0]
    if tail != directory:
        raise ArtifactError("the archive's central directory changed while it was read")
    for item in links:
        path = os.path.join(staging, item.rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(item.link_target or "", path)


def _install(staging: str, root: str) -> None:
    """Put the checked entries in place: an empty destination is replaced by the staging directory in
    one rename; into a non-empty one, entries are moved (renamed) one by one, directories merged."""
    try:
        with os.scandir(root) as entries:
            empty = next(entries, None) is None
        if empty:
            os.chmod(staging, stat.S_IMODE(os.stat(root).st_mode))
            os.rmdir(root)
            os.rename(staging, root)
            return
        for dirpath, dirnames, filenames in os.walk(staging):
            target_dir = os.path.join(root, os.path.relpath(dirpath, staging))
            for name in [*dirnames, *filenames]:
                source, target = os.path.join(dirpath, name), os.path.join(target_dir, name)
                if os.path.isdir(source) and not os.path.islink(source):
                    os.makedirs(target, exist_ok=True)
                else:
                    os.replace(source, target)
    except OSError as exc:
        raise ArtifactError(f"cannot extract into {root}: {exc}") from exc
    shutil.rmtree(staging, ignore_errors=True)


__all__ = [
    "ArtifactError",
    "DigestMismatchError",
    "Packed",
    "UnsafeArchiveError",
    "collect_entries",
    "pack",
    "safe_extract_zip",
    "sha256_file",
    "unpack",
]
