"""Content addressing: dataset ids and canonical JSON. Pure functions, no I/O.

The definitions live in ``schemas.hashing``: how an id is computed is part of the contract
(another program must get the same ids), and ``schemas`` depends on nothing of NPS. NPS code
imports them from here.
"""

from schemas.hashing import (
    DATASET_ID_RE,
    canonical_json,
    check_dataset_id,
    is_dataset_id,
    json_dataset_id,
    normalize_uid,
    series_dataset_id,
    sha1_hex,
)

__all__ = [
    "DATASET_ID_RE",
    "canonical_json",
    "check_dataset_id",
    "is_dataset_id",
    "json_dataset_id",
    "normalize_uid",
    "series_dataset_id",
    "sha1_hex",
]
