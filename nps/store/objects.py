"""The object contract: small named objects beside the datasets (job records, users and tokens,
groups, quarantined instances, series manifests). Two real implementations, like the dataset
store's: the MinIO bucket (``MinioStore``) and a folder (``FolderObjects``, the local store's).

Keys are ``/``-separated relative paths, checked like dataset paths (``nps.layout.check_relpath``)
so none escapes the store's root. Writes are atomic (a reader sees the old bytes or the new
ones); a conditional write that finds the object not as required raises ``PreconditionFailed``.
Every failure is an NPS error: no vendor type or error crosses this interface.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nps.layout import MAX_COMPONENT_BYTES, MAX_PATH_BYTES, check_relpath

# Keys of plain ASCII names pass this in about a microsecond; anything else gets the full check
# (check_relpath takes ten times as long, and DICOM receiving writes one key per instance).
_PLAIN_KEY = re.compile(
    rf"(?:(?!\.\.?/)[A-Za-z0-9._+=@,-]{{1,{MAX_COMPONENT_BYTES}}}/)*"
    rf"(?!\.\.?$)[A-Za-z0-9._+=@,-]{{1,{MAX_COMPONENT_BYTES}}}")


def check_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise InvalidPath."""
    if len(key) <= MAX_PATH_BYTES and _PLAIN_KEY.fullmatch(key):
        return key
    return check_relpath(key)


def check_prefix(prefix: str) -> str:
    """Return a listing prefix (``""``, a key, or a key and a trailing ``/``) if it is safe."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and the ETag that names this version of it (for ``if_match``)."""

    data: bytes
    etag: str


@dataclass(frozen=True)
class ObjectInfo:
    """What the store says of an object without reading it.

    A non-recursive listing also gives the folders directly below its prefix: their key ends
    with ``/`` and their size is 0. Listings leave ``etag`` out (the local store would have to
    read every object for it); ``stat_object`` gives it. ``metadata`` holds the user metadata
    MinIO keeps with an object (``MinioStore.put_stream``), names in lower case; the local
    store keeps none."""

    key: str
    size: int
    modified: datetime | None = None
    etag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_folder(self) -> bool:
        """True for a folder of a non-recursive listing."""
        return self.key.endswith("/")


class ObjectStore(ABC):
    """Put, get, list and delete objects by key, with conditional writes."""

    @abstractmethod
    def put_object(self, key: str, data: bytes, *, if_absent: bool = False, if_match: str | None = None) -> str:
        """Write ``data`` at ``key``; return its ETag. ``if_absent``: only if there is no object
        there; ``if_match``: only if the object's ETag is still that one. A failed condition
        raises PreconditionFailed and writes nothing."""

    @abstractmethod
    def put_object_file(self, key: str, path: Path) -> None:
        """Write the bytes of local file ``path`` at ``key`` (streamed: the file may be large)."""

    @abstractmethod
    def get_object(self, key: str) -> StoredObject | None:
        """The object's bytes and ETag, or None if there is none."""

    @abstractmethod
    def get_object_file(self, key: str, dest: Path) -> bool:
        """Copy the object into file ``dest`` (streamed; ``dest`` appears whole or not at all);
        False if there is no such object."""

    @abstractmethod
    def stat_object(self, key: str) -> ObjectInfo | None:
        """Size, ETag, modification time and metadata of an object, or None if there is none."""

    @abstractmethod
    def list_objects(self, prefix: str, recursive: bool = True) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order. Not ``recursive``: those
        directly below it and its sub-folders (see ``ObjectInfo``), in no promised order
        (MinIO sends a page's objects, then its folders)."""

    @abstractmethod
    def delete_object(self, key: str) -> None:
        """Remove the object at ``key`` if there is one."""


def check_condition(if_absent: bool, if_match: str | None) -> None:
    """Refuse a write that asks for two contradictory conditions."""
    if if_absent and if_match is not None:
        raise ValueError("a write is either for an absent object or for a known version, not both")
