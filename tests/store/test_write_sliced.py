"""Downloads reach the page cache in 32 KiB writes (``write_sliced``): every byte lands where
it belongs, appended or at an offset, whatever the size of what arrives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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


def test_short_writes_are_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write may take fewer bytes than offered (a signal, a full disk about to fail): the rest
    must follow, in place. A regular file never does this on demand, so os.write and os.pwrite
    are wrapped to take at most 1,000 bytes a call (a test double for that fault)."""
    real_write, real_pwrite = os.write, os.pwrite
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:1000]))
    monkeypatch.setattr(os, "pwrite", lambda fd, data, at: real_pwrite(fd, bytes(data)[:1000], at))
    data = os.urandom(2 * PAGE_WRITE + 17)
    fd = os.open(tmp_path / "short", os.O_CREAT | os.O_WRONLY)
    try:
        write_sliced(fd, data[:PAGE_WRITE + 3])
        write_sliced(fd, data[PAGE_WRITE + 3:], PAGE_WRITE + 3)
    finally:
        os.close(fd)
    assert (tmp_path / "short").read_bytes() == data
