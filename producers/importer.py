"""``nps import PATH...``: DICOM files from folders, zip and tar archives, or single files.

Each file goes through the same ``Ingestor.ingest`` as the network receiver (header read once,
bytes written once to their place, ``instance.received`` confirmed), several at a time. At the
end the import closes its batch, so the assembler commits its series at once instead of
waiting for the stable age. Re-importing the same files changes nothing: an instance already
stored with the same bytes is a duplicate, and the assembler adds nothing for it.

Files that are not DICOM at all (a README, ``.DS_Store``, a DICOMDIR index) are skipped and
reported: they are still on the user's disk. DICOM files NPS refuses (missing or unsafe UIDs,
truncated, a different instance under an existing SOPInstanceUID) go to the quarantine.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import threading
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nps.dicom.instance import RejectReason
from nps.errors import BrokerUnavailable, InvalidSource, StoreUnavailable
from nps.ingest import Ingestor, Outcome

MAX_REPORTED = 20
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
NOT_QUARANTINED = (RejectReason.NOT_DICOM, RejectReason.NOT_AN_INSTANCE)


@dataclass
class ImportReport:
    """What an import did; ``ok`` is False when something must be retried."""

    batch_id: str
    stored: int = 0
    duplicates: int = 0
    series: set[str] = field(default_factory=set)
    skipped: Counter[str] = field(default_factory=Counter)
    quarantined: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed for a reason a retry could fix."""
        return self.failed == 0

    def note(self, source: str, why: str) -> None:
        """Remember one problem (the first few are shown)."""
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(f"{source}: {why}")

    def as_dict(self) -> dict[str, Any]:
        """For --json."""
        return {"batch_id": self.batch_id, "instances_stored": self.stored, "already_stored": self.duplicates,
                "series": sorted(self.series), "skipped": dict(self.skipped), "quarantined": self.quarantined,
                "failed": self.failed, "problems": self.problems}


@dataclass(frozen=True)
class Item:
    """One file to import: a label for messages and how to get it onto disk."""

    label: str
    open: Callable[[], AbstractContextManager[Path]]


def items(paths: list[Path]) -> Iterator[Item]:
    """Every file under ``paths``, archives opened, in a stable order."""
    for path in paths:
        if not path.exists():
            raise InvalidSource(f"{path}: no such file or folder")
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield _file_item(Path(root) / name)
        elif path.name.lower().endswith(".zip") or (not _is_tar_name(path) and zipfile.is_zipfile(path)):
            yield from _zip_items(path)
        elif _is_tar_name(path):
            yield from _tar_items(path)
        else:
            yield _file_item(path)


def _is_tar_name(path: Path) -> bool:
    return path.name.lower().endswith(TAR_SUFFIXES)


def _file_item(path: Path) -> Item:
    return Item(str(path), lambda: nullcontext(path))


def _zip_items(path: Path) -> Iterator[Item]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidSource(f"{path}: not a readable zip archive ({exc})") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            spool = _spool_now(archive.open(info))  # the archive closes when this generator ends
            yield Item(f"{path}!{info.filename}", _opener(spool))


def _tar_items(path: Path) -> Iterator[Item]:
    try:
        archive = tarfile.open(path, mode="r|*")  # noqa: SIM115 (closed below; streaming, any compression)
    except (tarfile.TarError, OSError) as exc:
        raise InvalidSource(f"{path}: not a readable tar archive ({exc})") from exc
    with archive:
        for member in archive:
            if not member.isfile():
                continue
            spool = _spool_now(archive.extractfile(member))  # must be read before the stream moves on
            yield Item(f"{path}!{member.name}", _opener(spool))


class _owned(AbstractContextManager[Path]):
    """A spooled temporary file, removed when the item is done."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path.parent, ignore_errors=True)


def _opener(spool: Path) -> Callable[[], AbstractContextManager[Path]]:
    return lambda: _owned(spool)


def _spool_now(stream: Any) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="nps-import-"))
    target = folder / "instance"
    with stream, target.open("wb") as out:
        shutil.copyfileobj(stream, out, 1024 * 1024)
    return target


def run_import(ingestor: Ingestor, paths: list[Path], workers: int = 8,
               tick: Callable[[str], None] | None = None) -> ImportReport:
    """Import every file under ``paths``; ``tick`` is called once per file (for a progress bar)."""
    batch = uuid.uuid4()
    report = ImportReport(str(batch))
    lock = threading.Lock()
    inflight = threading.BoundedSemaphore(workers * 4)  # bounds spooled archive members on disk

    def one(item: Item) -> None:
        try:
            with item.open() as path:
                outcome = ingestor.ingest(path, f"import {item.label}", batch_id=batch,
                                          skip_quarantine=NOT_QUARANTINED)
            _count(report, item.label, outcome, lock)
        except (StoreUnavailable, BrokerUnavailable, OSError) as exc:
            with lock:
                report.failed += 1
                report.note(item.label, f"not imported, try again: {exc}")
        finally:
            inflight.release()
            if tick:
                tick(item.label)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: list[Future[None]] = []
        for item in items(paths):
            inflight.acquire()
            futures.append(pool.submit(one, item))
        for future in futures:
            future.result()
    if report.series:
        try:
            ingestor.close_batch(batch, report.series)
        except BrokerUnavailable as exc:  # the series still commit after the stable age
            report.note("batch", f"could not close the batch ({exc}); series commit after the stable age")
    return report


def _count(report: ImportReport, label: str, outcome: Outcome, lock: threading.Lock) -> None:
    with lock:
        if outcome.status == "rejected":
            assert outcome.reason is not None
            report.skipped[outcome.reason.value] += 1
            if outcome.quarantine_id:
                report.quarantined += 1
            where = f" (quarantined as {outcome.quarantine_id})" if outcome.quarantine_id else ""
            report.note(label, f"{outcome.reason.value}: {outcome.detail}{where}")
            return
        assert outcome.instance is not None
        report.series.add(outcome.instance.dataset_id)
        if outcome.status == "stored":
            report.stored += 1
        else:
            report.duplicates += 1
