"""The import's rules: which series a batch closes, when an archive is refused, what is not a file."""

from __future__ import annotations

import os
from pathlib import Path

from nps.ingest.archives import RATIO_GRACE_BYTES, ArchiveLimits, Unreadable, walk
from producers.importer import ImportReport

A, B, C = "a" * 40, "b" * 40, "c" * 40


def test_a_batch_closes_only_the_series_none_of_whose_files_failed() -> None:
    report = ImportReport("batch", series={A, B, C})
    report.fail("b/2.dcm", OSError("MinIO down"), {B})
    report.fail("README", OSError("MinIO down"), set())  # a refused file belongs to no series
    assert report.closable == {A, C} and dict(report.incomplete) == {B: 1} and report.failed == 2


def test_a_failed_file_of_unknown_series_means_the_batch_closes_no_series() -> None:
    report = ImportReport("batch", series={A, B})
    report.fail("x.dcm", OSError("unreadable"), None)
    assert report.closable == set()


def test_archive_limits_name_the_setting_that_refuses() -> None:
    limits = ArchiveLimits(max_bytes=10 * RATIO_GRACE_BYTES, max_ratio=100, max_members=3)
    assert limits.refusal(3, RATIO_GRACE_BYTES, 1) is None  # any ratio below the grace size
    assert "NPS_ARCHIVE_MAX_MEMBERS" in (limits.refusal(4, 0, 1) or "")
    assert "NPS_ARCHIVE_MAX_GB" in (limits.refusal(1, 11 * RATIO_GRACE_BYTES, RATIO_GRACE_BYTES) or "")
    size = RATIO_GRACE_BYTES // 50
    assert limits.refusal(1, 100 * size, size) is None  # exactly 100 times
    assert "NPS_ARCHIVE_MAX_RATIO" in (limits.refusal(1, 100 * size + 1, size) or "")


def test_special_files_are_reported_without_being_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # opening it would wait for a writer forever
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "dangling").symlink_to(tmp_path / "gone")
    entries = list(walk([tmp_path / "fifo", tmp_path / "in"], tmp_path, ArchiveLimits()))
    assert entries == [Unreadable(str(tmp_path / "fifo"), "not a regular file; not imported"),
                       Unreadable(str(tmp_path / "in" / "dangling"), "not a regular file; not imported")]
