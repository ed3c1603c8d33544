"""Removing what killed workers left on local disk: job scratch folders and half-done stagings.

Every live user of such a folder holds an flock on a lock file beside it (the kernel drops it
when the process dies), so a folder whose lock can be taken without waiting is garbage.
Workers on one host share these folders; this never removes one in use.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nps.locks import is_free


def sweep(folder: Path, pattern: str, lock_for: str = "{name}.lock") -> list[str]:
    """Remove sub-folders of ``folder`` matching ``pattern`` whose lock (``lock_for``) is free."""
    removed: list[str] = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.glob(pattern)):
        lock = folder / lock_for.format(name=path.name)
        if path.is_dir() and is_free(lock):
            shutil.rmtree(path, ignore_errors=True)
            lock.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
