"""The artifact store: content-addressed archives (conveyor.stores.archive) passed between actions by
reference, and the documents (pipeline declarations) and coordinator states kept beside them."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from conveyor.model import ArtifactLocation, ArtifactRef
from conveyor.settings import S3Location, Settings
from conveyor.stores.archive import ArtifactError, UnsafeArchiveError, pack, sha256_file, unpack
from conveyor.stores.entries import StoredKind, StoreEntry
from conveyor.stores.s3 import S3ArtifactStore, parse_object_url

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
_FILE_MODE = 0o644
_EXEC_MODE = 0o755
_LINK_MODE = 0o777
_CHUNK = 1024 * 1024
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")
_PIPELINE_NAME_RE = re.compile(r"^[A-Za-z0-9.@\-_]{1,100}$")  # the declaration's rule: no path separators
_MAX_LINK_HOPS = 40  # like the kernel's ELOOP limit


class ArtifactStore(Protocol):
    """Where artifacts live; the local directory store and S3 (conveyor.stores.s3) implement it.

    For garbage collection (conveyor.gc) every store also lists its entries with their last use, and
    deletes one only if it was not used since a given time; a store hit (a put that finds the digest
    already stored, an extract, a read) refreshes the entry's last use, so deduplication never races a
    delete: gc removes only entries unused for its minimum age.
    """

    def put(self, name: str, source_dir: Path, files: list[str]) -> ArtifactRef: ...

    def extract(self, ref: ArtifactRef, dest: Path) -> None: ...

    # A zip made elsewhere (an S3 source's object), stored as it is; and an artifact's zip, as it is stored.
    def put_archive(self, name: str, archive: Path) -> ArtifactRef: ...

    def get_archive(self, ref: ArtifactRef, dest: Path) -> None: ...

    def put_document(self, digest: str, text: str) -> None: ...

    def get_document(self, digest: str) -> str: ...

    def put_coordinator_state(self, pipeline: str, text: str) -> None: ...

    def get_coordinator_state(self, pipeline: str) -> str | None: ...

    # Garbage collection: artifacts and documents (never coordinators' saved states).
    def entries(self) -> Iterator[StoreEntry]: ...

    def touch(self, kind: StoredKind, digest: str) -> bool: ...  # False: not stored

    def delete(self, entry: StoreEntry, *, unused_since: datetime) -> bool: ...  # False: used since, or gone


def store_from_settings(settings: Settings) -> ConfiguredArtifactStore:
    """The store the settings name (CONVEYOR_ARTIFACT_STORE: S3, else the local one in the data directory)."""
    return ConfiguredArtifactStore(settings)


def store_for_outputs(store: ArtifactStore, declared: list[ArtifactLocation]) -> ArtifactStore:
    """Where an action's output artifacts go (see ConfiguredArtifactStore.for_outputs); a bare store is used as is."""
    return store.for_outputs(declared) if isinstance(store, ConfiguredArtifactStore) else store


def replicate_for_action(store: ArtifactStore, ref: ArtifactRef, declared: list[ArtifactLocation]) -> ArtifactRef:
    """An input artifact where an action's AWS service reads it: in the action's store (its region's entry of the
    pipeline's artifactStores, see ConfiguredArtifactStore.for_outputs), copied there by digest when it was made in
    another region's store; unchanged when the action's store is not S3 or already holds it."""
    target = store_for_outputs(store, declared)
    if not isinstance(target, S3ArtifactStore) or parse_object_url(ref.location) is None:
        return ref
    return target.replicate(ref)


class ConfiguredArtifactStore:
    """The configured store for writing; for reading, whichever store an ArtifactRef's location names.

    A reader follows the ref (`file://` -> the local store, by digest; `s3://bucket/key` -> that object), not its own
    configuration, so a retry, a rollback or the next stage on another worker finds the artifact where it was put.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.local = LocalArtifactStore(settings.artifacts_dir)
        self.tmp_dir = settings.data_dir / "tmp"
        self.default: LocalArtifactStore | S3ArtifactStore = self.local
        if settings.artifact_store is not None:
            self.default = S3ArtifactStore(settings.artifact_store, settings.artifact_kms_key, tmp_dir=self.tmp_dir)
        self._declared: dict[tuple[str, str, str | None, str | None], S3ArtifactStore] = {}
        self._readers: dict[str, S3ArtifactStore] = {}
        self._lock = threading.Lock()

    def for_outputs(self, declared: list[ArtifactLocation]) -> ArtifactStore:
        """Where an action's outputs go: the pipeline's declared S3 store when this worker is configured for AWS
        (Settings.aws), else the configured store (an imported declaration still runs offline)."""
        if not declared or not self.settings.aws:
            return self
        chosen = declared[0] if len(declared) == 1 else self._of_worker_region(declared)
        key = (chosen.bucket, chosen.prefix, chosen.kms_key, chosen.region)
        with self._lock:
            store = self._declared.get(key)
            if store is None:
                location = S3Location(bucket=chosen.bucket, prefix=chosen.prefix)
                store = S3ArtifactStore(location, chosen.kms_key, region=chosen.region, tmp_dir=self.tmp_dir)
                self._declared[key] = store
            return store

    @staticmethod
    def _of_worker_region(declared: list[ArtifactLocation]) -> ArtifactLocation:
        import boto3  # here: slow to import, and needed only for a pipeline with per-region stores

        region = boto3.session.Session().region_name
        for location in declared:
            if location.region == region:
                return location
        regions = ", ".join(sorted(str(location.region) for location in declared))
        raise ArtifactError(
            f"the pipeline declares artifactStores for {regions} but this worker's AWS region is {region or 'unset'}: "
            "set AWS_DEFAULT_REGION on the worker or the action's region"
        )

    def put(self, name: str, source_dir: Path, files: list[str]) -> ArtifactRef:
        return self.default.put(name, source_dir, files)

    def extract(self, ref: ArtifactRef, dest: Path) -> None:
        parsed = parse_object_url(ref.location)
        if parsed is None:
            self.local.extract(ref, dest)
            return
        self._reader(parsed[0]).extract(ref, dest)

    def put_archive(self, name: str, archive: Path) -> ArtifactRef:
        return self.default.put_archive(name, archive)

    def get_archive(self, ref: ArtifactRef, dest: Path) -> None:
        parsed = parse_object_url(ref.location)
        if parsed is None:
            self.local.get_archive(ref, dest)
            return
        self._reader(parsed[0]).get_archive(ref, dest)

    def _reader(self, bucket: str) -> S3ArtifactStore:
        if isinstance(self.default, S3ArtifactStore) and self.default.location.bucket == bucket:
            return self.default
        with self._lock:
            reader = self._readers.get(bucket)
            if reader is None:
                reader = self._readers[bucket] = S3ArtifactStore(S3Location(bucket=bucket), tmp_dir=self.tmp_dir)
            return reader

    def put_document(self, digest: str, text: str) -> None:
        self.default.put_document(digest, text)

    def get_document(self, digest: str) -> str:
        return self.default.get_document(digest)

    def put_coordinator_state(self, pipeline: str, text: str) -> None:
        self.default.put_coordinator_state(pipeline, text)

    def get_coordinator_state(self, pipeline: str) -> str | None:
        return self.default.get_coordinator_state(pipeline)

    # Garbage collection sweeps the configured store (a pipeline's declared stores are not swept).
    def entries(self) -> Iterator[StoreEntry]:
        return self.default.entries()

    def touch(self, kind: StoredKind, digest: str) -> bool:
        return self.default.touch(kind, digest)

    def delete(self, entry: StoreEntry, *, unused_since: datetime) -> bool:
        return self.default.delete(entry, unused_since=unused_since)


class LocalArtifactStore:
    """Archives under `root/sha256/<hex[:2]>/<hex>.zip`, named by their own digest."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_for(self, digest: str) -> Path:
        match = _DIGEST_RE.match(digest)
        if not match:
            raise ArtifactError(f"invalid artifact digest {digest!r}: expected 'sha256:<64 hex digits>'")
        hex_digest = match.group(1)
        return self.root / "sha256" / hex_digest[:2] / f"{hex_digest}.zip"

    def put(self, name: str, source_dir: Path, files: list[str]) -> ArtifactRef:
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, suffix=".zip")
        tmp_path = Path(tmp_name)
        try:
            with os.fdopen(fd, "w+b") as out:
                digest = pack(name, source_dir, files, out).digest
            final = self.path_for(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            if _refresh(final):
                tmp_path.unlink()  # same content already stored
            else:
                os.replace(tmp_path, final)  # atomic: readers never see a partial archive
        except BaseException:
            tmp_path.unlink(missing_ok=True)
            raise
        return ArtifactRef(name=name, digest=digest, location=final.as_uri(), size=final.stat().st_size)

    def extract(self, ref: ArtifactRef, dest: Path) -> None:
        # The path comes from the digest, not from `location`, so a reference can't point elsewhere.
        archive = self.path_for(ref.digest)
        if not _refresh(archive):
            raise ArtifactError(f"artifact '{ref.name}' is missing from the store at {archive}")
        unpack(ref.name, archive, ref.digest, dest)

    def put_archive(self, name: str, archive: Path) -> ArtifactRef:
        """Store an existing zip unchanged (no re-packing): its digest is that of its bytes. Extraction
        checks its entries as it checks every artifact's."""
        if not zipfile.is_zipfile(archive):
            raise ArtifactError(f"artifact '{name}': {archive.name} is not a zip archive")
        digest = f"sha256:{sha256_file(archive)}"
        final = self.path_for(digest)
        if not _refresh(final):
            tmp_dir = self.root / "tmp"
            tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, suffix=".zip")
            try:
                with os.fdopen(fd, "wb") as out, archive.open("rb") as source:
                    shutil.copyfileobj(source, out, _CHUNK)
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp_name, final)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        return ArtifactRef(name=name, digest=digest, location=final.as_uri(), size=final.stat().st_size)

    def get_archive(self, ref: ArtifactRef, dest: Path) -> None:
        """Copy the artifact's zip to `dest`, refusing it unless its content has the reference's digest."""
        archive = self.path_for(ref.digest)
        if not _refresh(archive):
            raise ArtifactError(f"artifact '{ref.name}' is missing from the store at {archive}")
        shutil.copyfile(archive, dest)
        if f"sha256:{sha256_file(dest)}" != ref.digest:
            dest.unlink(missing_ok=True)
            raise ArtifactError(f"artifact '{ref.name}' is corrupt or was changed: digest mismatch")

    # --- documents: pipeline declarations, stored by the digest of their canonical JSON -----------

    def document_path(self, digest: str) -> Path:
        hex_digest = self.path_for(digest).stem  # validates the digest's form
        return self.root / "documents" / "sha256" / hex_digest[:2] / f"{hex_digest}.json"

    def put_document(self, digest: str, text: str) -> None:
        data = text.encode()
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise ArtifactError(f"document content does not match its digest {digest}")
        final = self.document_path(digest)
        if _refresh(final):
            return
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp_name, final)

    def get_document(self, digest: str) -> str:
        path = self.document_path(digest)
        _refresh(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"pipeline declaration {digest} is missing from the store at {path}") from None
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise ArtifactError(f"pipeline declaration {digest} is corrupt or was changed: digest mismatch")
        return data.decode()

    # --- the state a pipeline's coordinator saved when it last closed, by pipeline name --------------

    def coordinator_state_path(self, pipeline: str) -> Path:
        if not _PIPELINE_NAME_RE.fullmatch(pipeline):
            raise ArtifactError(f"invalid pipeline name {pipeline!r} for a coordinator's saved state")
        return self.root / "coordinators" / f"{pipeline}.json"

    def put_coordinator_state(self, pipeline: str, text: str) -> None:
        """Replaced atomically: a coordinator starting again reads the whole of the last state or none."""
        final = self.coordinator_state_path(pipeline)
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=final.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp_name, final)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def get_coordinator_state(self, pipeline: str) -> str | None:
        """None when the coordinator never closed (or never ran)."""
        try:
            return self.coordinator_state_path(pipeline).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    # --- garbage collection: a file's mtime is its entry's last use ----------------------------------

    def _entry_path(self, kind: StoredKind, digest: str) -> Path:
        return self.path_for(digest) if kind == StoredKind.ARTIFACT else self.document_path(digest)

    def entries(self) -> Iterator[StoreEntry]:
        for kind, top, suffix in (
            (StoredKind.ARTIFACT, self.root / "sha256", ".zip"),
            (StoredKind.DOCUMENT, self.root / "documents" / "sha256", ".json"),
        ):
            for path in sorted(top.glob(f"??/*{suffix}")):
                if not _DIGEST_RE.match(f"sha256:{path.stem}"):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # deleted since the listing
                yield StoreEntry(kind, f"sha256:{path.stem}", st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def touch(self, kind: StoredKind, digest: str) -> bool:
        return _refresh(self._entry_path(kind, digest))

    def delete(self, entry: StoreEntry, *, unused_since: datetime) -> bool:
        """Moved aside first, then its last use checked again: a put that refreshed it before the move is
        seen here (the entry is put back), and one after it finds nothing and stores its own copy."""
        path = self._entry_path(entry.kind, entry.digest)
        aside = path.with_name(path.name + ".gc")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if os.stat(aside).st_mtime >= unused_since.timestamp():
            os.replace(aside, path)  # used since it was listed: keep it (a new copy is the same bytes)
            return False
        aside.unlink()
        return True


def _refresh(path: Path) -> bool:
    """A store hit: the entry's last use becomes now. False when it is not stored (or gc just took it)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


__all__ = [
    "ArtifactError",
    "ArtifactStore",
    "ConfiguredArtifactStore",
    "LocalArtifactStore",
    "StoreEntry",
    "StoredKind",
    "UnsafeArchiveError",
    "replicate_for_action",
    "store_for_outputs",
    "store_from_settings",
]
