"""Small named objects beside the datasets (job records, logs): the same two backends as the store.

Keys are ``/``-separated and checked like dataset paths, so nothing escapes the store root.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from nps.layout import check_relpath

if TYPE_CHECKING:
    from nps.store.minio import MinioStore


class Blobs(ABC):
    """Put, get, list and delete small objects by key."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (readers see the old or the new bytes)."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file to ``key``."""

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False if it did (nothing written)."""

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None."""

    @abstractmethod
    def children(self, prefix: str) -> Iterator[str]:
        """Names directly below folder ``prefix`` (no trailing slash)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""


class LocalBlobs(Blobs):
    """Blobs as files under a root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_relpath(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def put_file(self, key: str, path: Path) -> None:
        self.put(key, path.read_bytes())

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def children(self, prefix: str) -> Iterator[str]:
        folder = self._path(prefix)
        if folder.is_dir():
            yield from sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()


class MinioBlobs(Blobs):
    """Blobs as objects in the MinIO store's bucket."""

    def __init__(self, store: MinioStore) -> None:
        self.store = store

    def put(self, key: str, data: bytes) -> None:
        self.store.ensure_bucket()
        with self.store._s3(f"writing {key}"):
            self.store.client.put_object(self.store.bucket, check_relpath(key), io.BytesIO(data), len(data))

    def put_file(self, key: str, path: Path) -> None:
        self.store.ensure_bucket()
        with self.store._s3(f"writing {key}"):
            self.store.client.fput_object(self.store.bucket, check_relpath(key), str(path))

    def create(self, key: str, data: bytes) -> bool:
        self.store.ensure_bucket()
        with self.store._s3(f"writing {key}"):
            return self.store._put_bytes(check_relpath(key), data, if_none_match=True) is not None

    def get(self, key: str) -> bytes | None:
        with self.store._s3(f"reading {key}"):
            return self.store._get_bytes(check_relpath(key))

    def children(self, prefix: str) -> Iterator[str]:
        with self.store._s3(f"listing {prefix}"):
            for obj in self.store.client.list_objects(self.store.bucket, prefix=check_relpath(prefix) + "/"):
                yield obj.object_name.rstrip("/").rsplit("/", 1)[-1]

    def delete(self, key: str) -> None:
        with self.store._s3(f"deleting {key}"):
            self.store.client.remove_object(self.store.bucket, check_relpath(key))
