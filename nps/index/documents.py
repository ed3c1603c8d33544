"""What a dataset looks like in the index. Pure functions: no I/O.

Explicit mappings for the fields NPS itself writes; a job's own ``/output/.nps/metadata.json``
lands under ``metadata.*`` where strings are keyword (exact, sortable) with a ``.text``
sub-field (full text), and numbers and dates keep their types.
"""

from __future__ import annotations

from typing import Any

from schemas.dataset import DatasetRecord, ResultOrigin, SeriesOrigin
from schemas.manifest import Manifest

METADATA_PATH = ".nps/metadata.json"
METADATA_LIMIT_BYTES = 1024 * 1024


def index_mappings() -> dict[str, Any]:
    """Settings and mappings of the datasets index."""
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0,
                     "analysis": {"normalizer": {"lower": {"type": "custom", "filter": ["lowercase"]}}}},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": {"type": "keyword"},
                "kind": {"type": "keyword"},
                "project": {"type": "keyword"},
                "created_at": {"type": "date"},
                "revision": {"type": "integer"},
                "files": {"type": "integer"},
                "bytes": {"type": "long"},
                "inputs": {"type": "keyword"},
                "series_instance_uid": {"type": "keyword"},
                "job": {"properties": {
                    "image": {"type": "keyword"},
                    "command": {"type": "keyword", "fields": {"text": {"type": "text"}}},
                    "exit_code": {"type": "integer"},
                    "duration_s": {"type": "float"},
                    "peak_memory_mb": {"type": "float"},
                    "host": {"type": "keyword"},
                    "finished_at": {"type": "date"},
                }},
                "metadata_error": {"type": "keyword"},
                "metadata": {
                    "type": "object",
                    "dynamic": True,
                },
            },
            "dynamic_templates": [
                {"metadata_strings": {
                    "path_match": "metadata.*",
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 1024, "normalizer": "lower",
                                "fields": {"text": {"type": "text"}}},
                }},
            ],
        },
    }


def dataset_document(record: DatasetRecord, manifest: Manifest, metadata: dict[str, Any] | None,
                     metadata_error: str | None = None) -> dict[str, Any]:
    """The index document of one dataset."""
    doc: dict[str, Any] = {
        "id": record.id,
        "kind": record.kind,
        "project": record.project,
        "created_at": record.created_at.isoformat(),
        "revision": manifest.revision,
        "files": sum(1 for f in manifest.files if not f.path.startswith(".nps/")),
        "bytes": manifest.total_size,
        "inputs": [i.dataset for i in record.inputs],
    }
    origin = record.origin
    if isinstance(origin, SeriesOrigin):
        doc["series_instance_uid"] = origin.series_instance_uid
    if isinstance(origin, ResultOrigin):
        doc["job"] = {
            "image": origin.job.image,
            "command": list(origin.job.command),
            "exit_code": origin.exit_code,
            "duration_s": origin.duration_s,
            "peak_memory_mb": origin.peak_memory_mb,
            "host": origin.host,
            "finished_at": origin.finished_at.isoformat() if origin.finished_at else None,
        }
    if metadata is not None:
        doc["metadata"] = metadata
    if metadata_error:
        doc["metadata_error"] = metadata_error
    return doc


def parse_metadata(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """A job's metadata.json: (object, None), or (None, why it was not indexed)."""
    import json

    if len(raw) > METADATA_LIMIT_BYTES:
        return None, f"metadata.json larger than {METADATA_LIMIT_BYTES} bytes"
    try:
        value = json.loads(raw)
    except ValueError as exc:
        return None, f"metadata.json is not valid JSON: {exc}"
    except RecursionError:
        return None, "metadata.json is nested too deeply"
    if not isinstance(value, dict):
        return None, "metadata.json must hold a JSON object"
    return value, None
