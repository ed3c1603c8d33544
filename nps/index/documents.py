"""What a dataset looks like in the index. Pure functions: no I/O.

Explicit mappings for the fields NPS itself writes; a job's own ``/output/.nps/metadata.json``
lands under ``metadata.*`` where strings are keyword (exact, sortable) with a ``.text``
sub-field (full text), and numbers and dates keep their types.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from typing import Any

from schemas.dataset import DatasetRecord, ResultOrigin, SeriesOrigin
from schemas.manifest import Manifest
from schemas.series import SeriesSummary

METADATA_PATH = ".nps/metadata.json"
METADATA_LIMIT_BYTES = 1024 * 1024
MAX_GROUP_MEMBERS = 500_000  # a group's members filter searches server-side (a terms lookup)

# Names and descriptions: exact and sortable, case-insensitive, and full text under ``.text``.
_TEXT = {"type": "keyword", "ignore_above": 1024, "normalizer": "lower", "fields": {"text": {"type": "text"}}}
_CODE = {"type": "keyword", "ignore_above": 1024}
_FLOAT, _INT, _DATE, _BOOL = {"type": "float"}, {"type": "integer"}, {"type": "date"}, {"type": "boolean"}

#: Fields of an imported series, at the top level of its document (``modality:MR``).
SERIES_FIELDS: dict[str, dict[str, Any]] = {
    "patient_name": _TEXT, "patient_id": _CODE, "patient_sex": _CODE, "patient_birth_date": _DATE,
    "patient_age": _FLOAT,
    "study_instance_uid": _CODE, "study_datetime": _DATE, "study_description": _TEXT, "accession_number": _CODE,
    "referring_physician": _TEXT, "institution": _TEXT,
    "series_number": _INT, "series_description": _TEXT, "modality": _CODE, "protocol_name": _TEXT,
    "body_part": _CODE, "manufacturer": _TEXT, "manufacturer_model": _TEXT, "station_name": _CODE,
    "software_versions": _CODE, "field_strength": _FLOAT, "sequence_name": _CODE, "scanning_sequence": _CODE,
    "sequence_variant": _CODE, "image_type": _CODE, "acquisition_type": _CODE, "repetition_time": _FLOAT,
    "echo_time": _FLOAT, "inversion_time": _FLOAT, "flip_angle": _FLOAT, "slice_thickness": _FLOAT,
    "pixel_spacing": _FLOAT, "rows": _INT, "columns": _INT,
    "number_of_instances": _INT, "acquisition_datetime": _DATE, "is_diffusion": _BOOL, "b_values": _FLOAT,
    "classification": _CODE, "sop_class_uids": _CODE,
}


def index_mappings() -> dict[str, Any]:
    """Settings and mappings of the datasets index."""
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0, "max_terms_count": MAX_GROUP_MEMBERS,
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
                "processor": {"type": "keyword"},
                "processor_target": {"type": "keyword"},
                **SERIES_FIELDS,
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
                "user": {  # user metadata layers, merged (nps/layers.py)
                    "type": "object",
                    "dynamic": True,
                },
            },
            "dynamic_templates": [
                *({f"{root}_strings": {
                    "path_match": f"{root}.*",
                    "match_mapping_type": "string",
                    "mapping": {"type": "keyword", "ignore_above": 1024, "normalizer": "lower",
                                "fields": {"text": {"type": "text"}}},
                }} for root in ("metadata", "user")),
            ],
        },
    }


def dataset_document(record: DatasetRecord, manifest: Manifest, metadata: dict[str, Any] | None,
                     metadata_error: str | None = None, series: SeriesSummary | None = None) -> dict[str, Any]:
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
        if series is not None:
            doc.update(series_fields(series))
    if isinstance(origin, ResultOrigin):
        made_by = origin.job.parameters.get("nps.processor")
        if isinstance(made_by, str):  # a processor's job: which rule, for which target
            doc["processor"] = made_by.split("@", 1)[0]
            doc["processor_target"] = str(origin.job.parameters.get("nps.target") or "")
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


def series_fields(series: SeriesSummary) -> dict[str, Any]:
    """A series summary as typed top-level fields; a value that does not fit its type is left out."""
    values: dict[str, Any] = {**series.fields, "number_of_instances": series.number_of_instances,
                              "acquisition_datetime": series.acquisition_datetime,
                              "is_diffusion": series.is_diffusion, "b_values": list(series.b_values),
                              "classification": series.classification, "sop_class_uids": list(series.sop_class_uids)}
    out: dict[str, Any] = {}
    for name, mapping in SERIES_FIELDS.items():
        value = _coerce(values.get(name), mapping["type"])
        if value is not None and value != []:
            out[name] = value
    return out


def _coerce(value: Any, kind: str) -> Any:
    if isinstance(value, list):
        items = [_coerce(v, kind) for v in value]
        return [v for v in items if v is not None]
    if value is None:
        return None
    try:
        if kind == "float":
            number = float(value)
            return number if math.isfinite(number) else None
        if kind == "integer":
            number = float(value)
            return int(number) if number.is_integer() and abs(number) < 2**31 else None
        if kind == "boolean":
            return bool(value)
        if kind == "date":
            text = str(value)
            (datetime if "T" in text else date).fromisoformat(text)
            return text
    except (TypeError, ValueError, OverflowError):
        return None
    return str(value)[:1024]
