"""Which paths inside a dataset are safe: the rule every manifest entry obeys. A pure function.

Part of the contract (``schemas.common.RelPath`` validates with it); ``nps.layout`` re-exports
it for NPS code.
"""

from __future__ import annotations

from schemas.errors import InvalidPath

MAX_PATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255


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
