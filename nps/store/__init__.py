"""Dataset stores: one contract (``DatasetStore``), a local filesystem and a MinIO implementation;
both also keep small objects beside the datasets (``ObjectStore``)."""

from __future__ import annotations

from typing import Literal

from nps.config import Settings
from nps.store.base import DatasetStore, GcReport
from nps.store.local import LocalStore
from nps.store.objects import ObjectInfo, ObjectStore, StoredObject
from nps.store.source import SourceFile, hash_sources, scan_source, upload_dataset_id

__all__ = [
    "DatasetStore",
    "GcReport",
    "LocalStore",
    "ObjectInfo",
    "ObjectStore",
    "SourceFile",
    "StoredObject",
    "hash_sources",
    "open_store",
    "scan_source",
    "upload_dataset_id",
]


def open_store(settings: Settings, kind: Literal["local", "minio"] | None = None) -> DatasetStore:
    """The store named by ``kind`` (default: ``settings.store``)."""
    kind = kind or settings.store
    if kind == "local":
        return LocalStore(settings.home, workers=min(settings.transfer_workers, 8))
    from nps.store.minio import MinioStore  # imported lazily: the local store needs no network libs

    return MinioStore(settings)
