"""Test helpers that reach under a store's contract, to damage it on purpose."""

from __future__ import annotations

from pathlib import Path

from nps.layout import dataset_prefix
from nps.store import DatasetStore, LocalStore, hash_sources, scan_source, upload_dataset_id
from nps.store.objects import ObjectStore
from schemas.dataset import DatasetRecord, UploadOrigin


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def put_dir(store: DatasetStore, source: Path) -> str:
    """Put ``source`` under its content id, as ``nps put`` does; return the id."""
    files = scan_source(source)
    sums = hash_sources(files, 4)
    dataset_id = upload_dataset_id((f.path, f.size, h) for f, h in zip(files, sums, strict=True))
    store.put(dataset_id, source, record(dataset_id, source))
    return dataset_id


def record(dataset_id: str, source: Path) -> DatasetRecord:
    return DatasetRecord(id=dataset_id, origin=UploadOrigin(source=str(source)))


def object_key(dataset_id: str, path: str = "") -> str:
    """The object key of a file of a dataset (both stores share the layout)."""
    return f"{dataset_prefix(dataset_id)}/{path}"


def overwrite_stored(store: DatasetStore, dataset_id: str, path: str, data: bytes) -> None:
    """Replace the stored bytes of one file behind the store's back (through its object interface)."""
    assert isinstance(store, ObjectStore)
    store.put_object(object_key(dataset_id, path), data)


def remove_stored(store: DatasetStore, dataset_id: str, path: str) -> None:
    assert isinstance(store, ObjectStore)
    store.delete_object(object_key(dataset_id, path))


def stored_keys(store: DatasetStore, dataset_id: str) -> list[str]:
    """Everything physically present for a dataset id (committed or not)."""
    if isinstance(store, LocalStore):
        root = store.path(dataset_id)
        found = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()] if root.exists() else []
        staging = [str(p) for p in store.tmp.glob(f"put-{dataset_id}-*")] if store.tmp.exists() else []
        return found + staging
    assert isinstance(store, ObjectStore)
    return [o.key for o in store.list_objects(object_key(dataset_id))]
