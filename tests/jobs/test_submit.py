"""What a batch submission records when RabbitMQ stops taking messages part-way."""

from __future__ import annotations

import uuid

import pytest

from nps.config import Settings
from nps.errors import BrokerUnavailable
from nps.jobs import records_for
from nps.jobs.plan import build_spec
from nps.jobs.submit import submit_many
from nps.store.minio import MinioStore
from schemas.messages import JobRequested, JobState, JobStatus


class _BrokerGoneAfter:
    """A test double for the publisher: a broker that fails on the nth message of one batch
    cannot be arranged with a real RabbitMQ at an exact message. The store and the job
    records are the real MinIO ones."""

    def __init__(self, accepted: int) -> None:
        self.accepted, self.sent = accepted, []

    def submit(self, request: JobRequested) -> None:
        if len(self.sent) == self.accepted:
            raise BrokerUnavailable("publishing to RabbitMQ failed: connection reset")
        self.sent.append(request.job_id)

    def event(self, message: JobStatus) -> None:
        """Events (job.status) are not what this double tests: accepted."""


def test_jobs_after_the_failed_publish_are_marked_not_queued_and_the_sent_ones_stay_queued(
        minio_settings: Settings, busybox_id: str) -> None:
    store = MinioStore(minio_settings)
    records = records_for(store)
    tag = uuid.uuid4().hex
    requests = [JobRequested(job_id=(spec := build_spec(busybox_id, ["echo", tag, str(n)], [], [], [])).job_id,
                             spec=spec) for n in range(5)]
    publisher = _BrokerGoneAfter(accepted=2)
    with pytest.raises(BrokerUnavailable):
        submit_many(store, records, publisher, requests)  # type: ignore[arg-type]
    states = [records.state(r.job_id) for r in requests]
    assert [s.state for s in states[:2]] == [JobState.QUEUED, JobState.QUEUED]  # in the queue
    assert all(s.state == JobState.FAILED and (s.reason or "").startswith("not queued") for s in states[2:])
    assert submit_many(store, records, _BrokerGoneAfter(accepted=5), requests) == [True] * 5  # type: ignore[arg-type]
    assert all(records.state(r.job_id).state == JobState.QUEUED for r in requests)
