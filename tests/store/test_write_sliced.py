"""Downloads reach the page cache in 32 KiB writes (``write_sliced``): every byte lands where
it belongs, appended or at an offset, whatever the size of what arrives."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from nps.store.base import PAGE_WRITE, write_sliced


def test_appended_and_positioned_writes_land_every_byte(tmp_path: Path) -> None:
    data = os.urandom(3 * PAGE_WRITE + 123)
    fd = os.open(tmp_path / "appended", os.O_CREAT | os.O_WRONLY)
    try:
        write_sliced(fd, data[:10])  # smaller than one slice
        write_sliced(fd, memoryview(data)[10:])
    finally:
        os.close(fd)
    assert (tmp_path / "appended").read_bytes() == data
    fd = os.open(tmp_path / "placed", os.O_CREAT | os.O_WRONLY)
    try:
        write_sliced(fd, data[PAGE_WRITE + 5:], PAGE_WRITE + 5)  # the second half first, as ranges arrive
        write_sliced(fd, data[:PAGE_WRITE + 5], 0)
    finally:
        os.close(fd)
    assert (tmp_path / "placed").read_bytes() == data


def test_short_writes_are_continued(tmp_path: Path) -> None:
    """A pipe takes at most its buffer per write: nothing may be dropped in between."""
    data = os.urandom(10 * PAGE_WRITE + 1)
    read_end, write_end = os.pipe()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_end, 7000):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        write_sliced(write_end, data)
    finally:
        os.close(write_end)
        reader.join(30)
        os.close(read_end)
    assert bytes(received) == data
