"""Where things live inside a store, and which paths inside a dataset are safe. Pure functions.

The path rule (``check_relpath``) is part of the contract and is defined in ``schemas.paths``;
it is re-exported here so NPS code finds every layout rule in one place.
"""

from __future__ import annotations

from nps.hashing import check_dataset_id
from schemas.paths import MAX_COMPONENT_BYTES, MAX_PATH_BYTES, check_relpath

__all__ = [
    "DATASETS_PREFIX",
    "MANIFEST_PATH",
    "MAX_COMPONENT_BYTES",
    "MAX_PATH_BYTES",
    "META_DIR",
    "RECORD_PATH",
    "RESERVED_PATHS",
    "REVISIONS_DIR",
    "check_relpath",
    "dataset_prefix",
    "revision_path",
]

DATASETS_PREFIX = "datasets"
META_DIR = ".nps"
RECORD_PATH = ".nps/dataset.json"
MANIFEST_PATH = ".nps/manifest.json"
REVISIONS_DIR = ".nps/revisions"
# Written by the store itself; a user's directory may not bring its own.
RESERVED_PATHS = frozenset({RECORD_PATH, MANIFEST_PATH, ".nps/claim.json"})


def dataset_prefix(dataset_id: str) -> str:
    """``datasets/a/b/c/d/<id>``: the dataset's folder (filesystem) or key prefix (MinIO)."""
    check_dataset_id(dataset_id)
    return "/".join((DATASETS_PREFIX, *dataset_id[:4], dataset_id))


def revision_path(revision: int) -> str:
    """Where the manifest of revision ``revision`` is kept (amended datasets keep every one)."""
    if revision < 1:
        raise ValueError(f"revision must be >= 1, not {revision}")
    return f"{REVISIONS_DIR}/r{revision}.json"
