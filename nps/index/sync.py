"""Reading a dataset from the store into its index document (the indexer's and reindex's work)."""

from __future__ import annotations

from typing import Any

from nps.errors import CorruptDataset
from nps.index.documents import METADATA_LIMIT_BYTES, METADATA_PATH, dataset_document, parse_metadata
from nps.layers import Layers, merged
from nps.store import DatasetStore
from schemas.series import SeriesSummary, summary_path


def document_from_store(store: DatasetStore, dataset_id: str, layers: Layers | None = None) -> dict[str, Any]:
    """The index document of a committed dataset, with its job's metadata.json if it has one
    and the merged user metadata ``layers`` hold for it."""
    manifest = store.manifest(dataset_id)
    record = store.record(dataset_id)
    metadata = error = None
    entry = manifest.file(METADATA_PATH)
    if entry is not None:
        if entry.size > METADATA_LIMIT_BYTES:
            error = f"metadata.json larger than {METADATA_LIMIT_BYTES} bytes"
        else:
            metadata, error = parse_metadata(b"".join(store.read(dataset_id, METADATA_PATH, manifest=manifest)))
    series = None
    summary = manifest.file(summary_path(manifest.revision))
    if summary is not None:
        raw = b"".join(store.read(dataset_id, summary.path, manifest=manifest))
        try:
            series = SeriesSummary.model_validate_json(raw)
        except ValueError as exc:
            raise CorruptDataset(f"{dataset_id}: {summary.path} is unreadable: {exc}") from exc
    doc = dataset_document(record, manifest, metadata, error, series)
    user = merged(layers.list(dataset_id)) if layers is not None else {}
    if user:
        doc["user"] = user
    return doc
