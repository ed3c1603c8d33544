"""Turning a directory into the list of files a dataset will hold, refusing what must not go in."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from nps import checksum
from nps.errors import InvalidPath, InvalidSource
from nps.hashing import json_dataset_id
from nps.layout import RESERVED_PATHS, check_relpath

CHUNK = 1024 * 1024
MAX_REPORTED_PROBLEMS = 10
ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class SourceFile:
    """A regular file to store: its path inside the dataset, where to read it, its size."""

    path: str
    abspath: Path
    size: int


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def _walk(root: Path, real_root: str, rel: str, problems: list[str]) -> Iterator[SourceFile]:
    with os.scandir(root / rel if rel else root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            relpath = f"{rel}/{entry.name}" if rel else entry.name
            try:
                check_relpath(relpath)
            except InvalidPath as exc:
                problems.append(str(exc))
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                yield from _symlink(root, real_root, relpath, problems)
            elif stat.S_ISDIR(st.st_mode):
                yield from _walk(root, real_root, relpath, problems)
            elif stat.S_ISREG(st.st_mode):
                yield SourceFile(relpath, root / relpath, st.st_size)
            else:
                problems.append(f"{relpath}: {_kind(st.st_mode)} cannot be stored")


def _symlink(root: Path, real_root: str, relpath: str, problems: list[str]) -> Iterator[SourceFile]:
    target = os.path.realpath(root / relpath)
    if os.path.commonpath([real_root, target]) != real_root:
        problems.append(f"{relpath}: symlink points outside the source directory (-> {target})")
        return
    try:
        st = os.stat(target)
    except OSError:
        problems.append(f"{relpath}: dangling symlink (-> {target})")
        return
    if stat.S_ISREG(st.st_mode):
        yield SourceFile(relpath, Path(target), st.st_size)  # stored as a copy of its target
    elif stat.S_ISDIR(st.st_mode):
        problems.append(f"{relpath}: symlink to a directory is not supported; copy it or remove the link")
    else:
        problems.append(f"{relpath}: symlink to a {_kind(st.st_mode)} cannot be stored")


def scan_source(source: Path) -> list[SourceFile]:
    """Every regular file under ``source``, sorted by path.

    Raises InvalidSource listing the problems found (up to ten): symlinks leaving the
    directory, special files, unsafe names, names reserved for ``.nps/`` metadata.
    Symlinks to files inside the directory are stored as copies of their targets.
    """
    if not source.exists():
        raise InvalidSource(f"{source}: no such directory")
    if not source.is_dir():
        raise InvalidSource(f"{source}: not a directory")
    real_root = os.path.realpath(source)
    problems: list[str] = []
    try:
        files = list(_walk(source, real_root, "", problems))
    except PermissionError as exc:
        raise InvalidSource(f"cannot read {exc.filename}: permission denied") from exc
    problems += [f"{f.path}: reserved for NPS metadata" for f in files if f.path in RESERVED_PATHS]
    if problems:
        more = len(problems) - MAX_REPORTED_PROBLEMS
        listed = "\n  ".join(problems[:MAX_REPORTED_PROBLEMS])
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise InvalidSource(f"{source} cannot be stored as a dataset:\n  {listed}{tail}")
    return files


class HashingReader:
    """A read-only file wrapper that checksums (BLAKE3) and counts what passes through it."""

    def __init__(self, raw: BinaryIO, progress: ProgressFn | None = None) -> None:
        self._raw = raw
        self._progress = progress
        self.digest = checksum.new()
        self.size = 0

    @staticmethod
    def digest_of(data: bytes) -> str:
        """Checksum of bytes in memory."""
        return checksum.digest_of(data)

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self.digest.update(data)
        self.size += len(data)
        if self._progress and data:
            self._progress(len(data))
        return data


def file_checksum(path: Path, progress: ProgressFn | None = None) -> str:
    """Checksum of a file, streamed."""
    with path.open("rb") as fh:
        reader = HashingReader(fh, progress)
        while reader.read(CHUNK):
            pass
    return reader.digest.hexdigest()


def upload_dataset_id(files: Iterable[tuple[str, int, str]]) -> str:
    """Id of a directory put by hand: the hash of its sorted (path, size, blake3) list.

    Same bytes under the same names give the same id on any machine, so putting a directory
    twice stores it once.
    """
    entries = sorted([p, s, h] for p, s, h in files)
    return json_dataset_id({"kind": "upload", "files": entries})


def hash_sources(files: list[SourceFile], workers: int, progress: ProgressFn | None = None) -> list[str]:
    """Checksum of every file, in order, read in parallel."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda f: file_checksum(f.abspath, progress), files))
