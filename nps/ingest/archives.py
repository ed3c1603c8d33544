"""The files an import reads: folders, zip and tar archives, single files, one at a time.

Archive members are copied ("spooled") one at a time into a folder the caller owns and
removes, so a member is a plain file for ``Ingestor.ingest`` and an archive is never unpacked
whole. What cannot be read is yielded as ``Unreadable`` with a one-line reason instead of
raising, so the import goes on with everything else and still closes its batch:

- a damaged zip member (bad CRC, corrupt data, encrypted, unknown compression) is left out;
  the archive's other members are still read (each is compressed on its own);
- damage in a tar archive (a truncated or corrupt ``.tar.gz``) ends it: a stream cannot be
  read past the damage, so the members before it are imported and the rest are not;
- an archive over a limit (``ArchiveLimits``: members, expanded bytes, expansion ratio) is
  refused. A zip's directory states every member's size, so a zip is checked before anything
  is extracted and nothing in it is imported; a tar states each size only in the member's own
  header, so a tar stops at the first member over a limit, and the members before it are
  imported (they were within the limits).
"""

from __future__ import annotations

import functools
import itertools
import lzma
import os
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from nps.config import Settings
from nps.errors import InvalidSource

GiB = 1024**3
MiB = 1024**2
# Below this an archive may expand at any ratio: one blank image compresses about 1000 times.
RATIO_GRACE_BYTES = 8 * MiB
CHUNK = MiB
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# What zipfile, tarfile and their decompressors raise for bytes they cannot read (OSError:
# gzip's BadGzipFile and bz2's "invalid data stream"; RuntimeError: an encrypted zip member;
# ValueError: a member name that is not valid UTF-8).
READ_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
               RuntimeError, NotImplementedError, ValueError)


@dataclass(frozen=True)
class ArchiveLimits:
    """How far one archive may expand: guards against archive bombs."""

    max_bytes: int = 256 * GiB
    max_ratio: float = 100.0
    max_members: int = 100_000

    @classmethod
    def from_settings(cls, settings: Settings) -> ArchiveLimits:
        """The limits ``NPS_ARCHIVE_MAX_GB``, ``_MAX_RATIO`` and ``_MAX_MEMBERS`` set."""
        return cls(int(settings.archive_max_gb * GiB), settings.archive_max_ratio, settings.archive_max_members)

    def refusal(self, members: int, expanded: int, archive_size: int) -> str | None:
        """Why an archive of ``archive_size`` bytes with ``members`` entries expanding to
        ``expanded`` bytes is refused, as a phrase after "it" ("has more than ..."); None when
        it is within the limits."""
        if members > self.max_members:
            return f"has more than {self.max_members} members (the limit NPS_ARCHIVE_MAX_MEMBERS)"
        if expanded > self.max_bytes:
            return f"expands to more than {_size(self.max_bytes)} (the limit NPS_ARCHIVE_MAX_GB)"
        if expanded > max(RATIO_GRACE_BYTES, self.max_ratio * archive_size):
            return (f"expands to {_size(expanded)}, more than {self.max_ratio:g} times its own size of "
                    f"{_size(archive_size)} (the limit NPS_ARCHIVE_MAX_RATIO)")
        return None


@dataclass(frozen=True)
class Item:
    """One file to import: its label for messages and where it is on disk."""

    label: str
    path: Path
    spooled: bool = False

    def release(self) -> None:
        """Remove the spooled copy of an archive member (a user's own file is left alone)."""
        if self.spooled:
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Unreadable:
    """Something under the import's paths that could not be read. ``retryable``: a local
    failure (the spool folder's disk full) rather than damage or a limit."""

    label: str
    why: str
    retryable: bool = False


Entry = Item | Unreadable


class _Damaged(Exception):
    """The archive's bytes could not be read at this point."""


def check_paths(paths: list[Path]) -> None:
    """Refuse the whole import before anything happens when a path does not exist."""
    for path in paths:
        if not path.exists():
            raise InvalidSource(f"{path}: no such file or folder")


def walk(paths: list[Path], spool: Path, limits: ArchiveLimits) -> Iterator[Entry]:
    """Every file under ``paths`` in a stable order, archive members spooled into ``spool``."""
    names = (f"m{n}" for n in itertools.count())
    for path in paths:
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield _file(Path(root) / name)
        elif not path.is_file():
            yield _file(path)
        elif path.name.lower().endswith(".zip") or (not _is_tar_name(path) and zipfile.is_zipfile(path)):
            yield from _zip_entries(path, spool, names, limits)
        elif _is_tar_name(path):
            yield from _tar_entries(path, spool, names, limits)
        else:
            yield _file(path)


def _file(path: Path) -> Entry:
    if not path.is_file():  # reading a FIFO would wait forever; a dangling link has nothing to read
        return Unreadable(str(path), "not a regular file; not imported")
    return Item(str(path), path)


def _is_tar_name(path: Path) -> bool:
    return path.name.lower().endswith(TAR_SUFFIXES)


def _zip_entries(path: Path, spool: Path, names: Iterator[str], limits: ArchiveLimits) -> Iterator[Entry]:
    try:
        archive = zipfile.ZipFile(path)
    except READ_ERRORS as exc:
        yield Unreadable(str(path), f"not a readable zip archive ({_why(exc)})")
        return
    with archive:
        infos = archive.infolist()
        # zipfile never reads past a member's declared size, so the directory's sizes bound the expansion.
        refused = limits.refusal(len(infos), sum(i.file_size for i in infos), path.stat().st_size)
        if refused:
            yield Unreadable(str(path), f"refused: it {refused}; nothing in it was imported")
            return
        for info in infos:
            if info.is_dir():
                continue
            label, target = f"{path}!{info.filename}", spool / next(names)
            try:
                _spool(functools.partial(archive.open, info), target, info.file_size)
            except _Damaged as exc:
                yield Unreadable(label, f"damaged ({exc}); not imported")
                continue
            except OSError as exc:
                yield _unwritable(label, target, exc)
                continue
            yield Item(label, target, spooled=True)


def _tar_entries(path: Path, spool: Path, names: Iterator[str], limits: ArchiveLimits) -> Iterator[Entry]:
    try:
        archive = tarfile.open(path, mode="r|*")  # noqa: SIM115 (closed below; streaming, any compression)
    except READ_ERRORS as exc:
        yield Unreadable(str(path), f"not a readable tar archive ({_why(exc)})")
        return
    size, members, expanded, last = path.stat().st_size, 0, 0, None
    with archive:
        while True:
            try:
                member = archive.next()
            except READ_ERRORS as exc:
                where = f"after member {last}" if last else "at its start"
                yield Unreadable(str(path), f"damaged {where} ({_why(exc)}); the rest of it was not imported")
                return
            if member is None:
                return
            members += 1
            expanded += member.size if member.isfile() else 0
            refused = limits.refusal(members, expanded, size)
            if refused:
                yield Unreadable(str(path), f"refused at member {member.name}: it {refused}; "
                                            f"that member and the ones after it were not imported")
                return
            last = member.name
            if not member.isfile():
                continue
            label, target = f"{path}!{member.name}", spool / next(names)
            try:
                _spool(functools.partial(archive.extractfile, member), target, member.size)
            except _Damaged as exc:  # a stream cannot be read past damage
                yield Unreadable(str(path), f"damaged in member {member.name} ({exc}); that member and the "
                                            f"rest of the archive were not imported")
                return
            except OSError as exc:
                yield _unwritable(label, target, exc)
                continue
            yield Item(label, target, spooled=True)


def _unwritable(label: str, target: Path, exc: OSError) -> Unreadable:
    return Unreadable(label, f"could not be unpacked into {target.parent} ({exc}); not imported", retryable=True)


def _spool(opener: Callable[[], IO[bytes] | None], target: Path, declared: int) -> None:
    """Copy one member to ``target`` (removed again on failure). Reading fails with _Damaged,
    writing with OSError."""
    try:
        _copy(opener, target, declared)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _copy(opener: Callable[[], IO[bytes] | None], target: Path, declared: int) -> None:
    try:
        stream = opener()
    except READ_ERRORS as exc:
        raise _Damaged(_why(exc)) from exc
    if stream is None:
        raise _Damaged("no data")
    with stream, target.open("wb") as out:
        copied = 0
        while True:
            try:
                chunk = stream.read(CHUNK)
            except READ_ERRORS as exc:
                raise _Damaged(_why(exc)) from exc
            if not chunk:
                return
            copied += len(chunk)
            if copied > declared:  # the limits were checked against the declared size
                raise _Damaged(f"more bytes than the {declared} it declares")
            out.write(chunk)


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200] if text.strip() else type(exc).__name__


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
