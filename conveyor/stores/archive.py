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

`pack` and `unpack` are what the stores (local, S3) use; everything else here is how they work.
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
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, cast

from isal import isal_zlib

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
_DOS_DATE = ((_ZIP_EPOCH[0] - 1980) << 9) | (_ZIP_EPOCH[1] << 5) | _ZIP_EPOCH[2]
_DOS_TIME = 0
_FILE_MODE = 0o644
_EXEC_MODE = 0o755
_LINK_MODE = 0o777
_CHUNK = 1024 * 1024
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_MAX_LINK_HOPS = 40  # like the kernel's ELOOP limit
_ISAL_ERROR = cast(type[Exception], isal_zlib.error)  # its stubs declare an instance, it is a class

# Compression. Level 1 of ISA-L: measured on the hand-off bench (text-like files deflate to ~0.45 at
# ~170 MB/s per core here, vs ~46 MB/s for zlib level 1 at the same ratio); level 2 was no better.
_LEVEL = 1
_TRIAL = 16 * 1024  # an entry's first bytes, compressed on their own to decide STORED or DEFLATED
_STORE_RATIO = 0.95  # deflated / raw above this: the entry is STORED (random data, already compressed)
_IN_MEMORY = 16 * 1024 * 1024  # an entry's output larger than this spills to a temporary file
_IN_FLIGHT = 64 * 1024 * 1024  # raw bytes submitted to the pool and not yet written (memory bound)
_PIECE = 4 * 1024 * 1024  # extraction: inflated at most this much at a time
_INLINE = 8 * 1024 * 1024  # extraction: entries larger than this (compressed) stream in the reading thread

# Zip records (APPNOTE 6.3). Zip64 extensions are written only where a value does not fit.
_ZIP64_LIMIT = 0xFFFFFFFF  # sizes and offsets from this one on go in zip64 records
_ZIP64_COUNT_LIMIT = 0xFFFF  # entry counts from this one on too
_MAX32, _MAX16 = 0xFFFFFFFF, 0xFFFF  # what the 32- and 16-bit fields then hold: "see the zip64 record"
_VERSION_DEFAULT = 20
_VERSION_ZIP64 = 45
_MADE_BY_UNIX = 3 << 8
_FLAG_UTF8 = 0x800
_FLAG_ENCRYPTED = 0x1
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_END64_LOCATOR = struct.Struct("<IIQI")
_LOCAL_SIG = 0x04034B50
_CENTRAL_SIG = 0x02014B50
_END_SIG = 0x06054B50
_END64_SIG = 0x06064B50
_END64_LOCATOR_SIG = 0x07064B50


class ArtifactError(ValueError):
    """An artifact cannot be built, found or read; the message names the artifact."""


class UnsafeArchiveError(ArtifactError):
    """An archive entry would write outside the extraction directory."""


class DigestMismatchError(ArtifactError):
    """The archive's bytes do not have the digest it was asked to have."""


@dataclass(frozen=True)
class Packed:
    digest: str  # "sha256:<hex>" of the archive's bytes
    size: int


def pack(name: str, source_dir: Path, patterns: list[str], out: IO[bytes]) -> Packed:
    """Write the artifact `name` (the files under `source_dir` matching `patterns`) to `out` as a
    deterministic zip; its digest and size. `out` is only written to, in order (a file, a pipe)."""
    entries = collect_entries(name, source_dir, patterns)
    hashing = _HashingWriter(out)
    write_deterministic_zip(hashing, source_dir, entries)
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
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))


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


# --- Writing the zip: entries encoded in parallel, written in order ---------------------------------


class _HashingWriter:
    """Writes through to `out`, hashing and counting: the archive's digest without reading it again."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.sha256.update(data)
        self.out.write(data)
        self.size += len(data)


@dataclass
class _Body:
    """One entry's data as it goes into the archive: method, CRC, sizes, and the bytes: in memory
    (`chunks`), spilled to a temporary file (`spill`), or for a large STORED file read again from
    `source` at write time (and checked against the CRC, so a file changed meanwhile is refused)."""

    method: int
    crc: int
    raw_size: int
    size: int
    external_attr: int
    chunks: list[bytes] = field(default_factory=list)
    spill: IO[bytes] | None = None
    source: Path | None = None

    def write_to(self, out: _HashingWriter) -> None:
        for chunk in self.chunks:
            out.write(chunk)
        if self.spill is not None:
            self.spill.seek(0)
            while chunk := self.spill.read(_CHUNK):
                out.write(chunk)
        if self.source is not None:
            crc, size = 0, 0
            with _open_regular(self.source) as src:
                while chunk := src.read(_CHUNK):
                    crc = isal_zlib.crc32(chunk, crc)
                    size += len(chunk)
                    out.write(chunk)
            if (crc, size) != (self.crc, self.raw_size):
                raise ArtifactError(f"'{self.source}' changed while it was being packed")

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()


@dataclass(frozen=True)
class _Written:
    """What the central directory says of an entry written at `offset`."""

    name: bytes
    flags: int
    body: _Body
    offset: int


def _open_regular(path: Path) -> BinaryIO:
    """Opened without following a symlink: what was collected as a file is read as one."""
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")


def _compresses(sample: bytes) -> bool:
    """A quick trial: does the start of an entry deflate below the STORED threshold?"""
    return len(isal_zlib.compress(sample, _LEVEL, -15)) <= _STORE_RATIO * len(sample)


def _encode_link(target: str) -> _Body:
    data = target.encode()
    attr = (stat.S_IFLNK | _LINK_MODE) << 16
    return _Body(zipfile.ZIP_STORED, isal_zlib.crc32(data), len(data), len(data), attr, [data])


def _encode_file(path: Path) -> _Body:
    """Read and (in a pool thread: ISA-L releases the GIL) compress one file."""
    with _open_regular(path) as src:
        mode = _EXEC_MODE if os.fstat(src.fileno()).st_mode & 0o111 else _FILE_MODE
        attr = (stat.S_IFREG | mode) << 16
        first = src.read(_CHUNK)
        if len(first) < _CHUNK:  # the whole file: one piece
            return _encode_small(first, attr)
        if not _compresses(first[:_TRIAL]):
            return _encode_stored(path, src, first, attr)
        compressor = isal_zlib.compressobj(_LEVEL, isal_zlib.DEFLATED, -15)
        spill = tempfile.SpooledTemporaryFile(max_size=_IN_MEMORY)  # noqa: SIM115 - closed by _Body.close
        crc, raw_size, size = 0, 0, 0
        chunk = first
        while chunk:
            crc = isal_zlib.crc32(chunk, crc)
            raw_size += len(chunk)
            size += spill.write(compressor.compress(chunk))
            chunk = src.read(_CHUNK)
        size += spill.write(compressor.flush())
        return _Body(zipfile.ZIP_DEFLATED, crc, raw_size, size, attr, spill=spill)


def _encode_small(data: bytes, attr: int) -> _Body:
    crc = isal_zlib.crc32(data)
    if len(data) >= 2 * _TRIAL and not _compresses(data[:_TRIAL]):
        return _Body(zipfile.ZIP_STORED, crc, len(data), len(data), attr, [data])
    deflated = isal_zlib.compress(data, _LEVEL, -15) if data else b""
    if not data or len(deflated) > _STORE_RATIO * len(data):
        return _Body(zipfile.ZIP_STORED, crc, len(data), len(data), attr, [data])
    return _Body(zipfile.ZIP_DEFLATED, crc, len(data), len(deflated), attr, [deflated])


def _encode_stored(path: Path, src: BinaryIO, first: bytes, attr: int) -> _Body:
    """A large incompressible file: its CRC now; its bytes kept if small enough, else read again when written."""
    chunks: list[bytes] | None = [first]
    crc, size = isal_zlib.crc32(first), len(first)
    while chunk := src.read(_CHUNK):
        crc = isal_zlib.crc32(chunk, crc)
        size += len(chunk)
        if chunks is not None:
            chunks.append(chunk)
            if size > _IN_MEMORY:
                chunks = None
    if chunks is None:
        return _Body(zipfile.ZIP_STORED, crc, size, size, attr, source=path)
    return _Body(zipfile.ZIP_STORED, crc, size, size, attr, chunks)


def _encode(source_dir: Path, entry: _Entry) -> _Body:
    if entry.link_target is not None:
        return _encode_link(entry.link_target)
    return _encode_file(source_dir / entry.arcname)


def write_deterministic_zip(out: _HashingWriter, source_dir: Path, entries: list[_Entry]) -> None:
    """Entries are encoded by a thread pool, at most `_IN_FLIGHT` raw bytes ahead of the writer, and
    written in their sorted order: the same tree gives the same bytes, however the threads ran."""
    written: list[_Written] = []
    pending: deque[tuple[_Entry, Future[_Body], int]] = deque()
    in_flight = 0
    todo = iter(entries)
    with ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="conveyor-pack") as pool:
        try:
            while True:
                while not pending or (in_flight < _IN_FLIGHT and len(pending) < 4 * _IN_FLIGHT // _CHUNK):
                    entry = next(todo, None)
                    if entry is None:
                        break
                    cost = max(1, (source_dir / entry.arcname).lstat().st_size)
                    pending.append((entry, pool.submit(_encode, source_dir, entry), cost))
                    in_flight += cost
                if not pending:
                    break
                entry, future, cost = pending.popleft()
                in_flight -= cost
                body = future.result()
                try:
                    written.append(_write_entry(out, entry.arcname, body))
                finally:
                    body.close()
        finally:
            for _, future, _ in pending:
                if not future.cancel() and future.done() and future.exception() is None:
                    future.result().close()
    _write_central_directory(out, written)


def _write_entry(out: _HashingWriter, arcname: str, body: _Body) -> _Written:
    name = arcname.encode("utf-8")
    flags = 0 if arcname.isascii() else _FLAG_UTF8
    offset = out.size
    zip64 = body.size >= _ZIP64_LIMIT or body.raw_size >= _ZIP64_LIMIT
    extra = struct.pack("<HHQQ", 1, 16, body.raw_size, body.size) if zip64 else b""
    header = _LOCAL.pack(
        _LOCAL_SIG,
        _VERSION_ZIP64 if zip64 else _VERSION_DEFAULT,
        flags,
        body.method,
        _DOS_TIME,
        _DOS_DATE,
        body.crc,
        _MAX32 if zip64 else body.size,
        _MAX32 if zip64 else body.raw_size,
        len(name),
        len(extra),
    )
    out.write(header + name + extra)
    body.write_to(out)
    return _Written(name, flags, body, offset)


def _central_record(entry: _Written) -> bytes:
    body = entry.body
    raw_size, size, offset = body.raw_size, body.size, entry.offset
    wide: list[int] = []  # the zip64 extra holds, in this order, the values that do not fit
    if raw_size >= _ZIP64_LIMIT:
        wide.append(raw_size)
        raw_size = _MAX32
    if size >= _ZIP64_LIMIT:
        wide.append(size)
        size = _MAX32
    if offset >= _ZIP64_LIMIT:
        wide.append(offset)
        offset = _MAX32
    extra = struct.pack(f"<HH{len(wide)}Q", 1, 8 * len(wide), *wide) if wide else b""
    version = _VERSION_ZIP64 if wide else _VERSION_DEFAULT
    header = _CENTRAL.pack(
        _CENTRAL_SIG,
        _MADE_BY_UNIX | version,
        version,
        entry.flags,
        body.method,
        _DOS_TIME,
        _DOS_DATE,
        body.crc,
        size,
        raw_size,
        len(entry.name),
        len(extra),
        0,  # comment length
        0,  # disk number
        0,  # internal attributes
        body.external_attr,
        offset,
    )
    return header + entry.name + extra


def _write_central_directory(out: _HashingWriter, written: list[_Written]) -> None:
    start = out.size
    records = [_central_record(entry) for entry in written]
    for n in range(0, len(records), 1024):
        out.write(b"".join(records[n : n + 1024]))
    size, count = out.size - start, len(written)
    if count >= _ZIP64_COUNT_LIMIT or size >= _ZIP64_LIMIT or start >= _ZIP64_LIMIT:
        end64 = out.size
        version = _VERSION_ZIP64
        out.write(_END64.pack(_END64_SIG, 44, _MADE_BY_UNIX | version, version, 0, 0, count, count, size, start))
        out.write(_END64_LOCATOR.pack(_END64_LOCATOR_SIG, 0, end64, 1))
        count, size, start = _MAX16, _MAX32, _MAX32
    out.write(_END.pack(_END_SIG, 0, 0, count, count, size, start, 0))


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
            with zipfile.ZipFile(f) as zf:
                plan = _validate(zf, root)
                start_dir = zf.start_dir
        except ArtifactError:
            raise
        except (
            zipfile.BadZipFile,
            NotImplementedError,
            EOFError,
            ValueError,
            struct.error,
            zlib.error,
            _ISAL_ERROR,
        ) as exc:
            raise ArtifactError(f"{archive} is not a valid zip archive: {exc}") from exc
        f.seek(start_dir)
        directory = _digest_of_rest(f)  # what the plan was made from; the streamed copy must be the same bytes
        f.seek(0)
        staging = tempfile.mkdtemp(
            prefix=f".{os.path.basename(root)}.", suffix=".extracting", dir=os.path.dirname(root)
        )
        try:
            _stream_into(f, plan, directory, start_dir, staging, digest)
            _install(staging, root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


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


class _HashingReader:
    """Reads the archive in order, hashing every byte: the digest is known when the last byte was read."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha256 = hashlib.sha256()
        self.position = 0

    def read_exact(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise ArtifactError("the archive is truncated")
        self.sha256.update(data)
        self.position += n
        return data

    def skip_to(self, offset: int) -> None:
        while self.position < offset:
            self.read_exact(min(_CHUNK, offset - self.position))

    def read_rest(self) -> bytes:
        """Read to the end; the SHA-256 of what was read by this call."""
        rest = hashlib.sha256()
        while chunk := self.f.read(_CHUNK):
            self.sha256.update(chunk)
            rest.update(chunk)
            self.position += len(chunk)
        return rest.digest()


def _digest_of_rest(f: BinaryIO) -> bytes:
    rest = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        rest.update(chunk)
    return rest.digest()


def _stream_into(
    f: BinaryIO, plan: list[_Planned], directory: bytes, start_dir: int, staging: str, digest: str | None
) -> None:
    """Read the archive once, in order, into `staging`: small entries are inflated and written by a
    pool (at most `_IN_FLIGHT` compressed bytes ahead), large ones here as they stream; symlinks last,
    and only once every byte was read, checked against the plan and (with `digest`) hashed to it."""
    reader = _HashingReader(f)
    for item in plan:
        if item.kind == "dir":
            os.makedirs(os.path.join(staging, item.rel), exist_ok=True)
    links: list[_Planned] = []
    pending: deque[tuple[Future[None], int]] = deque()
    in_flight = 0
    with ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="conveyor-extract") as pool:
        try:
            for item in sorted(plan, key=lambda p: p.info.header_offset):
                info = item.info
                _check_entry(info, reader.position)
                reader.skip_to(info.header_offset)
                _read_local_header(reader, info)
                if reader.position + info.compress_size > start_dir:
                    raise ArtifactError(f"entry '{info.filename}' overlaps the archive's central directory")
                if item.kind == "dir":
                    reader.skip_to(reader.position + info.compress_size)
                elif item.kind == "link":
                    target = _inflate(info, reader.read_exact(info.compress_size))
                    if target.decode("utf-8", errors="replace") != item.link_target:
                        raise ArtifactError(f"entry '{info.filename}' changed while the archive was read")
                    links.append(item)
                elif info.compress_size > _INLINE or info.file_size > 4 * _INLINE:
                    _write_streamed(reader, info, os.path.join(staging, item.rel))
                else:
                    data = reader.read_exact(info.compress_size)
                    future = pool.submit(_write_whole, info, data, os.path.join(staging, item.rel))
                    pending.append((future, len(data)))
                    in_flight += len(data)
                    while in_flight > _IN_FLIGHT:
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


def _check_entry(info: zipfile.ZipInfo, position: int) -> None:
    if info.flag_bits & _FLAG_ENCRYPTED:
        raise ArtifactError(f"entry '{info.filename}' is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArtifactError(
            f"entry '{info.filename}' uses compression method {info.compress_type}; only stored and deflate are read"
        )
    if info.header_offset < position:
        raise ArtifactError(f"entry '{info.filename}' overlaps another entry")


def _read_local_header(reader: _HashingReader, info: zipfile.ZipInfo) -> None:
    fields = _LOCAL.unpack(reader.read_exact(_LOCAL.size))
    signature, flags, name_length, extra_length = fields[0], fields[2], fields[9], fields[10]
    if signature != _LOCAL_SIG:
        raise ArtifactError(f"entry '{info.filename}': no local header where the central directory says")
    name = reader.read_exact(name_length).decode("utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace")
    reader.read_exact(extra_length)
    if name != info.orig_filename:
        raise ArtifactError(f"entry '{info.filename}': its local header names '{name}'")


def _inflate(info: zipfile.ZipInfo, data: bytes) -> bytes:
    """A whole entry's content, checked: never more than its declared size (no zip bomb), and its CRC."""
    if info.compress_type == zipfile.ZIP_STORED:
        content = data
    else:
        inflater = isal_zlib.decompressobj(-15)
        pieces, size = [], 0
        for piece in _inflated(inflater, data, info):
            size += len(piece)
            if size > info.file_size:
                raise ArtifactError(f"entry '{info.filename}' is corrupt: larger than its declared size")
            pieces.append(piece)
        if not inflater.eof:
            raise ArtifactError(f"entry '{info.filename}' is corrupt: its data does not end where it should")
        content = b"".join(pieces)
    if len(content) != info.file_size or isal_zlib.crc32(content) != info.CRC:
        raise ArtifactError(f"entry '{info.filename}' is corrupt: size or CRC mismatch")
    return content


def _inflated(inflater: isal_zlib.Decompress, data: bytes, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """What `data` inflates to, `_PIECE` bytes at most at a time (ISA-L may hold output back even when
    all input was taken, so the loop ends only on a short piece with no input left)."""
    while True:
        try:
            piece = inflater.decompress(data, _PIECE)
        except _ISAL_ERROR as exc:
            raise ArtifactError(f"entry '{info.filename}' is corrupt: {exc}") from None
        data = inflater.unconsumed_tail
        if piece:
            yield piece
        if not data and len(piece) < _PIECE:
            return


def _create(info: zipfile.ZipInfo, path: str) -> int:
    """A new file in the (fresh) staging directory: never an existing one, never through a symlink."""
    mode = _EXEC_MODE if (info.external_attr >> 16) & 0o111 else _FILE_MODE
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    os.fchmod(fd, mode)  # exactly, whatever the umask
    return fd


def _write_whole(info: zipfile.ZipInfo, data: bytes, path: str) -> None:
    content = _inflate(info, data)
    fd = _create(info, path)
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def _write_streamed(reader: _HashingReader, info: zipfile.ZipInfo, path: str) -> None:
    """A large entry, inflated and written chunk by chunk as it is read (bounded memory)."""
    inflater = isal_zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    remaining, written, crc = info.compress_size, 0, 0
    with os.fdopen(_create(info, path), "wb") as out:
        while remaining:
            data = reader.read_exact(min(_CHUNK, remaining))
            remaining -= len(data)
            for piece in [data] if inflater is None else _inflated(inflater, data, info):
                written += len(piece)
                if written > info.file_size:
                    raise ArtifactError(f"entry '{info.filename}' is corrupt: larger than its declared size")
                crc = isal_zlib.crc32(piece, crc)
                out.write(piece)
    if (inflater is not None and not inflater.eof) or written != info.file_size or crc != info.CRC:
        raise ArtifactError(f"entry '{info.filename}' is corrupt: size or CRC mismatch")


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
