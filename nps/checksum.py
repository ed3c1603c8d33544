"""File checksums in manifests and instance objects.

New data is checksummed with BLAKE3 (about 4 GiB/s per core here, against 1 GiB/s for
SHA-256: verifying every byte on download no longer costs more than the download). Manifests
written before (version 1) carry SHA-256; readers verify whichever a file has.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, Protocol

import blake3

Algorithm = Literal["blake3", "sha256"]
ALGORITHM: Algorithm = "blake3"
CHUNK = 1024 * 1024


class Digest(Protocol):
    """What hashlib and blake3 hashers have in common."""

    def update(self, data: bytes | memoryview, /) -> object: ...

    def hexdigest(self) -> str: ...


def new(algorithm: Algorithm = ALGORITHM) -> Digest:
    """A fresh hasher."""
    if algorithm == "blake3":
        return blake3.blake3()
    return hashlib.sha256()


def digest_of(data: bytes | memoryview, algorithm: Algorithm = ALGORITHM) -> str:
    """Hex checksum of bytes in memory."""
    hasher = new(algorithm)
    hasher.update(data)
    return hasher.hexdigest()


def file_digest(path: Path, algorithm: Algorithm = ALGORITHM) -> str:
    """Hex checksum of a file, streamed."""
    hasher = new(algorithm)
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def file_digest_parallel(path: Path, algorithm: Algorithm = ALGORITHM) -> str:
    """Hex checksum of a large file just written (in the page cache): mapped, not copied, and
    BLAKE3 spread over every core."""
    import mmap

    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        if algorithm == "blake3":
            return str(blake3.blake3(mapped, max_threads=blake3.blake3.AUTO).hexdigest())
        return hashlib.sha256(mapped).hexdigest()
