"""The S3 artifact store: the same content-addressed zips as the local store, in a bucket under a prefix.

Keys (under the prefix):
- `artifacts/sha256/<hex[:2]>/<hex>.zip`: archives, named by their own digest (an existing key is not uploaded again);
- `documents/sha256/<hex[:2]>/<hex>.json`: pipeline declarations, by the digest of their canonical JSON;
- `coordinators/<pipeline>.json`: the state a pipeline's coordinator saved when it last closed;
- `logs/...`: action logs (conveyor.stores.logs);
- `gc/used/<artifacts|documents>/<hex[:2]>/<hex>`: empty markers whose LastModified is an entry's last use after it
  was stored (a store hit writes one: cheaper than copying a large archive onto itself), read by garbage collection.

Nothing is held whole in memory: an archive is packed into a temporary file and uploaded from it with boto3's managed
transfer (multipart above its threshold); a download streams into a temporary file through a hashing writer, and a
digest mismatch is refused before anything is extracted. With a KMS key, every object is written with SSE-KMS.
boto3 finds credentials, the region and the endpoint (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3) itself.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from conveyor.model import ArtifactRef
from conveyor.settings import S3Location
from conveyor.stores.archive import ArtifactError, pack, sha256_file, unpack
from conveyor.stores.entries import StoredKind, StoreEntry

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_PIPELINE_NAME_RE = re.compile(r"^[A-Za-z0-9.@\-_]{1,100}$")  # the declaration's rule: no path separators
_S3_URL_RE = re.compile(r"^s3://([^/]+)/(.+)$")
_MISSING = {"404", "NoSuchKey", "NotFound"}
_REFUSED = {
    "403": "access denied (check the worker's IAM permissions and the KMS key policy)",
    "AccessDenied": "access denied (check the worker's IAM permissions and the KMS key policy)",
    "NoSuchBucket": "the bucket does not exist",
    "KMS.NotFoundException": "the KMS key does not exist",
    "KMS.DisabledException": "the KMS key is disabled",
}


class StoreUnavailableError(RuntimeError):
    """S3 could not be reached or answered with a transient error; retrying may help (not an ArtifactError)."""


def s3_url(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_object_url(url: str) -> tuple[str, str] | None:
    """`s3://bucket/key` -> (bucket, key); None when it is not one."""
    match = _S3_URL_RE.match(url)
    return (match.group(1), match.group(2)) if match else None


def _missing(exc: Exception) -> bool:
    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code", "")) in _MISSING


def _hex(digest: str) -> str:
    match = _DIGEST_RE.match(digest)
    if not match:
        raise ArtifactError(f"invalid artifact digest {digest!r}: expected 'sha256:<64 hex digits>'")
    return match.group(1)


def artifact_key_suffix(digest: str) -> str:
    hex_digest = _hex(digest)
    return f"artifacts/sha256/{hex_digest[:2]}/{hex_digest}.zip"


class _HashingWriter:
    """A write-only (so non-seekable: boto3 writes it in order) file that hashes what passes through."""

    def __init__(self, out: Any) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        written: int = self.out.write(data)
        return written


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str

    def __str__(self) -> str:
        return s3_url(self.bucket, self.key)


@dataclass
class ExecutionLogs:
    """One execution's action log objects in the store."""

    keys: list[str] = field(default_factory=list)
    size: int = 0
    last_modified: datetime | None = None


class S3ArtifactStore:
    """Artifacts, documents and coordinator states in `location.bucket` under `location.prefix`."""

    def __init__(
        self,
        location: S3Location,
        kms_key: str | None = None,
        *,
        region: str | None = None,
        transfer: TransferConfig | None = None,
        tmp_dir: Path | None = None,
    ) -> None:
        self.location = location
        self.kms_key = kms_key
        self.region = region
        self._transfer = transfer
        self.tmp_dir = tmp_dir  # where archives are packed and downloaded (None: the system's temp dir)
        self._client: S3Client | None = None
        self._lock = threading.Lock()

    # --- plumbing ---------------------------------------------------------------------------------

    @property
    def client(self) -> S3Client:
        with self._lock:  # boto3 clients are thread-safe, their creation is not
            if self._client is None:
                import boto3  # here: boto3 takes a good part of a second to import, and most commands never need it

                self._client = boto3.session.Session().client("s3", region_name=self.region)
            return self._client

    @property
    def transfer(self) -> TransferConfig:
        if self._transfer is None:
            from boto3.s3.transfer import TransferConfig

            self._transfer = TransferConfig()
        return self._transfer

    def _tmp_dir(self) -> Path | None:
        if self.tmp_dir is not None:
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
        return self.tmp_dir

    def key(self, relative: str) -> str:
        return f"{self.location.prefix}/{relative}" if self.location.prefix else relative

    def url(self, relative: str) -> str:
        return s3_url(self.location.bucket, self.key(relative))

    @property
    def encryption(self) -> dict[str, str]:
        """The ExtraArgs of every write: SSE-KMS with the configured key, else the bucket's default encryption."""
        if not self.kms_key:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key}

    def error(self, what: str, obj: S3Object, exc: Exception) -> Exception:
        """An S3 failure as an error naming what, the bucket and the key (never credentials)."""
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                return ArtifactError(f"{what} is missing from the store: {obj} does not exist")
            if code in _REFUSED:
                return ArtifactError(f"{what}: {obj}: {_REFUSED[code]}")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if 400 <= int(status) < 500 and code not in ("SlowDown", "RequestTimeout", "Throttling"):
                return ArtifactError(f"{what}: {obj}: S3 refused the request ({code or status})")
            return StoreUnavailableError(f"{what}: {obj}: S3 answered {code or status}; try again")
        if isinstance(exc, BotoCoreError):
            return StoreUnavailableError(f"{what}: {obj}: S3 could not be reached ({type(exc).__name__})")
        return exc

    def _exists(self, what: str, obj: S3Object) -> bool:
        try:
            self.client.head_object(Bucket=obj.bucket, Key=obj.key)
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                return False
            raise self.error(what, obj, exc) from None
        return True

    def get_bytes(self, what: str, obj: S3Object) -> bytes | None:
        """The object's content; None when it does not exist."""
        try:
            body: bytes = self.client.get_object(Bucket=obj.bucket, Key=obj.key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                return None
            raise self.error(what, obj, exc) from None
        return body

    def put_bytes(self, what: str, obj: S3Object, data: bytes, content_type: str) -> None:
        try:
            args: dict[str, Any] = {"ContentType": content_type, **self.encryption}
            self.client.put_object(Bucket=obj.bucket, Key=obj.key, Body=data, **args)
        except (ClientError, BotoCoreError) as exc:
            raise self.error(what, obj, exc) from None

    def object(self, relative: str) -> S3Object:
        """The object at `relative` under this store's prefix."""
        return S3Object(self.location.bucket, self.key(relative))

    def object_at(self, key: str) -> S3Object:
        """The object at a full key (one `list_keys` returned)."""
        return S3Object(self.location.bucket, key)

    def list_keys(self, what: str, relative_prefix: str, start_after: str = "") -> list[str]:
        """The keys under `relative_prefix` (this store's prefix added) after `start_after`, in order."""
        prefix = self.key(relative_prefix)
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        if start_after:
            pages = paginator.paginate(Bucket=self.location.bucket, Prefix=prefix, StartAfter=start_after)
        else:
            pages = paginator.paginate(Bucket=self.location.bucket, Prefix=prefix)
        try:
            for page in pages:
                keys += [item["Key"] for item in page.get("Contents", []) if "Key" in item]
        except (ClientError, BotoCoreError) as exc:
            raise self.error(what, S3Object(self.location.bucket, prefix), exc) from None
        return keys

    # --- artifacts --------------------------------------------------------------------------------

    def put(self, name: str, source_dir: Path, files: list[str]) -> ArtifactRef:
        with tempfile.NamedTemporaryFile("w+b", dir=self._tmp_dir(), suffix=".zip") as out:
            packed = pack(name, source_dir, files, out)
            out.flush()
            return self._upload(name, Path(out.name), packed.digest, packed.size)

    def put_archive(self, name: str, archive: Path) -> ArtifactRef:
        """Store an existing zip unchanged (no re-packing): its digest is that of its bytes."""
        if not zipfile.is_zipfile(archive):
            raise ArtifactError(f"artifact '{name}': {archive.name} is not a zip archive")
        return self._upload(name, archive, f"sha256:{sha256_file(archive)}", archive.stat().st_size)

    def _upload(self, name: str, archive: Path, digest: str, size: int) -> ArtifactRef:
        obj = S3Object(self.location.bucket, self.key(artifact_key_suffix(digest)))
        what = f"artifact '{name}'"
        # Content-addressed: the same content may be there already; a hit marks it used, then checks it is still
        # there (garbage collection may have taken it just before the mark).
        if not (self._exists(what, obj) and self._mark_used(StoredKind.ARTIFACT, digest) and self._exists(what, obj)):
            try:
                # By file name, not file object: boto3 then reads each part from the file as it sends it
                # (from a file object it would buffer every part in flight in memory).
                self.client.upload_file(
                    str(archive),
                    obj.bucket,
                    obj.key,
                    ExtraArgs={"ContentType": "application/zip", **self.encryption},
                    Config=self.transfer,
                )
            except (ClientError, BotoCoreError) as exc:
                raise self.error(what, obj, exc) from None
            except Exception as exc:  # s3transfer wraps failures of the parts
                cause = exc.__cause__ or exc.__context__
                if isinstance(cause, ClientError | BotoCoreError):
                    raise self.error(what, obj, cause) from None
                raise
        return ArtifactRef(name=name, digest=digest, location=str(obj), size=size)

    def replicate(self, ref: ArtifactRef) -> ArtifactRef:
        """The artifact in this store (another region's, for an action of that region): copied server-side by its
        digest's key, once (a second call, or a retried action, finds it there), and the reference to this copy."""
        source = self.object_of(ref)
        target = S3Object(self.location.bucket, self.key(artifact_key_suffix(ref.digest)))
        if (source.bucket, source.key) == (target.bucket, target.key):
            return ref
        what = f"artifact '{ref.name}'"
        if not (
            self._exists(what, target)
            and self._mark_used(StoredKind.ARTIFACT, ref.digest)
            and self._exists(what, target)
        ):
            try:
                # The managed copy: a multipart copy for archives over 5 GB; the bytes never pass through the worker.
                self.client.copy(
                    {"Bucket": source.bucket, "Key": source.key},
                    target.bucket,
                    target.key,
                    ExtraArgs={"ContentType": "application/zip", **self.encryption},
                    Config=self.transfer,
                )
            except (ClientError, BotoCoreError) as exc:
                raise self.error(what, source, exc) from None
        return ArtifactRef(name=ref.name, digest=ref.digest, location=str(target), size=ref.size)

    def extract(self, ref: ArtifactRef, dest: Path) -> None:
        """Download the archive the ref's location names (not this store's bucket: a ref written by another worker or
        for another pipeline's bucket is read where it is), check its digest while it streams, then unpack it."""
        with tempfile.NamedTemporaryFile("w+b", dir=self._tmp_dir(), suffix=".zip") as out:
            self._download(ref, out)
            unpack(ref.name, Path(out.name), ref.digest, dest)

    def get_archive(self, ref: ArtifactRef, dest: Path) -> None:
        """Download the artifact's zip to `dest`, refusing it unless its content has the reference's digest."""
        try:
            with dest.open("wb") as out:
                self._download(ref, out)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    def _download(self, ref: ArtifactRef, out: Any) -> None:
        obj = self.object_of(ref)
        what = f"artifact '{ref.name}'"
        if obj.key == self.key(artifact_key_suffix(ref.digest)) and obj.bucket == self.location.bucket:
            self._mark_used(StoredKind.ARTIFACT, ref.digest)
        writer = _HashingWriter(out)
        try:
            self.client.download_fileobj(obj.bucket, obj.key, cast(Any, writer), Config=self.transfer)
        except (ClientError, BotoCoreError) as exc:
            raise self.error(what, obj, exc) from None
        out.flush()
        if f"sha256:{writer.sha256.hexdigest()}" != ref.digest:
            raise ArtifactError(f"{what} is corrupt or was changed: {obj} does not have digest {ref.digest}")

    @staticmethod
    def object_of(ref: ArtifactRef) -> S3Object:
        """Where the ref points; refused unless its key is the one its digest names (under any prefix)."""
        parsed = parse_object_url(ref.location)
        suffix = artifact_key_suffix(ref.digest)
        if parsed is None or not (parsed[1] == suffix or parsed[1].endswith("/" + suffix)):
            raise ArtifactError(
                f"artifact '{ref.name}': location {ref.location!r} is not an S3 archive of digest {ref.digest}"
            )
        return S3Object(*parsed)

    # --- documents: pipeline declarations, stored by the digest of their canonical JSON -----------

    def _document(self, digest: str) -> S3Object:
        hex_digest = _hex(digest)
        return S3Object(self.location.bucket, self.key(f"documents/sha256/{hex_digest[:2]}/{hex_digest}.json"))

    def put_document(self, digest: str, text: str) -> None:
        data = text.encode()
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise ArtifactError(f"document content does not match its digest {digest}")
        obj = self._document(digest)
        what = f"pipeline declaration {digest}"
        if not (self._exists(what, obj) and self._mark_used(StoredKind.DOCUMENT, digest) and self._exists(what, obj)):
            self.put_bytes(what, obj, data, "application/json")

    def get_document(self, digest: str) -> str:
        obj = self._document(digest)
        what = f"pipeline declaration {digest}"
        self._mark_used(StoredKind.DOCUMENT, digest)
        data = self.get_bytes(what, obj)
        if data is None:
            raise ArtifactError(f"{what} is missing from the store: {obj} does not exist")
        if f"sha256:{hashlib.sha256(data).hexdigest()}" != digest:
            raise ArtifactError(f"{what} is corrupt or was changed: digest mismatch at {obj}")
        return data.decode()

    # --- the state a pipeline's coordinator saved when it last closed, by pipeline name --------------

    def _coordinator_state(self, pipeline: str) -> S3Object:
        if not _PIPELINE_NAME_RE.fullmatch(pipeline):
            raise ArtifactError(f"invalid pipeline name {pipeline!r} for a coordinator's saved state")
        return S3Object(self.location.bucket, self.key(f"coordinators/{pipeline}.json"))

    def put_coordinator_state(self, pipeline: str, text: str) -> None:
        """A PUT replaces the object atomically: a coordinator starting again reads the whole last state or none."""
        obj = self._coordinator_state(pipeline)
        self.put_bytes(f"the saved state of pipeline '{pipeline}'", obj, text.encode(), "application/json")

    def get_coordinator_state(self, pipeline: str) -> str | None:
        """None when the coordinator never closed (or never ran)."""
        data = self.get_bytes(f"the saved state of pipeline '{pipeline}'", self._coordinator_state(pipeline))
        return None if data is None else data.decode("utf-8")

    # --- garbage collection: an entry's last use is the newer of its LastModified and its marker's -------------

    _PREFIXES = {StoredKind.ARTIFACT: "artifacts/sha256/", StoredKind.DOCUMENT: "documents/sha256/"}
    _SUFFIXES = {StoredKind.ARTIFACT: ".zip", StoredKind.DOCUMENT: ".json"}

    def _marker(self, kind: StoredKind, digest: str) -> S3Object:
        hex_digest = _hex(digest)
        return self.object(f"gc/used/{kind.value}s/{hex_digest[:2]}/{hex_digest}")

    def _entry(self, kind: StoredKind, digest: str) -> S3Object:
        hex_digest = _hex(digest)
        return self.object(f"{self._PREFIXES[kind]}{hex_digest[:2]}/{hex_digest}{self._SUFFIXES[kind]}")

    def _mark_used(self, kind: StoredKind, digest: str) -> bool:
        self.put_bytes(f"the last use of {digest}", self._marker(kind, digest), b"", "application/octet-stream")
        return True

    def _listing(self, relative_prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.location.bucket, Prefix=self.key(relative_prefix)):
                yield from cast(list[dict[str, Any]], page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self.error("the store's listing", self.object(relative_prefix), exc) from None

    def execution_logs(self) -> dict[tuple[str, str], ExecutionLogs]:
        """The action logs under `logs/`, by (pipeline, execution): their keys, bytes and last change."""
        found: dict[tuple[str, str], ExecutionLogs] = {}
        start = len(self.key("logs/"))
        for item in self._listing("logs/"):
            key = str(item["Key"])
            parts = key[start:].split("/")
            if len(parts) < 3:
                continue
            logs = found.setdefault((parts[0], parts[1]), ExecutionLogs())
            logs.keys.append(key)
            logs.size += int(item["Size"])
            logs.last_modified = max(logs.last_modified or item["LastModified"], item["LastModified"])
        return found

    def delete_keys(self, keys: list[str]) -> None:
        """Delete objects by full key, a thousand per request (S3's limit)."""
        for first in range(0, len(keys), 1000):
            batch: list[ObjectIdentifierTypeDef] = [{"Key": key} for key in keys[first : first + 1000]]
            try:
                self.client.delete_objects(Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True})
            except (ClientError, BotoCoreError) as exc:
                raise self.error("the store's logs", self.object_at(keys[first]), exc) from None

    def entries(self) -> Iterator[StoreEntry]:
        for kind, prefix in self._PREFIXES.items():
            used = {
                str(item["Key"]).rsplit("/", 1)[-1]: item["LastModified"]
                for item in self._listing(f"gc/used/{kind.value}s/")
            }
            for item in self._listing(prefix):
                name = str(item["Key"]).rsplit("/", 1)[-1]
                hex_digest = name.removesuffix(self._SUFFIXES[kind])
                if not _DIGEST_RE.match(f"sha256:{hex_digest}"):
                    continue
                last = max(item["LastModified"], used.get(hex_digest, item["LastModified"]))
                yield StoreEntry(kind, f"sha256:{hex_digest}", int(item["Size"]), last)

    def touch(self, kind: StoredKind, digest: str) -> bool:
        obj = self._entry(kind, digest)
        return self._exists(str(obj), obj) and self._mark_used(kind, digest)

    def _last_modified(self, obj: S3Object) -> datetime | None:
        try:
            answer = self.client.head_object(Bucket=obj.bucket, Key=obj.key)
        except (ClientError, BotoCoreError) as exc:
            if _missing(exc):
                return None
            raise self.error(str(obj), obj, exc) from None
        return answer["LastModified"]

    def delete(self, entry: StoreEntry, *, unused_since: datetime) -> bool:
        """Deleted only if neither the object nor its marker changed since `unused_since`, checked just before.
        S3 has no atomic rename: a put that marks the entry used between that check and the delete (milliseconds,
        on an entry unused for the minimum age) finds it gone on its second look and uploads it again."""
        obj, marker = self._entry(entry.kind, entry.digest), self._marker(entry.kind, entry.digest)
        stored = self._last_modified(obj)
        if stored is None:
            return False
        used = self._last_modified(marker)
        if max(stored, used or stored) >= unused_since:
            return False
        try:
            self.client.delete_object(Bucket=obj.bucket, Key=obj.key)
            self.client.delete_object(Bucket=marker.bucket, Key=marker.key)
        except (ClientError, BotoCoreError) as exc:
            raise self.error(str(obj), obj, exc) from None
        return True


__all__ = ["S3ArtifactStore", "StoreUnavailableError", "artifact_key_suffix", "parse_object_url", "s3_url"]
