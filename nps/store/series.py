"""Series datasets in MinIO: instances written in place, committed (and amended) by revision.

DICOM import writes each instance once, straight to where it will live:
``datasets/.../<sha1(SeriesInstanceUID)>/dicom/<SOPInstanceUID>.dcm``, with ``If-None-Match``
so an instance is never replaced, and its BLAKE3 checksum as object metadata. Until the assembler
commits a manifest that lists it, the object is invisible to readers (and ``gc`` leaves it
alone: a sender was told it is stored).

A commit writes the new files (``dataset.json`` once, the revision's series summary), keeps
the manifest of revision N at ``.nps/revisions/rN.json`` and then replaces ``manifest.json``
conditionally (``If-None-Match`` for revision 1, ``If-Match`` on the previous ETag after), so
two committers can never both win and a job pinned to an earlier revision still finds it.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from nps import checksum
from nps.dicom.instance import DICM_PROBE, dataset_offset
from nps.errors import InvalidSource, PreconditionFailed, StoreBusy, StoreUnavailable, TransferDamaged
from nps.layout import MANIFEST_PATH, revision_path
from nps.store.base import parse_manifest
from nps.store.minio import INSTANCE_CHECKSUM, MinioStore
from schemas.manifest import Manifest

SMALL_INSTANCE = 16 * 1024 * 1024  # up to this size an instance is read into memory once
DATASET_CHECKSUM = "nps-dataset-blake3"  # metadata: the BLAKE3 of the data set (see dataset_offset)


@dataclass(frozen=True)
class StoredInstance:
    """An instance's object: its checksum and size, and whether this call created it."""

    checksum: str
    size: int
    created: bool


class InstanceConflict(Exception):
    """The key already holds a different data set (same SOPInstanceUID, other content).

    ``stored`` is the object kept there (None when it carries no checksum of NPS's own);
    ``detail`` says how the two differ."""

    def __init__(self, stored: StoredInstance | None, detail: str) -> None:
        super().__init__(detail)
        self.stored = stored
        self.detail = detail


def put_instance(store: MinioStore, dataset_id: str, path: str, src: Path) -> StoredInstance:
    """Store file ``src`` at ``path`` in series ``dataset_id`` unless it is already there.

    The same instance already stored: ``created=False``, with the stored object's checksum and
    size. "The same" means the same data set: the file header (preamble and group 0002) says who
    wrote the file, so the same instance received by the network and imported from a disk differ
    there and nowhere else. A different data set: InstanceConflict (the stored object stays
    as it is). An object that vanished between the write and the comparison (removed by an
    admin): StoreUnavailable, so the sender retries. The body is streamed (a large
    instance is never held in memory) and sent unsigned: its checksums (the file's and the data
    set's, in one pass) are computed by us and stored as metadata instead of hashing the body
    again (SHA-256) to sign it.
    """
    key = store.key(dataset_id, path)
    size = src.stat().st_size
    try:
        if size <= SMALL_INSTANCE:
            data = src.read_bytes()
            sha = checksum.digest_of(data)
            start = dataset_offset(data[:DICM_PROBE])
            content = checksum.digest_of(memoryview(data)[start:]) if start else sha
            created = _put_new(store, key, data, len(data), sha, content)
        else:
            sha, content, crc = _file_checksums(src)
            with src.open("rb") as fh:
                created = _put_new(store, key, fh, size, sha, content, crc)
    except TransferDamaged:
        if size > SMALL_INSTANCE and _file_checksums(src)[2] != crc:
            raise InvalidSource(f"{path}: the file changed while being stored") from None
        raise StoreUnavailable(f"{key}: the bytes were damaged on their way to MinIO, which refused them") from None
    if created:
        return StoredInstance(sha, size, True)
    return _existing(store, key, sha, size, content)


def _file_checksums(src: Path) -> tuple[str, str, int]:
    """The file's checksum, its data set's (see ``dataset_offset``) and its CRC32 (for MinIO to
    check what it receives), reading the file once."""
    whole, content, crc = checksum.new(), checksum.new(), 0
    with src.open("rb") as fh:
        chunk = fh.read(DICM_PROBE)
        start, seen = dataset_offset(chunk), 0
        while chunk:
            whole.update(chunk)
            crc = zlib.crc32(chunk, crc)
            if start and seen + len(chunk) > start:
                content.update(memoryview(chunk)[max(0, start - seen):])
            seen += len(chunk)
            chunk = fh.read(checksum.CHUNK)
    sha = whole.hexdigest()
    return sha, content.hexdigest() if start else sha, crc


def _put_new(store: MinioStore, key: str, body: bytes | BinaryIO, size: int, sha: str, content: str,
             crc: int | None = None) -> bool:
    """One conditional PUT (``if_absent``), streamed and unsigned (a file's with its ``crc``,
    see ``MinioStore.put_stream``); False when the key already exists."""
    try:
        store.put_stream(key, body, size, if_absent=True, content_type="application/dicom",
                         metadata={INSTANCE_CHECKSUM: sha, DATASET_CHECKSUM: content}, crc32=crc)
    except PreconditionFailed:
        return False
    return True


def _existing(store: MinioStore, key: str, sha: str, size: int, content: str) -> StoredInstance:
    stored = _stat(store, key)
    if stored is None:
        raise StoreUnavailable(f"{key} was there when written and gone when compared; try again")
    stored_sha, stored_size, stored_content = stored
    same = stored_content == content if stored_content else (stored_sha == sha and stored_size == size)
    kept = StoredInstance(stored_sha, stored_size, False) if stored_sha is not None else None
    if not same or kept is None:
        raise InstanceConflict(kept, f"stored: {stored_size} bytes, data set blake3 {stored_content or 'unknown'}; "
                                     f"this copy: {size} bytes, data set blake3 {content}")
    return kept


def _stat(store: MinioStore, key: str) -> tuple[str | None, int, str | None] | None:
    """The stored object's file checksum, size and data set checksum (None: stored before NPS
    recorded it), or None when there is no object."""
    info = store.stat_object(key)
    if info is None:
        return None
    return info.metadata.get(INSTANCE_CHECKSUM), info.size, info.metadata.get(DATASET_CHECKSUM)


PROBE_KEY = ".nps-probe"  # need not exist: any answer from MinIO will do


def probe(store: MinioStore) -> None:
    """Return if MinIO answers, raise StoreUnavailable if it does not; quick (one small GET,
    a few short retries), for telling when MinIO is back after an outage."""
    store.get_object(PROBE_KEY)


def current(store: MinioStore, dataset_id: str) -> tuple[Manifest, str] | None:
    """The committed manifest and its ETag, or None for a series not committed yet."""
    found = store.get_object(store.key(dataset_id, MANIFEST_PATH))
    if found is None:
        return None
    return parse_manifest(dataset_id, found.data), found.etag


def stored_sizes(store: MinioStore, dataset_id: str, folder: str = "dicom/") -> dict[str, int]:
    """Path -> size of every object under ``folder`` of a dataset (one listing, no reads)."""
    prefix = store.key(dataset_id)
    return {o.key[len(prefix):]: o.size for o in store.list_objects(prefix + folder)}


def commit(store: MinioStore, manifest: Manifest, previous_etag: str | None, blobs: dict[str, bytes]) -> None:
    """Write ``blobs`` (new metadata files), keep the revision's manifest, then commit it.

    ``previous_etag`` is the ETag of the manifest this revision replaces (None for revision 1).
    Raises StoreBusy if someone else committed first (the caller re-reads and retries).
    """
    dataset_id = manifest.dataset_id
    raw = manifest.model_dump_json(by_alias=True).encode()
    for path, data in blobs.items():
        store.put_object(store.key(dataset_id, path), data)
    store.put_object(store.key(dataset_id, revision_path(manifest.revision)), raw)
    try:
        store.put_object(store.key(dataset_id, MANIFEST_PATH), raw, if_absent=previous_etag is None,
                         if_match=previous_etag)
    except PreconditionFailed:
        raise StoreBusy(f"{dataset_id}: another writer committed revision {manifest.revision} first") from None
