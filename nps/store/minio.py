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
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

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
    StoreBusy,
    StoreUnavailable,
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
from nps.store.lean import LeanError, LeanS3
from nps.store.multipart import Uploader
from nps.store.source import CHUNK, HashingReader, ProgressFn, SourceFile
from schemas.dataset import DatasetRecord
from schemas.manifest import Manifest, ManifestFile

CLAIM_PATH = ".nps/claim.json"
MAX_CLAIM_WAIT_LEASES = 20  # a second writer waits at most this many leases for the first
NOT_FOUND = {"NoSuchKey", "NoSuchObject"}
MiB = 1024 * 1024


@dataclass
class _Claim:
    key: str
    etag: str
    lost: threading.Event
    stop: threading.Event
    writer: str = ""


class MinioStore(DatasetStore):
    """Datasets as objects in a MinIO (or any S3 with conditional writes) bucket."""

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
        self.client = Minio(
            settings.minio_endpoint,
            access_key=settings.minio_access_key.get_secret_value(),
            secret_key=settings.minio_secret_key.get_secret_value(),
            secure=settings.minio_secure,
            http_client=http,
        )
        self._bucket_ready = False
        self._lean = LeanS3(self.client, self.bucket)
        self._uploader = Uploader(self._lean, self.part_size)

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

    def ensure_bucket(self) -> None:
        """Create the bucket on first use."""
        if self._bucket_ready:
            return
        with self._s3(f"creating bucket {self.bucket}"):
            if not self.client.bucket_exists(self.bucket):
                try:
                    self.client.make_bucket(self.bucket)
                except S3Error as exc:
                    if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                        raise
        self._bucket_ready = True

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
        if if_match:
            sent["If-Match"] = f'"{if_match}"'
        response = self._lean.put(key, data, len(data), sent)
        if response.status == 200:
            return response.etag
        if response.status in (409, 412) and (if_none_match or if_match):
            if response.retried:  # our first attempt may have been stored before its answer was lost
                stored = self._lean.request("GET", key)
                if stored.status == 200 and stored.body == data:
                    return stored.etag
            return None  # precondition failed, or a concurrent conditional write won
        raise LeanError(response.status, response.detail())

    # ---- reading -----------------------------------------------------------------------------
    def exists(self, dataset_id: str) -> bool:
        check_dataset_id(dataset_id)
        with self._s3(f"checking {dataset_id}"):
            try:
                self.client.stat_object(self.bucket, self.key(dataset_id, MANIFEST_PATH))
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
            url = self.client.presigned_get_object(self.bucket, self.key(dataset_id, path),
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
                level = [o.object_name for p in level for o in self.client.list_objects(self.bucket, prefix=p)
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
                self._release(claim)

    def _write_claimed(self, dataset_id: str, files: list[SourceFile], record: DatasetRecord,
                       claim: _Claim, progress: ProgressFn | None, revision: int) -> Manifest:
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

    def _upload(self, dataset_id: str, src: SourceFile, claim: _Claim, progress: ProgressFn | None) -> ManifestFile:
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
        response = self._lean.put(self.key(dataset_id, src.path), data, len(data), {})
        if response.status != 200:
            raise LeanError(response.status, response.detail())
        if progress and data:
            progress(len(data))
        return ManifestFile(path=src.path, size=len(data), blake3=HashingReader.digest_of(data))

    def _has_leftovers(self, dataset_id: str) -> bool:
        prefix = self.key(dataset_id)
        for obj in self.client.list_objects(self.bucket, prefix=prefix, recursive=True):
            if obj.object_name[len(prefix):] != CLAIM_PATH:
                return True
        return False

    def _remove_strays(self, dataset_id: str, keep: set[str]) -> None:
        prefix = self.key(dataset_id)
        strays = [o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
                  if o.object_name[len(prefix):] not in keep | {CLAIM_PATH, MANIFEST_PATH}]
        self._remove_keys(strays)

    def _remove_keys(self, keys: list[str]) -> int:
        if not keys:
            return 0
        errors = list(self.client.remove_objects(self.bucket, (DeleteObject(k) for k in keys)))
        if errors:
            raise StoreUnavailable(f"could not delete {len(errors)} object(s), first: {errors[0]}")
        return len(keys)

    # ---- claims --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self, name: str, lost: threading.Event | None = None) -> Iterator[bool]:
        self.ensure_bucket()
        key = f"locks/{check_relpath(name)}.json"
        writer = uuid.uuid4().hex
        with self._s3(f"locking {name}"):
            etag = self._put_bytes(key, self._claim_body(writer), if_none_match=True) \
                or self._take_over_if_stale(key, writer)
        if etag is None:
            yield False
            return
        claim = _Claim(key, etag, lost or threading.Event(), threading.Event(), writer)
        threading.Thread(target=self._heartbeat, args=(claim,), daemon=True).start()
        try:
            yield True
        finally:
            self._release(claim)

    def _claim_body(self, writer: str) -> bytes:
        return json.dumps({"writer": writer, "host": socket.gethostname(), "pid": os.getpid(),
                           "at": datetime.now(UTC).isoformat()}).encode()

    def _holder(self, key: str) -> str | None:
        """The writer id recorded in a claim or lock object (None if absent or unreadable)."""
        try:
            raw = self._get_bytes(key)
            return str(json.loads(raw)["writer"]) if raw else None
        except (ValueError, KeyError, TypeError):
            return None

    def _release(self, claim: _Claim) -> None:
        """Remove our claim, but never one a successor took over after our lease expired."""
        claim.stop.set()
        with contextlib.suppress(S3Error, LeanError, urllib3.exceptions.HTTPError, OSError):
            if self._holder(claim.key) == claim.writer:
                self.client.remove_object(self.bucket, claim.key)

    def _claim(self, dataset_id: str) -> _Claim | None:
        """Take the write claim, waiting for a live holder; None if the dataset got committed."""
        key = self.key(dataset_id, CLAIM_PATH)
        deadline = time.monotonic() + self.lease * MAX_CLAIM_WAIT_LEASES
        writer = uuid.uuid4().hex
        while True:
            etag = self._put_bytes(key, self._claim_body(writer), if_none_match=True)
            if etag is None:
                etag = self._take_over_if_stale(key, writer)
            if etag is not None:
                claim = _Claim(key, etag, threading.Event(), threading.Event(), writer)
                threading.Thread(target=self._heartbeat, args=(claim,), daemon=True).start()
                return claim
            if self.exists(dataset_id):
                return None
            if time.monotonic() > deadline:
                raise StoreBusy(f"{dataset_id}: another writer has been storing it for too long; try again later")
            time.sleep(min(0.5, self.lease / 10))

    def _claim_age(self, key: str) -> tuple[str, float] | None:
        try:
            st = self.client.stat_object(self.bucket, key)
        except S3Error as exc:
            if exc.code in NOT_FOUND:
                return None
            raise
        modified = st.last_modified or datetime.now(UTC)
        return str(st.etag), (datetime.now(UTC) - modified).total_seconds()

    def _take_over_if_stale(self, key: str, writer: str) -> str | None:
        found = self._claim_age(key)
        if found is None or found[1] < self.lease:
            return None
        return self._put_bytes(key, self._claim_body(writer), if_match=found[0])

    def _heartbeat(self, claim: _Claim) -> None:
        while not claim.stop.wait(self.lease / 3):
            try:
                etag = self._put_bytes(claim.key, self._claim_body(claim.writer), if_match=claim.etag)
                if etag is None:
                    # An earlier heartbeat may have been stored although it raised (so claim.etag
                    # is stale): the claim is lost only if it now names another writer.
                    current = self._claim_age(claim.key)
                    if current is not None and self._holder(claim.key) == claim.writer:
                        etag = current[0]
            except (S3Error, LeanError, urllib3.exceptions.HTTPError, OSError):
                continue  # transient; a real loss shows as a failed condition next time
            if etag is None:
                claim.lost.set()
                return
            claim.etag = etag

    # ---- removing ------------------------------------------------------------------------------
    def delete(self, dataset_id: str) -> None:
        check_dataset_id(dataset_id)
        if not self.exists(dataset_id):
            raise DatasetNotFound(f"dataset {dataset_id} not found in MinIO bucket {self.bucket!r}")
        with self._s3(f"deleting {dataset_id}"):
            self.client.remove_object(self.bucket, self.key(dataset_id, MANIFEST_PATH))
            prefix = self.key(dataset_id)
            self._remove_keys([o.object_name for o in
                               self.client.list_objects(self.bucket, prefix=prefix, recursive=True)])

    def gc(self) -> GcReport:
        report = GcReport()
        self.ensure_bucket()
        with self._s3("garbage collection"):
            for prefix in self._dataset_prefixes():
                dataset_id = prefix.rstrip("/").rsplit("/", 1)[-1]
                claim = self._claim_age(self.key(dataset_id, CLAIM_PATH))
                if claim is not None and claim[1] < self.lease:
                    report.kept_in_progress.append(dataset_id)
                    continue
                if self.exists(dataset_id):
                    if claim is not None:
                        self.client.remove_object(self.bucket, self.key(dataset_id, CLAIM_PATH))
                    continue
                objects = list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True,
                                                        include_user_meta=True))
                if any(_is_received_instance(o.object_name[len(prefix):], o.metadata) for o in objects):
                    # Instances a sender was told are stored, waiting for the assembler: not litter.
                    report.kept_in_progress.append(dataset_id)
                    continue
                report.removed_objects += self._remove_keys([o.object_name for o in objects])
                report.removed_partial.append(dataset_id)
        return report


INSTANCE_CHECKSUM_META = "X-Amz-Meta-Nps-Blake3"
LEAN_MAX = 1024 * 1024  # files and reads up to this size go through LeanS3 in one request


def _is_received_instance(path: str, metadata: Any) -> bool:
    """An instance the DICOM import stored in place (``dicom/...`` with its checksum as metadata)."""
    if not path.startswith("dicom/") or not metadata:
        return False
    return any(str(k).lower() == INSTANCE_CHECKSUM_META.lower() for k in dict(metadata))


def fh_grew(src: SourceFile) -> bool:
    """True if the source file is now larger than when it was scanned (appended while uploading)."""
    try:
        return src.abspath.stat().st_size != src.size
    except FileNotFoundError:
        return True
