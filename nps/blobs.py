"""Small named objects beside the datasets (job records, logs, users and tokens, groups...),
kept through the store's object interface (``nps.store.objects``): in the MinIO bucket, or in
files under a local folder.

Keys are ``/``-separated and checked like dataset paths, so nothing escapes the store root.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from nps.errors import PreconditionFailed
from nps.store.folder import FolderObjects
from nps.store.objects import ObjectStore, StoredObject

if TYPE_CHECKING:
    from nps.store.minio import MinioStore


class Blobs:
    """Put, get, list and delete small objects by key."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` atomically (readers see the old or the new bytes)."""
        self.objects.put_object(key, data)

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file to ``key``."""
        self.objects.put_object_file(key, path)

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist; False if it did (nothing written)."""
        try:
            self.objects.put_object(key, data, if_absent=True)
        except PreconditionFailed:
            return False
        return True

    def get(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None."""
        found = self.objects.get_object(key)
        return found.data if found else None

    def get_versioned(self, key: str) -> StoredObject | None:
        """The bytes at ``key`` and the ETag of this version of them (for ``replace_if``), or None."""
        return self.objects.get_object(key)

    def replace_if(self, key: str, data: bytes, etag: str) -> bool:
        """Write ``key`` only if it still holds the version ``etag`` (nobody wrote it since it
        was read); False if it changed or is gone (nothing written): read it again and retry."""
        try:
            self.objects.put_object(key, data, if_match=etag)
        except PreconditionFailed:
            return False
        return True

    def children(self, prefix: str) -> Iterator[str]:
        """Names directly below folder ``prefix`` (no trailing slash)."""
        folder = prefix + "/"
        for info in self.objects.list_objects(folder, recursive=False):
            name = info.key[len(folder):].rstrip("/")
            if not name.startswith("."):  # earlier local writers staged files as hidden names here
                yield name

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self.objects.delete_object(key)


class LocalBlobs(Blobs):
    """Blobs as files under a root folder."""

    def __init__(self, root: Path) -> None:
        super().__init__(FolderObjects(root))
        self.root = root


class MinioBlobs(Blobs):
    """Blobs as objects in the MinIO store's bucket."""

    def __init__(self, store: MinioStore) -> None:
        super().__init__(store)
        self.store = store
