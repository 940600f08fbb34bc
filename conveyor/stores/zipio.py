"""Zip records, written and read fast: the internals of conveyor.stores.archive.

Writing: entries are encoded (read, CRC, ISA-L deflate or STORED) by a thread pool, since `isal`
releases the GIL, and written in the given order by one writer that hashes as it writes, so the bytes
do not depend on thread scheduling and the digest needs no second read. Zip64 records are written only
where a size, an offset or the entry count does not fit the classic fields.

Reading: `HashingReader` reads an archive once, in order, hashing every byte; `inflate` and
`write_streamed` check each entry against its declared size (no zip bomb) and CRC.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import tempfile
import zipfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO, cast

from isal import isal_zlib

from conveyor.stores.errors import ArtifactError

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
_DOS_DATE = ((_ZIP_EPOCH[0] - 1980) << 9) | (_ZIP_EPOCH[1] << 5) | _ZIP_EPOCH[2]
_DOS_TIME = 0
_FILE_MODE = 0o644
_EXEC_MODE = 0o755
_LINK_MODE = 0o777
CHUNK = 1024 * 1024
_ISAL_ERROR = cast(type[Exception], isal_zlib.error)  # its stubs declare an instance, it is a class

# Compression. Level 1 of ISA-L: measured on the hand-off bench (text-like files deflate to ~0.45 at
# ~170 MB/s per core here, vs ~46 MB/s for zlib level 1 at the same ratio; zlib-ng level 1 was 82 MB/s at
# 0.67, level 2 55 MB/s); ISA-L level 2 was no faster and only 0.6 % smaller on the whole tree.
_LEVEL = 1
_TRIAL = 16 * 1024  # an entry's first bytes, compressed on their own to decide STORED or DEFLATED
_STORE_RATIO = 0.95  # deflated / raw above this: the entry is STORED (random data, already compressed)
_IN_MEMORY = 16 * 1024 * 1024  # an entry's output larger than this spills to a temporary file
IN_FLIGHT = 64 * 1024 * 1024  # raw bytes submitted to the pool and not yet written (memory bound)
_PIECE = 4 * 1024 * 1024  # extraction: inflated at most this much at a time
INLINE = 8 * 1024 * 1024  # extraction: entries larger than this (compressed) stream in the reading thread

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


def workers() -> int:
    """Threads of a pack pool (CPU-bound: compression): one per core, at least 2, at most 8."""
    return max(2, min(8, os.cpu_count() or 2))


def extract_workers() -> int:
    """Threads of an extract pool: twice the cores (at most 8), since writing files spends most of its time
    in the kernel (measured on 2 cores: 200 MB in 2,000 files, 4 threads ~2.0 s vs 2 threads ~2.5 s)."""
    return max(4, min(8, 2 * (os.cpu_count() or 2)))


@dataclass(frozen=True)
class Entry:
    arcname: str  # posix path relative to the source directory
    link_target: str | None  # set for symlinks


class HashingWriter:
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

    def write_to(self, out: HashingWriter) -> None:
        for chunk in self.chunks:
            out.write(chunk)
        if self.spill is not None:
            self.spill.seek(0)
            while chunk := self.spill.read(CHUNK):
                out.write(chunk)
        if self.source is not None:
            crc, size = 0, 0
            with _open_regular(self.source) as src:
                while chunk := src.read(CHUNK):
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
        first = src.read(CHUNK)
        if len(first) < CHUNK:  # the whole file: one piece
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
            chunk = src.read(CHUNK)
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
    while chunk := src.read(CHUNK):
        crc = isal_zlib.crc32(chunk, crc)
        size += len(chunk)
        if chunks is not None:
            chunks.append(chunk)
            if size > _IN_MEMORY:
                chunks = None
    if chunks is None:
        return _Body(zipfile.ZIP_STORED, crc, size, size, attr, source=path)
    return _Body(zipfile.ZIP_STORED, crc, size, size, attr, chunks)


def _encode(source_dir: Path, entry: Entry) -> _Body:
    if entry.link_target is not None:
        return _encode_link(entry.link_target)
    return _encode_file(source_dir / entry.arcname)


def write_zip(out: HashingWriter, source_dir: Path, entries: list[Entry]) -> None:
    """Entries are encoded by a thread pool, at most `IN_FLIGHT` raw bytes ahead of the writer, and
    written in their sorted order: the same tree gives the same bytes, however the threads ran."""
    written: list[_Written] = []
    pending: deque[tuple[Entry, Future[_Body], int]] = deque()
    in_flight = 0
    todo = iter(entries)
    with ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="conveyor-pack") as pool:
        try:
            while True:
                while not pending or (in_flight < IN_FLIGHT and len(pending) < 4 * IN_FLIGHT // CHUNK):
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


def _write_entry(out: HashingWriter, arcname: str, body: _Body) -> _Written:
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


def _write_central_directory(out: HashingWriter, written: list[_Written]) -> None:
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


# --- Reading --------------------------------------------------------------------------------------


class HashingReader:
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
            self.read_exact(min(CHUNK, offset - self.position))

    def read_rest(self) -> bytes:
        """Read to the end; the SHA-256 of what was read by this call."""
        rest = hashlib.sha256()
        while chunk := self.f.read(CHUNK):
            self.sha256.update(chunk)
            rest.update(chunk)
            self.position += len(chunk)
        return rest.digest()


def digest_of_rest(f: BinaryIO) -> bytes:
    rest = hashlib.sha256()
    while chunk := f.read(CHUNK):
        rest.update(chunk)
    return rest.digest()


def streamable(info: zipfile.ZipInfo) -> bool:
    """Read by the fast path: stored or deflate (what Conveyor writes, and what zip tools write by default)."""
    return info.compress_type in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def check_entry(info: zipfile.ZipInfo, position: int) -> None:
    if info.flag_bits & _FLAG_ENCRYPTED:
        raise ArtifactError(f"entry '{info.filename}' is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArtifactError(
            f"entry '{info.filename}' uses compression method {info.compress_type}; only stored and deflate are read"
        )
    if info.header_offset < position:
        raise ArtifactError(f"entry '{info.filename}' overlaps another entry")


def read_local_header(reader: HashingReader, info: zipfile.ZipInfo) -> None:
    fields = _LOCAL.unpack(reader.read_exact(_LOCAL.size))
    signature, flags, name_length, extra_length = fields[0], fields[2], fields[9], fields[10]
    if signature != _LOCAL_SIG:
        raise ArtifactError(f"entry '{info.filename}': no local header where the central directory says")
    name = reader.read_exact(name_length).decode("utf-8" if flags & _FLAG_UTF8 else "cp437", errors="replace")
    reader.read_exact(extra_length)
    if name != info.orig_filename:
        raise ArtifactError(f"entry '{info.filename}': its local header names '{name}'")


def inflate(info: zipfile.ZipInfo, data: bytes) -> bytes:
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


def create_file(info: zipfile.ZipInfo, path: str) -> int:
    """A new file in the (fresh) staging directory: never an existing one, never through a symlink."""
    mode = _EXEC_MODE if (info.external_attr >> 16) & 0o111 else _FILE_MODE
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    os.fchmod(fd, mode)  # exactly, whatever the umask
    return fd


def write_whole(info: zipfile.ZipInfo, data: bytes, path: str) -> None:
    content = inflate(info, data)
    fd = create_file(info, path)
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def write_streamed(reader: HashingReader, info: zipfile.ZipInfo, path: str) -> None:
    """A large entry, inflated and written chunk by chunk as it is read (bounded memory)."""
    inflater = isal_zlib.decompressobj(-15) if info.compress_type == zipfile.ZIP_DEFLATED else None
    remaining, written, crc = info.compress_size, 0, 0
    with os.fdopen(create_file(info, path), "wb") as out:
        while remaining:
            data = reader.read_exact(min(CHUNK, remaining))
            remaining -= len(data)
            for piece in [data] if inflater is None else _inflated(inflater, data, info):
                written += len(piece)
                if written > info.file_size:
                    raise ArtifactError(f"entry '{info.filename}' is corrupt: larger than its declared size")
                crc = isal_zlib.crc32(piece, crc)
                out.write(piece)
    if (inflater is not None and not inflater.eof) or written != info.file_size or crc != info.CRC:
        raise ArtifactError(f"entry '{info.filename}' is corrupt: size or CRC mismatch")
