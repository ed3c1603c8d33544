"""Objects as files under a folder: the local store's side of the object contract.

A write goes to a private file in ``<root>/tmp/`` first, then ``rename(2)`` (or ``link(2)``
for ``if_absent``, which refuses an existing name) puts it in place at once. Writes and
deletes hold an flock on ``<root>/tmp/objects.lock``, so an ``if_match`` write compares the
ETag and replaces the file with nobody writing in between; reads take no lock. A folder
vanishes with its last object, as a prefix does in a bucket. The ETag is the MD5 of the
content, as S3 gives it for an object written in one request.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from nps.errors import PreconditionFailed
from nps.store.objects import ObjectInfo, ObjectStore, StoredObject, check_condition, check_key, check_prefix

LOCK_NAME = "objects.lock"
STAGED_PREFIX = "obj-"


def etag_of(data: bytes) -> str:
    """The ETag of an object with these bytes."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class FolderObjects(ObjectStore):
    """The object contract on a local folder (``root``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"

    def _object_path(self, key: str) -> Path:
        return self.root / check_key(key)

    # ---- writing -------------------------------------------------------------------------------
    def put_object(self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        check_condition(if_absent, if_match)
        path = self._object_path(key)
        staged = self._staged()
        try:
            _write_new(staged, data)
            self._place(key, path, staged, if_absent, if_match)
        finally:
            staged.unlink(missing_ok=True)
        return etag_of(data)

    def put_object_file(self, key: str, path: Path) -> None:
        target = self._object_path(key)
        staged = self._staged()
        try:
            shutil.copyfile(path, staged)
            self._place(key, target, staged, False, None)
        finally:
            staged.unlink(missing_ok=True)

    def _staged(self) -> Path:
        self.tmp.mkdir(parents=True, exist_ok=True)
        return self.tmp / f"{STAGED_PREFIX}{uuid.uuid4().hex}"

    def _place(self, key: str, path: Path, staged: Path, if_absent: bool, if_match: str | None) -> None:
        with self._locked():
            path.parent.mkdir(parents=True, exist_ok=True)
            if if_absent:
                try:
                    os.link(staged, path)  # atomic, and refuses a name that exists
                except FileExistsError:
                    raise PreconditionFailed(f"{key} already exists") from None
                return
            if if_match is not None and _etag_at(path) != if_match:
                raise PreconditionFailed(f"{key} is not the version {if_match} any more (or is gone)")
            os.replace(staged, path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store-wide write lock (held for a rename or two: not worth one per folder)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.tmp / LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the kernel if we die
            yield
        finally:
            os.close(fd)

    def delete_object(self, key: str) -> None:
        path = self._object_path(key)
        with self._locked():
            try:
                path.unlink()
            except (FileNotFoundError, IsADirectoryError):
                return
            _remove_empty_parents(path.parent, self.root)

    # ---- reading -------------------------------------------------------------------------------
    def get_object(self, key: str) -> StoredObject | None:
        try:
            data = self._object_path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        return StoredObject(data, etag_of(data))

    def get_object_file(self, key: str, dest: Path) -> bool:
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            shutil.copyfile(self._object_path(key), partial)
            os.replace(partial, dest)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if not dest.parent.is_dir():
                raise
            return False
        finally:
            partial.unlink(missing_ok=True)
        return True

    def stat_object(self, key: str) -> ObjectInfo | None:
        path = self._object_path(key)
        try:
            st = path.stat()
            etag = _etag_at(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if etag is None:
            return None
        return ObjectInfo(key, st.st_size, _modified(st.st_mtime), etag)

    def list_objects(self, prefix: str, recursive: bool = True) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        folder, _, start = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        keys = f"{folder}/" if folder else ""
        found = sorted(self._entries(base, keys, start, recursive), key=lambda info: info.key)
        yield from found

    def _entries(self, base: Path, keys: str, start: str, recursive: bool) -> Iterator[ObjectInfo]:
        try:
            with os.scandir(base) as found:
                entries = list(found)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if not entry.name.startswith(start) or Path(entry.path) == self.tmp:
                continue  # tmp/ is the store's own scratch space, not objects
            key = keys + entry.name
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    yield from self._entries(Path(entry.path), key + "/", "", True)
                elif _not_empty(entry.path):
                    yield ObjectInfo(key + "/", 0)
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                yield ObjectInfo(key, st.st_size, _modified(st.st_mtime))


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _etag_at(path: Path) -> str | None:
    try:
        return etag_of(path.read_bytes())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _modified(mtime: float) -> datetime:
    return datetime.fromtimestamp(mtime, UTC)


def _not_empty(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is not None


def _remove_empty_parents(folder: Path, root: Path) -> None:
    while folder != root and root in folder.parents:
        try:
            folder.rmdir()
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                return
            raise
        folder = folder.parent
