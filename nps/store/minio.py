"""The MinIO store: the same ``datasets/a/b/c/d/<id>/`` layout as keys in one bucket.

S3 has no rename, so commits work differently from the local store:

1. A writer *claims* the dataset by creating ``.nps/claim.json`` with ``If-None-Match: *``
   (exactly one writer succeeds) and keeps the claim alive with a heartbeat
   (``If-Match`` on the claim's ETag). A claim whose heartbeat is older than the lease
   belongs to a dead writer and may be taken over.
2. The claim holder uploads files straight to their final keys (parallel, multipart for
   large files), deletes stray keys a dead predecessor left, writes ``.nps/dataset.json``,
   and finally the manifest, again with ``If-None-Match: *``.
3. Readers only ever look through the manifest, so keys without one are invisible; ``gc``
   removes them once no live claim covers them.

The store is also the bucket's object interface (``nps.store.objects.ObjectStore``), used for
job records, users, groups, the quarantine and series datasets. minio-py and urllib3 stay in
this package: their errors become NPS errors here (``_s3``), and nothing public returns their
types.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from nps.config import Settings
from nps.errors import (
    ConfigError,
    CorruptDataset,
    DatasetNotFound,
    InvalidSource,
    PreconditionFailed,
    StoreBusy,
    StoreUnavailable,
    TransferDamaged,
)
from nps.hashing import check_dataset_id, is_dataset_id
from nps.layout import (
    DATASETS_PREFIX,
    MANIFEST_PATH,
    RECORD_PATH,
    check_relpath,
    dataset_prefix,
    revision_path,
)
from nps.store.base import DatasetStore, GcReport
from nps.store.claims import Claim, Leases
from nps.store.lean import LeanError, LeanS3, checksum_refused, crc32_header
from nps.store.multipart import Uploader
from nps.store.objects import ObjectInfo, ObjectStore, StoredObject, check_condition, check_key, check_prefix
from nps.store.source import CHUNK, HashingReader, ProgressFn, SourceFile
from nps.store.wire import BodyShort
from schemas.dataset import DatasetRecord
from schemas.manifest import Manifest, ManifestFile

CLAIM_PATH = ".nps/claim.json"
MAX_CLAIM_WAIT_LEASES = 20  # a second writer waits at most this many leases for the first
NOT_FOUND = {"NoSuchKey", "NoSuchObject"}
MiB = 1024 * 1024


class MinioStore(DatasetStore, ObjectStore):
    """Datasets and objects in a MinIO (or any S3 with conditional writes) bucket."""

    name = "minio"

    def __init__(self, settings: Settings) -> None:
        if settings.minio_access_key is None or settings.minio_secret_key is None:
            raise ConfigError(
                "MinIO credentials are not configured: run `make up` (infra/stack.sh up), which writes "
                f"{settings.cache}/stack.env, or set NPS_MINIO_ACCESS_KEY and NPS_MINIO_SECRET_KEY"
            )
        self.bucket = settings.minio_bucket
        self.endpoint = settings.minio_endpoint
        self.workers = settings.transfer_workers
        self.get_workers = min(settings.transfer_workers, 8)
        self.ranged_parts = settings.ranged_parts
        self.part_size = settings.part_size_mb * MiB
        self.lease = settings.lease_seconds
        http = urllib3.PoolManager(
            maxsize=self.workers * 2,
            timeout=urllib3.Timeout(connect=5, read=120),
            retries=urllib3.Retry(total=5, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
        )
        self._client = Minio(
            settings.minio_endpoint,
            access_key=settings.minio_access_key.get_secret_value(),
            secret_key=settings.minio_secret_key.get_secret_value(),
            secure=settings.minio_secure,
            http_client=http,
        )
        self._bucket_ready = False
        self._lean = LeanS3(self._client, self.bucket)
        self._uploader = Uploader(self._lean, self.part_size)
        self._leases = Leases(self, self.lease)

    # ---- vendor errors become ours, here and only here -----------------------------------------
    @contextlib.contextmanager
    def _s3(self, what: str) -> Iterator[None]:
        try:
            yield
        except S3Error as exc:
            if exc.code == "NoSuchBucket":
                raise DatasetNotFound(f"{what}: bucket {self.bucket!r} does not exist") from exc
            raise StoreUnavailable(f"{what}: MinIO answered {exc.code}: {exc.message}") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if isinstance(exc, FileNotFoundError | PermissionError):
                raise
            raise StoreUnavailable(f"{what}: MinIO at {self.endpoint} is not reachable ({exc})") from exc
        except LeanError as exc:
            if exc.status == 0:
                raise StoreUnavailable(f"{what}: MinIO at {self.endpoint} is not reachable ({exc})") from exc
            raise StoreUnavailable(f"{what}: MinIO answered {exc}") from exc

    def ensure_bucket(self) -> bool:
        """Create the bucket on first use; True if this call created it."""
        if self._bucket_ready:
            return False
        created = False
        with self._s3(f"creating bucket {self.bucket}"):
            if not self._client.bucket_exists(self.bucket):
                try:
                    self._client.make_bucket(self.bucket)
                    created = True
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._bucket_ready = True
        return created

    def key(self, dataset_id: str, path: str = "") -> str:
        """Object key of ``path`` in a dataset (or the dataset's prefix, with a trailing slash)."""
        return f"{dataset_prefix(dataset_id)}/{path}"

    def _get_bytes(self, key: str) -> bytes | None:
        """A whole (small) object, or None if there is none; call inside ``_s3``."""
        return self._lean.get(key)

    def _put_bytes(self, key: str, data: bytes, *, if_none_match: bool = False,
                   if_match: str | None = None, headers: dict[str, str] | None = None) -> str | None:
        """PUT a small object and return its ETag; with a condition, None when the condition
        failed. Call inside ``_s3``."""
        sent = {"Content-Type": "application/json", **(headers or {})}
        if if_none_match:
            sent["If-None-Match"] = "*"
        if if_match is not None:
            sent["If-Match"] = f'"{if_match}"'
        response = self._lean.put(key, data, len(data), sent)
        if response.status == 200:
            return response.etag
        # If-Match on a missing key: MinIO (like S3) answers 404, which fails the condition too.
        failed = (409, 412, 404) if if_match is not None else (409, 412)
        if response.status in failed and (if_none_match or if_match is not None):
            if response.retried:  # our first attempt may have been stored before its answer was lost
                stored = self._lean.request("GET", key)
                if stored.status == 200 and stored.body == data:
                    return stored.etag
            return None  # precondition failed, or a concurrent conditional write won
        raise LeanError(response.status, response.detail())

    # ---- the object interface (nps.store.objects) ---------------------------------------------
    def put_object(self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        check_condition(if_absent, if_match)
        check_key(key)
        self.ensure_bucket()
        with self._s3(f"writing {key}"):
            etag = self._put_bytes(key, data, if_none_match=if_absent, if_match=if_match,
                                   headers={"Content-Type": _content_type(key)})
        if etag is None:
            raise PreconditionFailed(f"{key} already exists" if if_absent else
                                     f"{key} is not the version {if_match} any more (or is gone)")
        return etag

    def put_object_file(self, key: str, path: Path) -> None:
        check_key(key)
        self.ensure_bucket()
        size = path.stat().st_size
        with self._s3(f"writing {key}"):
            if size <= LEAN_MAX:
                data = path.read_bytes()
                self._send(key, data, len(data), {"Content-Type": _content_type(key)})
            else:
                with path.open("rb") as fh:
                    self._uploader.upload(key, fh, size, str(path))

    def put_stream(self, key: str, body: bytes | BinaryIO, size: int, *, if_absent: bool = False,
                   content_type: str = "application/octet-stream", metadata: dict[str, str] | None = None,
                   crc32: int | None = None) -> str:
        """One PUT of ``size`` bytes (in memory, or a file from where it stands, sent as it is
        read) with user ``metadata`` (names without ``x-amz-meta-``); return the ETag. MinIO
        only (the local store keeps no metadata): DICOM instances, stored where they will live.

        Bytes in memory carry their own CRC32; a file's may be given (``crc32``). Bytes MinIO
        received other than their CRC32 says: TransferDamaged (the caller tells a file that
        changed from damage on the way). A file shorter than ``size``: InvalidSource.
        ``if_absent`` and the key exists (even if a lost answer made us send it twice, when it
        may be our own copy): PreconditionFailed."""
        check_key(key)
        self.ensure_bucket()
        headers = {"Content-Type": content_type, **(crc32_header(crc32) if crc32 is not None else {})}
        if if_absent:
            headers["If-None-Match"] = "*"
        for name, value in (metadata or {}).items():
            headers[META_PREFIX + name] = value
        with self._s3(f"writing {key}"):
            try:
                response = self._lean.put(key, body, size, headers)
            except BodyShort as exc:
                raise InvalidSource(f"{key}: the file changed while being stored ({exc})") from exc
        if response.status == 200:
            return response.etag
        if checksum_refused(response):
            raise TransferDamaged(f"{key}: MinIO received bytes that do not match their CRC32, and refused them")
        if response.status in (409, 412) and if_absent:
            raise PreconditionFailed(f"{key} already exists")
        raise StoreUnavailable(f"MinIO refused to store {key} (HTTP {response.status}): {response.detail()}")

    def get_object(self, key: str) -> StoredObject | None:
        check_key(key)
        with self._s3(f"reading {key}"):
            response = self._lean.request("GET", key)
            if response.status == 404:
                return None
            if response.status != 200:
                raise LeanError(response.status, response.detail())
        return StoredObject(response.body, response.etag)

    def get_object_file(self, key: str, dest: Path) -> bool:
        check_key(key)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with self._s3(f"reading {key}"):
                try:
                    with partial.open("xb") as fh:
                        for chunk in self._lean.stream(key, 0, None, CHUNK):
                            fh.write(chunk)
                except LeanError as exc:
                    if exc.status == 404:
                        return False
                    raise
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return True

    def stat_object(self, key: str) -> ObjectInfo | None:
        check_key(key)
        with self._s3(f"reading {key}"):
            try:
                st = self._client.stat_object(self.bucket, key)
            except S3Error as exc:
                if exc.code in NOT_FOUND or exc.code == "NoSuchBucket":
                    return None
                raise
        metadata = {name.lower()[len(META_PREFIX):]: str(value) for name, value in (st.metadata or {}).items()
                    if name.lower().startswith(META_PREFIX.lower())}
        return ObjectInfo(key, int(st.size or 0), st.last_modified, str(st.etag or "").strip('"'), metadata)

    def list_objects(self, prefix: str, recursive: bool = True) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        with self._s3(f"listing {prefix or 'the bucket'}"):
            for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=recursive):
                if obj.is_dir:
                    yield ObjectInfo(str(obj.object_name), 0)
                else:
                    yield ObjectInfo(str(obj.object_name), int(obj.size or 0), obj.last_modified)

    def delete_object(self, key: str) -> None:
        check_key(key)
        with self._s3(f"deleting {key}"):
            response = self._lean.request("DELETE", key)
            if response.status not in (200, 204, 404):
                raise LeanError(response.status, response.detail())

    def delete_objects(self, keys: list[str]) -> int:
        """Remove these objects (batched: one request per thousand); how many were asked for."""
        for key in keys:
            check_key(key)
        with self._s3(f"deleting {len(keys)} object(s)"):
            return self._remove_keys(keys)

    def remove_bucket(self) -> None:
        """Delete every object in the bucket, then the bucket (tests and benchmarks clean up
        with it); nothing if there is no bucket."""
        with self._s3(f"removing bucket {self.bucket}"):
            if not self._client.bucket_exists(self.bucket):
                return
            self._remove_keys([o.object_name for o in self._client.list_objects(self.bucket, recursive=True)])
            self._client.remove_bucket(self.bucket)
        self._bucket_ready = False

    def _send(self, key: str, data: bytes, size: int, headers: dict[str, str]) -> None:
        """An unconditional lean PUT; LeanError unless MinIO stored it. Call inside ``_s3``."""
        response = self._lean.put(key, data, size, headers)
        if response.status != 200:
            raise LeanError(response.status, response.detail())

    # ---- reading -----------------------------------------------------------------------------
    def exists(self, dataset_id: str) -> bool:
        check_dataset_id(dataset_id)
        with self._s3(f"checking {dataset_id}"):
            try:
                self._client.stat_object(self.bucket, self.key(dataset_id, MANIFEST_PATH))
                return True
            except S3Error as exc:
                if exc.code in NOT_FOUND or exc.code == "NoSuchBucket":
                    return False
                raise

    def _read_manifest_bytes(self, dataset_id: str) -> bytes:
        with self._s3(f"reading manifest of {dataset_id}"):
            raw = self._get_bytes(self.key(dataset_id, MANIFEST_PATH))
        if raw is None:
            raise DatasetNotFound(f"dataset {dataset_id} not found in MinIO bucket {self.bucket!r}")
        return raw

    def _read_revision_bytes(self, dataset_id: str, revision: int) -> bytes | None:
        with self._s3(f"reading revision {revision} of {dataset_id}"):
            return self._get_bytes(self.key(dataset_id, revision_path(revision)))

    def _read_raw(self, dataset_id: str, path: str, offset: int, length: int | None) -> Iterator[bytes]:
        for chunk in self._read_chunks(dataset_id, path, offset, length, None):
            yield bytes(chunk)  # already bytes (no copy) when no buffer is given

    def _read_into(self, dataset_id: str, path: str, offset: int, length: int | None,
                   buffer: memoryview) -> Iterator[bytes | memoryview]:
        return self._read_chunks(dataset_id, path, offset, length, buffer)

    def _read_chunks(self, dataset_id: str, path: str, offset: int, length: int | None,
                     buffer: memoryview | None) -> Iterator[bytes | memoryview]:
        if length == 0:
            return
        key = self.key(dataset_id, path)
        with self._s3(f"reading {dataset_id}/{path}"):
            try:
                if length is not None and length <= LEAN_MAX:
                    data = self._lean.get(key, offset, length)  # one request, half minio-py's CPU
                    if data is None:
                        raise LeanError(404, "no such object")
                    yield data
                elif buffer is not None:
                    yield from self._lean.stream_into(key, offset, length, buffer)
                else:
                    yield from self._lean.stream(key, offset, length, CHUNK)
            except LeanError as exc:
                if exc.status == 404:
                    raise CorruptDataset(f"{dataset_id}/{path}: listed in the manifest but missing") from exc
                if exc.status == 416:
                    raise CorruptDataset(
                        f"{dataset_id}/{path}: stored object is shorter than its manifest entry") from exc
                raise  # _s3 says whether MinIO answered or was not reachable

    def signed_path(self, dataset_id: str, path: str, seconds: int = 60) -> str:
        """``/bucket/key?<signature>`` of a short-lived signed GET of one file's object (for a
        proxy on this host that streams it to an authorized client)."""
        from datetime import timedelta
        from urllib.parse import urlsplit

        with self._s3(f"signing {dataset_id}/{path}"):
            url = self._client.presigned_get_object(self.bucket, self.key(dataset_id, path),
                                                   expires=timedelta(seconds=seconds))
        parts = urlsplit(url)
        return f"{parts.path}?{parts.query}"

    def ids(self) -> Iterator[str]:
        for prefix in self._dataset_prefixes():
            dataset_id = prefix.rstrip("/").rsplit("/", 1)[-1]
            if self.exists(dataset_id):
                yield dataset_id

    def _dataset_prefixes(self) -> Iterator[str]:
        # Walk the five folder levels instead of listing every object of every dataset.
        level = [f"{DATASETS_PREFIX}/"]
        with self._s3("listing datasets"):
            for _ in range(5):
                level = [o.object_name for p in level for o in self._client.list_objects(self.bucket, prefix=p)
                         if o.is_dir]
        for p in sorted(level):
            if is_dataset_id(p.rstrip("/").rsplit("/", 1)[-1]):
                yield p

    # ---- writing -----------------------------------------------------------------------------
    def _put_files(
        self, dataset_id: str, files: list[SourceFile], record: DatasetRecord, progress: ProgressFn | None,
        revision: int = 1,
    ) -> Manifest:
        self.ensure_bucket()
        with self._s3(f"storing {dataset_id}"):
            claim = self._claim(dataset_id)
            if claim is None:  # someone else committed while we waited
                return self.manifest(dataset_id)
            try:
                if self.exists(dataset_id):  # committed between our last look and our claim
                    return self.manifest(dataset_id)
                return self._write_claimed(dataset_id, files, record, claim, progress, revision)
            finally:
                self._leases.release(claim)

    def _write_claimed(self, dataset_id: str, files: list[SourceFile], record: DatasetRecord,
                       claim: Claim, progress: ProgressFn | None, revision: int) -> Manifest:
        # A dead predecessor may have left objects; only then is a full listing worth its cost.
        leftovers = self._has_leftovers(dataset_id)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            entries = list(pool.map(lambda f: self._upload(dataset_id, f, claim, progress), files))
        record_bytes = record.model_dump_json(by_alias=True, indent=2).encode()
        self._put_bytes(self.key(dataset_id, RECORD_PATH), record_bytes)
        entries.append(ManifestFile(path=RECORD_PATH, size=len(record_bytes),
                                    blake3=HashingReader.digest_of(record_bytes)))
        if leftovers:
            self._remove_strays(dataset_id, {e.path for e in entries})
        manifest = Manifest(dataset_id=dataset_id, revision=revision, files=tuple(entries))
        if claim.lost.is_set():
            raise StoreBusy(f"{dataset_id}: lost the write claim (heartbeat failed for longer than the lease)")
        etag = self._put_bytes(self.key(dataset_id, MANIFEST_PATH),
                               manifest.model_dump_json(by_alias=True).encode(), if_none_match=True)
        if etag is None:
            return self.manifest(dataset_id)
        return manifest

    def _upload(self, dataset_id: str, src: SourceFile, claim: Claim, progress: ProgressFn | None) -> ManifestFile:
        if claim.lost.is_set():
            raise StoreBusy(f"{dataset_id}: lost the write claim while uploading")
        if src.size <= LEAN_MAX:
            return self._upload_small(dataset_id, src, progress)
        with src.abspath.open("rb") as fh:
            digest = self._uploader.upload(self.key(dataset_id, src.path), fh, src.size, src.path, progress)
            if fh.read(1) or fh_grew(src):
                raise InvalidSource(f"{src.path}: file changed while being stored")
        return ManifestFile(path=src.path, size=src.size, blake3=digest)

    def _upload_small(self, dataset_id: str, src: SourceFile, progress: ProgressFn | None) -> ManifestFile:
        """A small file read once, checksummed and sent in one lean PUT."""
        data = src.abspath.read_bytes()
        if len(data) != src.size:
            raise InvalidSource(f"{src.path}: file changed while being stored")
        self._send(self.key(dataset_id, src.path), data, len(data), {})
        if progress and data:
            progress(len(data))
        return ManifestFile(path=src.path, size=len(data), blake3=HashingReader.digest_of(data))

    def _has_leftovers(self, dataset_id: str) -> bool:
        prefix = self.key(dataset_id)
        for obj in self._client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if obj.object_name[len(prefix):] != CLAIM_PATH:
                return True
        return False

    def _remove_strays(self, dataset_id: str, keep: set[str]) -> None:
        prefix = self.key(dataset_id)
        strays = [o.object_name for o in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                  if o.object_name[len(prefix):] not in keep | {CLAIM_PATH, MANIFEST_PATH}]
        self._remove_keys(strays)

    def _remove_keys(self, keys: list[str]) -> int:
        if not keys:
            return 0
        errors = list(self._client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise StoreUnavailable(f"could not delete {len(errors)} object(s), first: {errors[0]}")
        return len(keys)

    # ---- claims --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self, name: str, lost: threading.Event | None = None) -> Iterator[bool]:
        claim = self._leases.take(f"locks/{check_relpath(name)}.json", lost)
        if claim is None:
            yield False
            return
        try:
            yield True
        finally:
            self._leases.release(claim)

    def _claim(self, dataset_id: str) -> Claim | None:
        """Take the write claim, waiting for a live holder; None if the dataset got committed."""
        key = self.key(dataset_id, CLAIM_PATH)
        deadline = time.monotonic() + self.lease * MAX_CLAIM_WAIT_LEASES
        while True:
            claim = self._leases.take(key)
            if claim is not None:
                return claim
            if self.exists(dataset_id):
                return None
            if time.monotonic() > deadline:
                raise StoreBusy(f"{dataset_id}: another writer has been storing it for too long; try again later")
            time.sleep(min(0.5, self.lease / 10))

    # ---- removing ------------------------------------------------------------------------------
    def delete(self, dataset_id: str) -> None:
        check_dataset_id(dataset_id)
        if not self.exists(dataset_id):
            raise DatasetNotFound(f"dataset {dataset_id} not found in MinIO bucket {self.bucket!r}")
        with self._s3(f"deleting {dataset_id}"):
            self._client.remove_object(self.bucket, self.key(dataset_id, MANIFEST_PATH))
            prefix = self.key(dataset_id)
            self._remove_keys([o.object_name for o in
                               self._client.list_objects(self.bucket, prefix=prefix, recursive=True)])

    def gc(self) -> GcReport:
        report = GcReport()
        self.ensure_bucket()
        with self._s3("garbage collection"):
            for prefix in self._dataset_prefixes():
                dataset_id = prefix.rstrip("/").rsplit("/", 1)[-1]
                claim = self._leases.age(self.key(dataset_id, CLAIM_PATH))
                if claim is not None and claim[1] < self.lease:
                    report.kept_in_progress.append(dataset_id)
                    continue
                if self.exists(dataset_id):
                    if claim is not None:
                        self._client.remove_object(self.bucket, self.key(dataset_id, CLAIM_PATH))
                    continue
                objects = list(self._client.list_objects(self.bucket, prefix=prefix, recursive=True,
                                                        include_user_meta=True))
                if any(_is_received_instance(o.object_name[len(prefix):], o.metadata) for o in objects):
                    # Instances a sender was told are stored, waiting for the assembler: not litter.
                    report.kept_in_progress.append(dataset_id)
                    continue
                report.removed_objects += self._remove_keys([o.object_name for o in objects])
                report.removed_partial.append(dataset_id)
        return report


META_PREFIX = "X-Amz-Meta-"  # user metadata travels in headers with this prefix
INSTANCE_CHECKSUM = "nps-blake3"  # the metadata of a DICOM instance stored in place: its BLAKE3
LEAN_MAX = 1024 * 1024  # files and reads up to this size go through LeanS3 in one request


def _content_type(key: str) -> str:
    return "application/json" if key.endswith(".json") else "application/octet-stream"


def _is_received_instance(path: str, metadata: Any) -> bool:
    """An instance the DICOM import stored in place (``dicom/...`` with its checksum as metadata)."""
    if not path.startswith("dicom/") or not metadata:
        return False
    return any(str(k).lower() == (META_PREFIX + INSTANCE_CHECKSUM).lower() for k in dict(metadata))


def fh_grew(src: SourceFile) -> bool:
    """True if the source file is now larger than when it was scanned (appended while uploading)."""
    try:
        return src.abspath.stat().st_size != src.size
    except FileNotFoundError:
        return True
