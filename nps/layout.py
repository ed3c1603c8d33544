"""Where things live inside a store, and which paths inside a dataset are safe. Pure functions."""

from __future__ import annotations

from nps.errors import InvalidPath
from nps.hashing import check_dataset_id

DATASETS_PREFIX = "datasets"
META_DIR = ".nps"
RECORD_PATH = ".nps/dataset.json"
MANIFEST_PATH = ".nps/manifest.json"
REVISIONS_DIR = ".nps/revisions"
# Written by the store itself; a user's directory may not bring its own.
RESERVED_PATHS = frozenset({RECORD_PATH, MANIFEST_PATH, ".nps/claim.json"})
MAX_PATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255


def dataset_prefix(dataset_id: str) -> str:
    """``datasets/a/b/c/d/<id>``: the dataset's folder (filesystem) or key prefix (MinIO)."""
    check_dataset_id(dataset_id)
    return "/".join((DATASETS_PREFIX, *dataset_id[:4], dataset_id))


def revision_path(revision: int) -> str:
    """Where the manifest of revision ``revision`` is kept (amended datasets keep every one)."""
    if revision < 1:
        raise ValueError(f"revision must be >= 1, not {revision}")
    return f"{REVISIONS_DIR}/r{revision}.json"


def check_relpath(path: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path inside a dataset, else raise InvalidPath.

    Refused: empty, absolute, backslashes, ``.``/``..``/empty components, NUL and other control
    characters, names longer than filesystems allow.
    """
    if not path:
        raise InvalidPath("empty path")
    if path.startswith("/"):
        raise InvalidPath(f"absolute path not allowed inside a dataset: {path!r}")
    if "\\" in path:
        raise InvalidPath(f"backslash not allowed in a dataset path: {path!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise InvalidPath(f"control character (e.g. NUL or newline) in path: {path!r}")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidPath(f"path longer than {MAX_PATH_BYTES} bytes: {path[:80]!r}...")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise InvalidPath(f"path escapes or is not normalised ({part!r} component): {path!r}")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT_BYTES:
            raise InvalidPath(f"path component longer than {MAX_COMPONENT_BYTES} bytes: {part[:80]!r}...")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidPath(f"path is not valid UTF-8: {path!r}") from exc
    return path
