"""The dataset store contract. Two real implementations: ``LocalStore`` and ``MinioStore``.

A dataset is immutable and content addressed. ``put`` writes every file, then
``.nps/dataset.json``, then ``.nps/manifest.json`` last: a dataset exists iff its manifest
exists, so no reader ever sees half a dataset. Reads verify sizes and checksums (BLAKE3, or
SHA-256 in version-1 manifests: see ``nps.checksum``).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from nps import checksum
from nps.errors import CorruptDataset, DatasetNotFound, InvalidSource
from nps.hashing import check_dataset_id
from nps.layout import MANIFEST_PATH, RECORD_PATH, check_relpath
from nps.store.source import CHUNK, ProgressFn, SourceFile, scan_source
from schemas.dataset import DatasetRecord
from schemas.manifest import Manifest, ManifestFile

PAGE_WRITE = 32 * 1024  # downloads reach the page cache in writes of this size (write_sliced)

_Chunk = TypeVar("_Chunk", bytes, memoryview, bytes | memoryview)


def write_sliced(fd: int, data: bytes | memoryview, offset: int | None = None) -> None:
    """Write all of ``data`` to ``fd`` (at ``offset``, or where the file stands) in 32 KiB
    writes. Measured on this kind of VM (Linux 6.18, ext4, 1 GiB written into a new file,
    bench/RESULTS.md of 2026-12-02): 32 KiB writes cost the kernel 0.31-0.49 s, 1 MiB writes
    0.29-2.29 s, and in a download with 1 MiB writes the copy into the page cache was two
    thirds of all the CPU. The likely cause: a large write lets ext4 back it with large
    folios, which come from the free 2 MiB blocks the balloon driver has handed back to the
    host, so each of their pages faults on the host again; small writes reuse recently freed
    small pages. mc writes 32 KiB at a time."""
    view = memoryview(data)
    while view:
        piece = view[:PAGE_WRITE]
        written = os.write(fd, piece) if offset is None else os.pwrite(fd, piece, offset)
        view = view[written:]
        if offset is not None:
            offset += written


@dataclass
class GcReport:
    """What garbage collection removed."""

    removed_partial: list[str] = field(default_factory=list)
    removed_objects: int = 0
    kept_in_progress: list[str] = field(default_factory=list)


def parse_manifest(dataset_id: str, raw: bytes) -> Manifest:
    """Parse stored manifest bytes; anything unreadable or mismatched is corruption."""
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise CorruptDataset(f"{dataset_id}: manifest is unreadable: {exc.errors()[0]['msg']}") from exc
    if manifest.dataset_id != dataset_id:
        raise CorruptDataset(f"{dataset_id}: manifest names another dataset ({manifest.dataset_id})")
    return manifest


class DatasetStore(ABC):
    """Where datasets live. Subclasses implement the raw I/O; checks live here, once."""

    #: "local" or "minio", for messages.
    name: str = "store"
    workers: int = 8
    #: parallel downloads; on small hosts more threads cost more CPU per file than they gain
    get_workers: int = 8
    #: byte ranges fetched at once for one large file (1: one stream; only worth it over a network)
    ranged_parts: int = 1
    #: files at least this large are fetched in ranges
    ranged_min_bytes: int = 64 * 1024 * 1024

    # ---- raw I/O, per backend -------------------------------------------------------------
    @abstractmethod
    def exists(self, dataset_id: str) -> bool:
        """True when the dataset is committed (its manifest exists)."""

    @abstractmethod
    def _read_manifest_bytes(self, dataset_id: str) -> bytes:
        """The manifest's bytes; raise DatasetNotFound if it is absent."""

    @abstractmethod
    def _read_raw(self, dataset_id: str, path: str, offset: int, length: int | None) -> Iterator[bytes]:
        """Stream stored bytes of one file; raise CorruptDataset if the object is missing."""

    def _read_into(self, dataset_id: str, path: str, offset: int, length: int | None,
                   buffer: memoryview) -> Iterator[bytes | memoryview]:
        """``_read_raw`` for a caller that is done with each chunk before it asks for the next:
        a backend may fill ``buffer`` again and again instead of allocating every chunk."""
        return self._read_raw(dataset_id, path, offset, length)

    @abstractmethod
    def _put_files(
        self, dataset_id: str, files: list[SourceFile], record: DatasetRecord, progress: ProgressFn | None,
        revision: int = 1,
    ) -> Manifest:
        """Store files, then the record, then commit the manifest; first committer wins."""

    @abstractmethod
    def delete(self, dataset_id: str) -> None:
        """Remove a dataset: the manifest first (it vanishes at once), then its files."""

    @abstractmethod
    def ids(self) -> Iterator[str]:
        """Ids of every committed dataset."""

    @abstractmethod
    def exclusive(self, name: str, lost: threading.Event | None = None) -> contextlib.AbstractContextManager[bool]:
        """Try to hold a named lock (across processes and, for MinIO, machines) without waiting.

        Yields True while held, False if someone else holds it. A holder that dies releases it
        (flock) or lets it expire after the lease (MinIO). ``lost`` is set if the lock is taken
        over while held (a MinIO holder that could not renew it within the lease, e.g. paused).
        """

    @abstractmethod
    def gc(self) -> GcReport:
        """Remove what interrupted writers left behind; never touches a live writer's work."""

    # ---- shared behaviour -----------------------------------------------------------------
    def put(
        self, dataset_id: str, source: Path, record: DatasetRecord, progress: ProgressFn | None = None,
        revision: int = 1,
    ) -> Manifest:
        """Store directory ``source`` as dataset ``dataset_id``; a no-op if it already exists.

        ``revision`` is only for copies of an amended dataset (pull/push keep its number)."""
        check_dataset_id(dataset_id)
        if record.id != dataset_id:
            raise InvalidSource(f"record is for dataset {record.id}, not {dataset_id}")
        files = scan_source(source)
        if self.exists(dataset_id):
            return self.manifest(dataset_id)
        return self._put_files(dataset_id, files, record, progress, revision)

    def manifest(self, dataset_id: str, revision: int | None = None) -> Manifest:
        """The committed manifest (the latest, or revision ``revision`` of an amended dataset);
        DatasetNotFound if the dataset or that revision does not exist."""
        check_dataset_id(dataset_id)
        current = parse_manifest(dataset_id, self._read_manifest_bytes(dataset_id))
        if revision is None or revision == current.revision:
            return current
        raw = self._read_revision_bytes(dataset_id, revision) if 0 < revision < current.revision else None
        if raw is None:
            raise DatasetNotFound(f"{dataset_id} has no revision {revision} (latest is {current.revision})")
        older = parse_manifest(dataset_id, raw)
        if older.revision != revision:
            raise CorruptDataset(f"{dataset_id}: the manifest kept for revision {revision} says {older.revision}")
        return older

    def _read_revision_bytes(self, dataset_id: str, revision: int) -> bytes | None:
        """The manifest of an earlier revision, if this store keeps it (only MinIO amends datasets)."""
        return None

    def record(self, dataset_id: str) -> DatasetRecord:
        """``.nps/dataset.json``, checksum-verified."""
        raw = b"".join(self.read(dataset_id, RECORD_PATH))
        try:
            return DatasetRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise CorruptDataset(f"{dataset_id}: dataset.json is invalid: {exc.errors()[0]['msg']}") from exc

    def entry(self, dataset_id: str, path: str, manifest: Manifest | None = None) -> ManifestFile:
        """The manifest entry for ``path``; DatasetNotFound if the dataset has no such file."""
        check_relpath(path)
        manifest = manifest or self.manifest(dataset_id)
        found = manifest.file(path)
        if found is None:
            raise DatasetNotFound(f"{dataset_id} has no file {path!r}")
        return found

    def read(
        self, dataset_id: str, path: str, start: int = 0, end: int | None = None,
        manifest: Manifest | None = None,
    ) -> Iterator[bytes]:
        """Stream bytes ``[start, end)`` of one file. A whole-file read is checksum-verified:
        the last chunk is followed by CorruptDataset if the bytes do not match the manifest."""
        entry = self.entry(dataset_id, path, manifest)
        end = entry.size if end is None else min(end, entry.size)
        if start < 0 or start > end:
            raise ValueError(f"invalid byte range {start}-{end} for a file of {entry.size} bytes")
        whole = start == 0 and end == entry.size
        return self._verified(dataset_id, entry, start, end, whole)

    def _verified(
        self, dataset_id: str, entry: ManifestFile, start: int, end: int, whole: bool
    ) -> Iterator[bytes]:
        return self._checked(dataset_id, entry, start, end, whole,
                             self._read_raw(dataset_id, entry.path, start, end - start))

    def _checked(
        self, dataset_id: str, entry: ManifestFile, start: int, end: int, whole: bool, chunks: Iterable[_Chunk]
    ) -> Iterator[_Chunk]:
        """Pass ``chunks`` (bytes ``[start, end)`` of one file) through, then raise
        CorruptDataset if there were too few, or if a whole file's checksum differs."""
        algorithm, expected = entry.checksum
        digest = checksum.new(algorithm)
        seen = 0
        for chunk in chunks:
            seen += len(chunk)
            if whole:
                digest.update(chunk)
            yield chunk
        if seen != end - start:
            raise CorruptDataset(
                f"{dataset_id}/{entry.path}: expected {end - start} bytes, the store returned {seen}"
                " (truncated or replaced object)"
            )
        if whole and digest.hexdigest() != expected:
            raise CorruptDataset(
                f"{dataset_id}/{entry.path}: checksum mismatch (stored bytes are not what was written)"
            )

    def get(self, dataset_id: str, dest: Path, progress: ProgressFn | None = None,
            manifest: Manifest | None = None) -> Manifest:
        """Copy a whole dataset (``.nps/`` included) into empty or new directory ``dest``,
        verifying every file; the manifest is written last there too. ``manifest`` selects an
        earlier revision (from ``manifest(id, revision)``); default: the latest."""
        pinned = manifest
        manifest = manifest or self.manifest(dataset_id)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InvalidSource(f"{dest}: destination exists and is not an empty directory")
        dest.mkdir(parents=True, exist_ok=True)
        for folder in sorted({os.path.dirname(f.path) for f in manifest.files} - {""}):
            (dest / folder).mkdir(parents=True, exist_ok=True)  # once, not once per file
        # Partial files live in a private folder (no dataset path can collide with them) until
        # verified, then move into place.
        scratch = dest / f".nps-get-{uuid.uuid4().hex}"
        scratch.mkdir()
        try:
            with ThreadPoolExecutor(max_workers=self.get_workers) as pool:
                jobs = enumerate(manifest.files)
                for _ in pool.map(lambda n_f: self._get_file(dataset_id, n_f[1], dest, scratch / str(n_f[0]),
                                                             progress), jobs):
                    pass
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        (dest / MANIFEST_PATH).parent.mkdir(parents=True, exist_ok=True)
        raw = pinned.model_dump_json(by_alias=True).encode() if pinned else self._read_manifest_bytes(dataset_id)
        (dest / MANIFEST_PATH).write_bytes(raw)
        return manifest

    def _get_file(self, dataset_id: str, entry: ManifestFile, dest: Path, part: Path,
                  progress: ProgressFn | None) -> None:
        target = dest / entry.path
        try:
            if self.ranged_parts > 1 and entry.size >= self.ranged_min_bytes:
                self._get_ranged(dataset_id, entry, part, progress)
            else:
                chunks = (self._read_into(dataset_id, entry.path, 0, entry.size, memoryview(bytearray(CHUNK)))
                          if entry.size > CHUNK else self._read_raw(dataset_id, entry.path, 0, entry.size))
                fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
                try:
                    for chunk in self._checked(dataset_id, entry, 0, entry.size, True, chunks):
                        write_sliced(fd, chunk)
                        if progress:
                            progress(len(chunk))
                finally:
                    os.close(fd)
            os.replace(part, target)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def _get_ranged(self, dataset_id: str, entry: ManifestFile, part: Path, progress: ProgressFn | None) -> None:
        """A large file as parallel byte ranges, written in place by one thread (parallel writers
        contend in the kernel's page reclaim), then verified whole from the page cache: one
        stream is bound by one core's share of receiving and hashing."""
        size, parts = entry.size, self.ranged_parts
        step = -(-size // parts)
        chunks: queue.Queue[tuple[int, bytes] | BaseException | None] = queue.Queue(maxsize=4 * parts)

        def fetch(start: int) -> None:
            length, pos = min(step, size - start), start
            try:
                for chunk in self._read_raw(dataset_id, entry.path, start, length):
                    chunks.put((pos, chunk))
                    pos += len(chunk)
                if pos - start != length:
                    raise CorruptDataset(f"{dataset_id}/{entry.path}: expected {length} bytes at {start}, "
                                         f"the store returned {pos - start} (truncated or replaced object)")
                chunks.put(None)
            except BaseException as exc:
                chunks.put(exc)

        fd = os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        try:
            with ThreadPoolExecutor(max_workers=parts) as pool:
                starts = list(range(0, size, step))
                for start in starts:
                    pool.submit(fetch, start)
                running, failure = len(starts), None
                while running:
                    item = chunks.get()
                    if item is None or isinstance(item, BaseException):
                        running -= 1
                        failure = failure or (item if isinstance(item, BaseException) else None)
                        continue
                    if failure is not None:
                        continue  # drain, so no fetcher blocks on a full queue
                    pos, chunk = item
                    write_sliced(fd, chunk, pos)
                    if progress:
                        progress(len(chunk))
            if failure is not None:
                raise failure
        finally:
            os.close(fd)
        algorithm, expected = entry.checksum
        if checksum.file_digest_parallel(part, algorithm) != expected:
            raise CorruptDataset(
                f"{dataset_id}/{entry.path}: checksum mismatch (stored bytes are not what was written)")

    def verify(self, dataset_id: str) -> Manifest:
        """Read every file of a dataset and check it against the manifest."""
        manifest = self.manifest(dataset_id)
        for entry in manifest.files:
            for _ in self.read(dataset_id, entry.path, manifest=manifest):
                pass
        return manifest
