"""Content addressing: dataset ids and canonical JSON. Pure functions, no I/O.

- An imported series is ``sha1(SeriesInstanceUID)``: the UID as ASCII, DICOM padding removed.
- A job result is ``sha1(canonical_json(spec))``.
- Canonical JSON is UTF-8, keys sorted by code point, separators ``,`` and ``:``, no
  NaN/Infinity, no insignificant whitespace. Two machines building the same value get the
  same bytes, whatever their JSON library's defaults.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from schemas.errors import InvalidDatasetId

DATASET_ID_RE = re.compile(r"^[0-9a-f]{40}$")
# DICOM PS3.5 9.1: components of digits separated by '.', at most 64 characters.
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def sha1_hex(data: bytes) -> str:
    """Hex SHA-1 of ``data``."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def canonical_json(value: Any) -> bytes:
    """Serialise ``value`` to canonical JSON bytes (see module docstring).

    Raises ValueError for NaN/Infinity and TypeError for values JSON cannot represent.
    """
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def normalize_uid(uid: str) -> str:
    """Strip DICOM padding (trailing NUL or space) and check the UID grammar.

    Raises ValueError naming the problem, so an importer can quarantine with a reason.
    """
    cleaned = uid.rstrip("\x00 ")
    if not cleaned:
        raise ValueError("empty UID")
    if len(cleaned) > 64:
        raise ValueError(f"UID longer than 64 characters: {cleaned[:70]!r}")
    if not _UID_RE.match(cleaned):
        raise ValueError(f"UID must be digits separated by dots: {cleaned!r}")
    return cleaned


def series_dataset_id(series_instance_uid: str) -> str:
    """Dataset id of an imported series: ``sha1`` of its SeriesInstanceUID as ASCII."""
    return sha1_hex(normalize_uid(series_instance_uid).encode("ascii"))


def json_dataset_id(value: Any) -> str:
    """Dataset id of a JSON value (a job spec): ``sha1(canonical_json(value))``."""
    return sha1_hex(canonical_json(value))


def is_dataset_id(text: str) -> bool:
    """True when ``text`` is 40 lowercase hex characters."""
    return bool(DATASET_ID_RE.match(text))


def check_dataset_id(text: str) -> str:
    """Return ``text`` if it is a dataset id, else raise InvalidDatasetId with a clear message."""
    if not is_dataset_id(text):
        raise InvalidDatasetId(f"not a dataset id (expected 40 lowercase hex characters): {text!r}")
    return text
