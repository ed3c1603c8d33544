"""Process liveness through flock: a holder's lock vanishes with it, so a free lock means no owner.

Used wherever a folder must be told apart from the leftovers of a killed process: the local
store's staging folders, job scratch folders, partial stagings of inputs.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def held(lock: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock`` (created if missing) for the block; remove it after."""
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def is_free(lock: Path) -> bool:
    """True when nobody holds ``lock`` (or it does not exist); never waits."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True
