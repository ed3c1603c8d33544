"""The jobs index (nps/index/jobs.py) against the real Elasticsearch and MinIO: a job's document
follows its record, a late event never takes a document back, and a closed port is an outage."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from nps.config import Settings
from nps.errors import IndexUnavailable
from nps.index.jobs import JobIndex, index_job_status, job_document
from nps.index.sync import rebuild_jobs
from nps.jobs import JobRecords, records_for
from nps.jobs.plan import build_spec
from nps.store.minio import MinioStore
from schemas.messages import JobRequested, JobState, JobStatus

IMAGE = "sha256:" + "b" * 64


def request(n: int = 0, project: str | None = "alpha") -> JobRequested:
    spec = build_spec(IMAGE, ["sh", "-c", f"echo {n}"], [], [], [])
    return JobRequested(job_id=spec.job_id, spec=spec, project=project, requested_by="alice")


@pytest.fixture
def index(settings: Settings) -> Iterator[JobIndex]:
    idx = JobIndex(settings.es_url, f"t{uuid.uuid4().hex[:10]}")
    try:
        idx.ensure()
    except IndexUnavailable as exc:
        from tests.conftest import service_missing

        service_missing(f"Elasticsearch unusable: {exc}")
    yield idx
    idx.drop()


@pytest.fixture
def records(minio_settings: Settings) -> JobRecords:
    return records_for(MinioStore(minio_settings))


def test_a_document_carries_state_image_project_and_the_times_of_the_latest_run() -> None:
    asked = request()
    history = [JobStatus(job_id=asked.job_id, state=s, reason=r) for s, r in (
        (JobState.QUEUED, None), (JobState.STAGING, None), (JobState.FAILED, "exit 1"),
        (JobState.QUEUED, None), (JobState.STAGING, None), (JobState.RUNNING, None), (JobState.COMPLETE, None))]
    doc = job_document(asked, history)
    assert doc["state"] == "COMPLETE" and doc["reason"] is None and doc["statuses"] == 7
    assert (doc["image"], doc["project"], doc["requested_by"], doc["command"]) == (IMAGE, "alpha", "alice",
                                                                                   "sh -c echo 0")
    assert doc["queued_at"] == history[3].created_at.isoformat()  # the second run's
    assert doc["started_at"] == history[4].created_at.isoformat()
    assert doc["finished_at"] == doc["updated"] == history[6].created_at.isoformat()
    fresh = job_document(request(project=None), [])
    assert (fresh["state"], fresh["project"], fresh["updated"], fresh["finished_at"]) == ("QUEUED", "default", None,
                                                                                          None)


def test_a_status_event_indexes_the_job_as_its_record_says_and_an_older_read_never_wins(
        index: JobIndex, records: JobRecords) -> None:
    asked = request()
    records.save_request(asked)
    queued = records.set_state(asked.job_id, JobState.QUEUED)
    stale = job_document(asked, records.history(asked.job_id))
    running = records.set_state(asked.job_id, JobState.RUNNING)
    index_job_status(index, records, running)
    index_job_status(index, records, queued)  # a late event: the record is read afresh, still RUNNING
    assert (index.get(asked.job_id) or {})["state"] == "RUNNING"
    assert index.put(stale) is False  # made from a read before RUNNING: refused
    assert (index.get(asked.job_id) or {})["state"] == "RUNNING"
    index_job_status(index, records, JobStatus(job_id=request(9).job_id, state=JobState.QUEUED))  # no record: skipped
    assert index.get(request(9).job_id) is None


def test_pages_hold_only_the_projects_and_states_asked_for_in_id_order(index: JobIndex, records: JobRecords) -> None:
    jobs = [request(n, "alpha" if n % 2 else "beta") for n in range(6)]
    for n, asked in enumerate(jobs):
        records.save_request(asked)
        records.set_state(asked.job_id, JobState.QUEUED)
        if n < 2:
            records.set_state(asked.job_id, JobState.FAILED, "boom")
    assert rebuild_jobs(records, index).indexed == 6
    alpha = sorted(j.job_id for j in jobs if j.project == "alpha")
    assert [d["id"] for d in index.page(["alpha"])] == alpha
    first = index.page(["alpha", "beta"], size=4)
    rest = index.page(["alpha", "beta"], size=4, after=first[-1]["id"])
    assert [d["id"] for d in first + rest] == sorted(j.job_id for j in jobs)
    assert {d["id"] for d in index.page(None, ["FAILED"])} == {jobs[0].job_id, jobs[1].job_id}
    assert index.page(["gamma"]) == []


def test_rebuilding_indexes_every_recorded_job_and_removes_documents_of_jobs_without_a_record(
        index: JobIndex, records: JobRecords) -> None:
    kept, gone = request(1), request(2)
    for asked in (kept, gone):
        records.save_request(asked)
        records.set_state(asked.job_id, JobState.QUEUED)
    assert rebuild_jobs(records, index).indexed == 2
    records.blobs.delete(f"jobs/{gone.job_id}/request.json")
    records.blobs.delete(f"jobs/{gone.job_id}/status.json")
    records.set_state(kept.job_id, JobState.RUNNING)
    done = rebuild_jobs(records, index)
    assert done.removed == [gone.job_id] and not done.failures
    assert [(d["id"], d["state"]) for d in index.page(None)] == [(kept.job_id, "RUNNING")]


def test_a_missing_index_lists_no_jobs_and_a_closed_port_is_an_outage(settings: Settings) -> None:
    assert JobIndex(settings.es_url, f"t{uuid.uuid4().hex[:10]}").page(None) == []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = JobIndex(f"http://elastic:secret@127.0.0.1:{closed}")
    with pytest.raises(IndexUnavailable, match=r"jobs index .* is unavailable") as failed:
        down.page(["alpha"])
    assert "secret" not in str(failed.value)
