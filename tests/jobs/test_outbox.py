"""A submitter that dies between recording a job and publishing it strands nothing: the job
workers' repair publishes the job, which then runs once. Real MinIO, RabbitMQ, Podman and
processes; the one double is the hook that kills the submitter at an exact point."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from nps.broker import Publisher
from nps.jobs import JobRecords
from nps.jobs.outbox import FOLDER, Repair, Unpublished, repair_for, republish_stranded, stale
from nps.jobs.plan import build_spec
from nps.jobs.submit import submit
from nps.store.minio import MinioStore
from schemas.messages import JobRequested, JobState
from tests.conftest import REPO
from tests.jobs.conftest import jobs_topology, jobs_waiting, run_nps, stop_when_idle, wait_for_state

Workers = Callable[..., subprocess.Popen[str]]


def a_request(busybox_id: str, command: str = "echo made > /output/r") -> JobRequested:
    spec = build_spec(busybox_id, ["sh", "-c", f"{command} # {uuid.uuid4().hex}"], [], [], [])
    return JobRequested(job_id=spec.job_id, spec=spec)


@pytest.mark.parametrize("point", ["before-publishing", "before-queued"])
def test_a_submitter_killed_between_recording_and_publishing_leaves_a_job_that_completes_by_itself(
        point: str, server_env: dict[str, str], workers: Workers, server_records: JobRecords,
        busybox_id: str) -> None:
    request = a_request(busybox_id)
    child = subprocess.run([sys.executable, "-m", "tests.jobs.crashing_submitter", point], env=server_env, cwd=REPO,
                           input=request.model_dump_json(), capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr  # really SIGKILLed there
    history = [h.state for h in server_records.history(request.job_id)]
    assert history == ([JobState.QUEUED] if point == "before-publishing" else [])
    assert jobs_waiting(server_env) == 0  # no message: without a repair nothing would ever run it
    # Two worker processes, each with its repair thread: the job is published again and runs once.
    fast = {"NPS_JOB_REPUBLISH_AFTER_S": "1"}
    procs = [workers(concurrency=1, extra=fast), workers(concurrency=1, extra=fast)]
    wait_for_state(server_records, request.job_id, {"COMPLETE"}, timeout=90)
    assert run_nps("--store", "minio", "cat", request.job_id, "r", env=server_env).stdout == "made\n"
    assert stop_when_idle(server_env, procs) == 0
    states = [h.state.value for h in server_records.history(request.job_id)]
    assert states == ["QUEUED", "STAGING", "RUNNING", "UPLOADING", "COMPLETE"], states
    assert list(server_records.outbox.entries()) == []


def test_a_confirmed_submission_leaves_no_outbox_entry_and_one_message(
        server_env: dict[str, str], minio_settings: object, server_records: JobRecords, busybox_id: str) -> None:
    store = MinioStore(minio_settings)  # type: ignore[arg-type]
    publisher = Publisher(jobs_topology(server_env))
    try:
        request = a_request(busybox_id)
        assert submit(store, server_records, publisher, request)
    finally:
        publisher.close()
    assert list(server_records.outbox.entries()) == []
    assert jobs_waiting(server_env) == 1
    assert server_records.state(request.job_id).state == JobState.QUEUED


def test_the_repair_publishes_only_stranded_queued_jobs_and_forgets_every_old_entry(
        server_env: dict[str, str], server_records: JobRecords, busybox_id: str) -> None:
    records = server_records
    queued, running, young, unrequested = (a_request(busybox_id, f"echo {n}") for n in range(4))
    for request in (queued, running):
        records.outbox.add(request.job_id)
    for request in (queued, running, young):
        records.save_request(request)
        records.set_state(request.job_id, JobState.QUEUED)
    records.set_state(running.job_id, JobState.RUNNING)
    records.outbox.add(unrequested.job_id)  # its submitter died before saving the request
    later = datetime.now(UTC) + timedelta(seconds=60)  # the time of the repair: the entries above are 60 s old
    young_entry = f"{young.job_id}.{uuid.uuid4().hex}"  # a submission that began just then
    records.blobs.put(f"{FOLDER}/{young_entry}", json.dumps({"since": later.isoformat()}).encode())
    publisher = Publisher(jobs_topology(server_env))
    try:
        published = republish_stranded(records, publisher, grace_s=30, now=later)
        assert published == [queued.job_id]
        assert jobs_waiting(server_env) == 1
        assert [e.name for e in records.outbox.entries()] == [young_entry]  # the young one waits
        # Running again (a second worker, or the next round) finds nothing more to do.
        assert republish_stranded(records, publisher, grace_s=30, now=later - timedelta(seconds=60)) == []
    finally:
        publisher.close()
    assert jobs_waiting(server_env) == 1


def test_the_repair_decision_follows_the_jobs_latest_state() -> None:
    assert repair_for(JobState.QUEUED, requested=True) is Repair.PUBLISH
    assert repair_for(None, requested=True) is Repair.QUEUE_AND_PUBLISH
    assert repair_for(None, requested=False) is Repair.DROP
    for state in (JobState.STAGING, JobState.RUNNING, JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED):
        assert repair_for(state, requested=True) is Repair.DROP
    now = datetime.now(UTC)
    entries = [Unpublished("a.1", "a" * 40, now - timedelta(seconds=10)), Unpublished("a.2", "a" * 40, now),
               Unpublished("b.1", "b" * 40, now - timedelta(seconds=5))]
    assert {k: [e.name for e in v] for k, v in stale(entries, now, grace_s=5).items()} == {
        "a" * 40: ["a.1"], "b" * 40: ["b.1"]}
