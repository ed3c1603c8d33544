"""Job records remember a bounded number of histories and stay right when one is forgotten."""

from __future__ import annotations

from pathlib import Path

import pytest

from nps.blobs import LocalBlobs
from nps.jobs import records as records_module
from nps.jobs.records import JobRecords
from schemas.messages import JobState


def test_a_long_lived_reader_remembers_few_histories_and_appends_right_after_forgetting_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records_module, "KNOWN_HISTORIES", 2)
    records = JobRecords(LocalBlobs(tmp_path / "blobs"))
    jobs = [f"{n:040x}" for n in range(1, 5)]
    for job in jobs:
        records.set_state(job, JobState.QUEUED)
    assert len(records._known) == 2  # what a long-lived API or indexer holds stays bounded
    records.set_state(jobs[0], JobState.RUNNING)  # forgotten: read again, then appended
    assert [s.state for s in JobRecords(LocalBlobs(tmp_path / "blobs")).history(jobs[0])] == [
        JobState.QUEUED, JobState.RUNNING]
