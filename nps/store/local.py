"""The local filesystem store: ``$NPS_HOME/datasets/a/b/c/d/<id>/``.

A put copies into a private staging folder under ``$NPS_HOME/tmp/``, writes the manifest
last, then renames the folder into place. ``rename(2)`` is atomic and refuses to replace a
non-empty folder, so a reader sees all of a dataset or nothing, and of two concurrent
writers exactly one wins. A writer holds an flock on its staging folder's lock file; ``gc``
removes staging folders whose lock is free (their writer died). Small objects beside the
datasets (job records...) are files under the same home (``FolderObjects``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nps.errors import CorruptDataset, DatasetNotFound, InvalidSource
from nps.hashing import check_dataset_id, is_dataset_id
from nps.layout import MANIFEST_PATH, RECORD_PATH, check_relpath, dataset_prefix
from nps.locks import held, is_free
from nps.store.base import DatasetStore, GcReport
from nps.store.folder import FolderObjects
from nps.store.source import CHUNK, HashingReader, ProgressFn, SourceFile
from schemas.dataset import DatasetRecord
from schemas.manifest import Manifest, ManifestFile


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


class LocalStore(DatasetStore, FolderObjects):
    """Datasets as folders on a local filesystem (the air-gapped ``nps run`` store); objects
    as files beside them."""

    name = "local"

    def __init__(self, home: Path, workers: int = 8) -> None:
        FolderObjects.__init__(self, home)
        self.home = home
        self.workers = workers

    def path(self, dataset_id: str) -> Path:
        """The folder of a dataset (whether or not it exists)."""
        return self.home / dataset_prefix(dataset_id)

    def exists(self, dataset_id: str) -> bool:
        return (self.path(dataset_id) / MANIFEST_PATH).is_file()

    def _read_manifest_bytes(self, dataset_id: str) -> bytes:
        try:
            return (self.path(dataset_id) / MANIFEST_PATH).read_bytes()
        except FileNotFoundError:
            raise DatasetNotFound(f"dataset {dataset_id} not found in the local store ({self.home})") from None

    def _read_raw(self, dataset_id: str, path: str, offset: int, length: int | None) -> Iterator[bytes]:
        try:
            fh = (self.path(dataset_id) / path).open("rb")
        except FileNotFoundError:
            raise CorruptDataset(f"{dataset_id}/{path}: listed in the manifest but missing") from None
        with fh:
            fh.seek(offset)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    # ---- writing ----------------------------------------------------------------------------
    def _put_files(
        self, dataset_id: str, files: list[SourceFile], record: DatasetRecord, progress: ProgressFn | None,
        revision: int = 1,
    ) -> Manifest:
        self.tmp.mkdir(parents=True, exist_ok=True)
        staging = self.tmp / f"put-{dataset_id}-{uuid.uuid4().hex}"
        with held(staging.with_name(staging.name + ".lock")):  # gc: a free lock means a dead writer
            try:
                staging.mkdir()
                with ThreadPoolExecutor(max_workers=self.workers) as pool:
                    entries = list(pool.map(lambda f: self._copy_in(f, staging, progress), files))
                record_bytes = record.model_dump_json(by_alias=True, indent=2).encode()
                _write_durably(staging / RECORD_PATH, record_bytes)
                entries.append(ManifestFile(path=RECORD_PATH, size=len(record_bytes),
                                            blake3=HashingReader.digest_of(record_bytes)))
                manifest = Manifest(dataset_id=dataset_id, revision=revision, files=tuple(entries))
                _write_durably(staging / MANIFEST_PATH, manifest.model_dump_json(by_alias=True).encode())
                for d in {(staging / e.path).parent for e in entries} | {staging}:
                    _fsync_dir(d)
                return self._commit(dataset_id, staging, manifest)
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)

    def _copy_in(self, src: SourceFile, staging: Path, progress: ProgressFn | None) -> ManifestFile:
        target = staging / src.path
        target.parent.mkdir(parents=True, exist_ok=True)
        with src.abspath.open("rb") as fin, target.open("xb") as fout:
            reader = HashingReader(fin, progress)
            while chunk := reader.read(CHUNK):
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if reader.size != src.size:
            raise InvalidSource(f"{src.path}: file changed while being stored ({src.size} -> {reader.size} bytes)")
        os.chmod(target, 0o444)  # immutable by convention; delete() restores write access
        return ManifestFile(path=src.path, size=reader.size, blake3=reader.digest.hexdigest())

    def _commit(self, dataset_id: str, staging: Path, manifest: Manifest) -> Manifest:
        final = self.path(dataset_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            return self.manifest(dataset_id)  # another writer committed first: theirs stands
        _fsync_dir(final.parent)
        return manifest

    @contextlib.contextmanager
    def exclusive(self, name: str, lost: threading.Event | None = None) -> Iterator[bool]:  # flock: never lost
        lock = self.home / "locks" / f"{check_relpath(name)}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    # ---- removing -----------------------------------------------------------------------------
    def delete(self, dataset_id: str) -> None:
        check_dataset_id(dataset_id)
        final = self.path(dataset_id)
        if not final.exists():
            raise DatasetNotFound(f"dataset {dataset_id} not found in the local store ({self.home})")
        self.tmp.mkdir(parents=True, exist_ok=True)
        doomed = self.tmp / f"del-{dataset_id}-{uuid.uuid4().hex}"
        os.rename(final, doomed)  # atomic: the dataset disappears whole
        _remove_tree(doomed)

    def ids(self) -> Iterator[str]:
        root = self.home / "datasets"
        for manifest in sorted(root.glob(f"*/*/*/*/*/{MANIFEST_PATH}")):
            candidate = manifest.parent.parent.name
            if is_dataset_id(candidate):
                yield candidate

    def gc(self) -> GcReport:
        report = GcReport()
        if not self.tmp.is_dir():
            return report
        for entry in sorted(self.tmp.iterdir()):
            if entry.name.endswith(".lock") or not entry.is_dir():
                continue
            lock = entry.with_name(entry.name + ".lock")
            if entry.name.startswith("put-") and not is_free(lock):
                report.kept_in_progress.append(entry.name)
                continue
            _remove_tree(entry)
            lock.unlink(missing_ok=True)
            report.removed_partial.append(entry.name)
        return report


def _remove_tree(path: Path) -> None:
    for d, _, names in os.walk(path):
        os.chmod(d, 0o755)
        for n in names:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(os.path.join(d, n), 0o644)
    shutil.rmtree(path)
