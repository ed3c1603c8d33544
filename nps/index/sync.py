"""Reading a dataset from the store into its index document (the indexer's and reindex's work)."""

from __future__ import annotations

from typing import Any

from nps.index.documents import METADATA_LIMIT_BYTES, METADATA_PATH, dataset_document, parse_metadata
from nps.store import DatasetStore


def document_from_store(store: DatasetStore, dataset_id: str) -> dict[str, Any]:
    """The index document of a committed dataset, with its job's metadata.json if it has one."""
    manifest = store.manifest(dataset_id)
    record = store.record(dataset_id)
    metadata = error = None
    entry = manifest.file(METADATA_PATH)
    if entry is not None:
        if entry.size > METADATA_LIMIT_BYTES:
            error = f"metadata.json larger than {METADATA_LIMIT_BYTES} bytes"
        else:
            metadata, error = parse_metadata(b"".join(store.read(dataset_id, METADATA_PATH, manifest=manifest)))
    return dataset_document(record, manifest, metadata, error)
