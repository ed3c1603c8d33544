"""``nps import PATH...``: DICOM files from folders, zip and tar archives, or single files.

Each file goes through the same ``Ingestor.ingest`` as the network receiver (header read once,
bytes written once to their place, ``instance.received`` confirmed), several at a time. At the
end the import closes its batch, so the assembler commits its series at once instead of
waiting for the stable age. Re-importing the same files changes nothing: an instance already
stored with the same bytes is a duplicate, and the assembler adds nothing for it.

A file that failed because MinIO or RabbitMQ was unavailable is reported, and its series is
left out of the close: closing says "this import delivered all of these series", which is
not true of that one. It is committed like a series received over the network, after the
stable age, unless the same import runs again first and closes it complete (already stored
files are duplicates, the missing ones are stored). The failed file's series is read from its
header again, which is local, so the outage does not hide it; when even that cannot be read,
any series might be incomplete and the import closes none.

Files that are not DICOM at all (a README, ``.DS_Store``, a DICOMDIR index) are skipped and
reported: they are still on the user's disk. DICOM files NPS refuses (missing or unsafe UIDs,
truncated) go to the quarantine. A different instance under an already stored SOPInstanceUID
keeps the first copy (counted as already stored) and its differing copy is quarantined and
named in the report, as the receiver does.
Damaged archives and archives over the limits are reported as errors (``nps.ingest.archives``);
what could be read is imported and the batch still closes.
"""

from __future__ import annotations

import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nps.dicom.instance import InstanceRejected, RejectReason, read_instance
from nps.errors import BrokerUnavailable, InvalidSource, StoreUnavailable
from nps.ingest import Ingestor, Outcome
from nps.ingest.archives import ArchiveLimits, Entry, Item, Unreadable, check_paths, walk

MAX_REPORTED = 20
NOT_QUARANTINED = (RejectReason.NOT_DICOM, RejectReason.NOT_AN_INSTANCE)
# Failures a later run of the same import can overcome (InvalidSource: the file changed while stored).
RETRYABLE = (StoreUnavailable, BrokerUnavailable, InvalidSource, OSError)


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
    incomplete: Counter[str] = field(default_factory=Counter)  # series -> its files that failed
    failed_unknown: int = 0  # failed files whose series could not be read
    unreadable: int = 0  # damaged archives or members, archives over a limit
    closed: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    unshown: int = 0  # problems beyond the first MAX_REPORTED
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing failed for a reason a retry could fix."""
        return self.failed == 0

    @property
    def closable(self) -> set[str]:
        """The series this import delivered completely: none of their files failed. When a
        failed file's series is unknown, it could be any of them."""
        return set() if self.failed_unknown else self.series - set(self.incomplete)

    def note(self, source: str, why: str) -> None:
        """Remember one problem (the first few are shown, the rest counted)."""
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(f"{source}: {why}")
        else:
            self.unshown += 1

    def fail(self, source: str, exc: Exception, series: set[str] | None) -> None:
        """A file could not be imported (retryable); ``series``: the ones it belongs to, None if unknown."""
        self.failed += 1
        if series is None:
            self.failed_unknown += 1
        else:
            self.incomplete.update(series)
        self.note(source, f"not imported, try again: {exc}")

    def refuse(self, entry: Unreadable) -> None:
        """Part of the input could not be read: damage or a limit (an error), or the local disk (retryable)."""
        if entry.retryable:
            self.fail(entry.label, OSError(entry.why), None)
            return
        self.unreadable += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append(f"{entry.label}: {entry.why}")

    def as_dict(self) -> dict[str, Any]:
        """For --json."""
        return {"batch_id": self.batch_id, "instances_stored": self.stored, "already_stored": self.duplicates,
                "series": sorted(self.series), "closed_series": sorted(self.closed),
                "incomplete_series": dict(sorted(self.incomplete.items())), "skipped": dict(self.skipped),
                "quarantined": self.quarantined, "failed": self.failed, "failed_series_unknown": self.failed_unknown,
                "unreadable": self.unreadable, "errors": self.errors, "problems": self.problems,
                "problems_not_shown": self.unshown}


def run_import(ingestor: Ingestor, paths: list[Path], workers: int = 8,
               tick: Callable[[str], None] | None = None, limits: ArchiveLimits | None = None) -> ImportReport:
    """Import every file under ``paths``; ``tick`` is called once per file (for a progress bar)."""
    check_paths(paths)
    batch = uuid.uuid4()
    report = ImportReport(str(batch))
    # One spool folder per import, removed whatever happens: members are copied here one by one.
    with tempfile.TemporaryDirectory(prefix="nps-import-") as spool:
        _import_all(ingestor, walk(paths, Path(spool), limits or ArchiveLimits()), batch, report, workers, tick)
    _close(ingestor, batch, report)
    return report


def _import_all(ingestor: Ingestor, entries: Iterable[Entry], batch: uuid.UUID, report: ImportReport, workers: int,
                tick: Callable[[str], None] | None) -> None:
    lock = threading.Lock()
    inflight = threading.BoundedSemaphore(workers * 4)  # bounds spooled archive members on disk

    def one(item: Item) -> None:
        try:
            _import_one(ingestor, item, batch, report, lock)
        finally:
            item.release()
            inflight.release()
            if tick:
                tick(item.label)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures: list[Future[None]] = []
        for entry in entries:
            if isinstance(entry, Unreadable):
                with lock:
                    report.refuse(entry)
                if tick:
                    tick(entry.label)
                continue
            inflight.acquire()
            futures.append(pool.submit(one, entry))
        for future in futures:
            future.result()


def _import_one(ingestor: Ingestor, item: Item, batch: uuid.UUID, report: ImportReport, lock: threading.Lock) -> None:
    try:
        outcome = ingestor.ingest(item.path, f"import {item.label}", batch_id=batch, skip_quarantine=NOT_QUARANTINED)
    except RETRYABLE as exc:
        series = _series_of(item.path)
        with lock:
            report.fail(item.label, exc, series)
        return
    _count(report, item.label, outcome, lock)


def _series_of(path: Path) -> set[str] | None:
    """The series a file that failed would have joined, from its header again (read locally,
    so an outage of MinIO or RabbitMQ does not hide it): empty when NPS refuses the file
    anyway, None when the file cannot be read."""
    try:
        return {read_instance(path).dataset_id}
    except InstanceRejected:
        return set()
    except OSError:
        return None


def _close(ingestor: Ingestor, batch: uuid.UUID, report: ImportReport) -> None:
    """Close the batch for the series it delivered completely (see the module docstring)."""
    closable = report.closable
    if report.failed_unknown:
        report.note("batch", f"closes no series: the series of {report.failed_unknown} failed file(s) could "
                             "not be read, so any of them may be incomplete")
    if not closable:
        return
    try:
        ingestor.close_batch(batch, closable)
    except BrokerUnavailable as exc:  # the series still commit after the stable age
        report.note("batch", f"could not close the batch ({exc}); series commit after the stable age")
        return
    report.closed = closable


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
            return
        report.duplicates += 1
        if outcome.status == "duplicate_differs":  # the first copy is kept; the new one is set aside
            report.quarantined += 1
            report.note(label, f"{outcome.detail} (quarantined as {outcome.quarantine_id})")
