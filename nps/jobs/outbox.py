"""Submissions whose message RabbitMQ has not confirmed yet, and the repair of interrupted ones.

Submitting writes an entry ``jobs-unpublished/<job id>.<token>`` before it records anything
about the job, and deletes it once RabbitMQ confirmed the job's message. An entry older than a
grace period was left by a submitter that died (SIGKILL, a lost machine) somewhere between
recording the job and publishing it. Job workers look for such entries every so often
(``republish_stranded``) and publish the job again if it is still QUEUED (or record it QUEUED
first, if the submitter died before that). One entry per submission: deleting one never
removes another submission's.

Publishing a job twice is harmless: a second delivery waits on the job's lock, then finds the
job finished (content addressing: the same spec commits the same dataset). So a submitter that
was merely slow past the grace period costs a duplicate message, nothing more.
"""

from __future__ import annotations

import json
import logging
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Protocol

from nps.blobs import Blobs
from nps.errors import CorruptDataset, JobNotFound
from nps.hashing import is_dataset_id
from schemas.messages import JobRequested, JobState, JobStatus

log = logging.getLogger(__name__)
FOLDER = "jobs-unpublished"
_LONG_AGO = datetime(1970, 1, 1, tzinfo=UTC)


class JobPublisher(Protocol):
    """What the repair needs of a broker publisher."""

    def submit(self, request: JobRequested) -> None:
        """Publish a job request and wait for the broker's confirm."""


class JobRecords(Protocol):
    """What the repair needs of the job records (``nps.jobs.records.JobRecords``, which holds
    this module's ``Outbox``: a Protocol here keeps the two modules out of an import cycle)."""

    outbox: Outbox

    def request(self, job_id: str) -> JobRequested:
        """The saved request; JobNotFound if the job was never submitted."""

    def history(self, job_id: str) -> list[JobStatus]:
        """Every status the job went through, oldest first."""

    def set_state(self, job_id: str, state: JobState, reason: str | None = None) -> JobStatus:
        """Append a status to the history and return it."""


@dataclass(frozen=True)
class Unpublished:
    """One submission's entry: the job, and when its submitter began."""

    name: str
    job_id: str
    since: datetime


class Outbox:
    """The entries of submissions in flight, in a ``Blobs`` space (beside the job records)."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def add(self, job_id: str) -> str:
        """Note that ``job_id`` is being submitted; returns the entry's name for ``remove``."""
        name = f"{job_id}.{uuid.uuid4().hex}"
        body = {"job_id": job_id, "since": datetime.now(UTC).isoformat(), "host": socket.gethostname()}
        self.blobs.put(f"{FOLDER}/{name}", json.dumps(body).encode())
        return name

    def remove(self, name: str) -> None:
        """The submission's message was confirmed (or the repair handled it)."""
        self.blobs.delete(f"{FOLDER}/{name}")

    def entries(self) -> Iterator[Unpublished]:
        """Every entry; one that cannot be read counts as very old (it is looked at at once)."""
        for name in self.blobs.children(FOLDER):
            job_id = name.partition(".")[0]
            if not is_dataset_id(job_id):
                continue
            raw = self.blobs.get(f"{FOLDER}/{name}")
            if raw is None:  # removed since the listing
                continue
            try:
                since = datetime.fromisoformat(json.loads(raw)["since"])
            except (ValueError, KeyError, TypeError):
                since = _LONG_AGO
            yield Unpublished(name, job_id, since)


class Repair(Enum):
    """What to do about a job whose submission was interrupted."""

    PUBLISH = "publish"  # recorded QUEUED: publish it (again)
    QUEUE_AND_PUBLISH = "queue and publish"  # requested but no status yet: record QUEUED, publish
    DROP = "drop"  # running, finished or never requested: nothing waits for a message


def repair_for(last: JobState | None, requested: bool) -> Repair:
    """The repair of a job whose submitter left an entry past the grace period (pure), from
    the job's latest state (None: no status) and whether its request was saved."""
    if not requested:
        return Repair.DROP  # the submitter died before saving it: no one was told of this job
    if last == JobState.QUEUED:
        return Repair.PUBLISH
    if last is None:
        return Repair.QUEUE_AND_PUBLISH
    return Repair.DROP


def stale(entries: list[Unpublished], now: datetime, grace_s: float) -> dict[str, list[Unpublished]]:
    """The entries older than ``grace_s``, by job (pure)."""
    due: dict[str, list[Unpublished]] = {}
    for entry in entries:
        if (now - entry.since).total_seconds() >= grace_s:
            due.setdefault(entry.job_id, []).append(entry)
    return due


def republish_stranded(records: JobRecords, publisher: JobPublisher, grace_s: float,
                       now: datetime | None = None) -> list[str]:
    """Publish again every job whose submitter died between recording and publishing it, once
    its entry is ``grace_s`` old; returns their ids. Safe to run in several workers at once:
    a job gets at most a duplicate message, which is harmless."""
    due = stale(list(records.outbox.entries()), now or datetime.now(UTC), grace_s)
    published = []
    for job_id, entries in due.items():
        try:
            repaired = _repair(records, publisher, job_id)
        except CorruptDataset as exc:  # an unreadable record will not become readable: leave it
            log.warning("job %s: its submission was interrupted, and %s", job_id, exc)
            repaired = False
        if repaired:
            published.append(job_id)
        for entry in entries:  # only after the publish: a crash here leaves them to the next round
            records.outbox.remove(entry.name)
    return published


def _repair(records: JobRecords, publisher: JobPublisher, job_id: str) -> bool:
    history = records.history(job_id)
    try:
        request: JobRequested | None = records.request(job_id)
    except JobNotFound:
        request = None
    how = repair_for(history[-1].state if history else None, request is not None)
    if how is Repair.DROP or request is None:
        return False
    if how is Repair.QUEUE_AND_PUBLISH:
        records.set_state(job_id, JobState.QUEUED, "recorded by the repair of an interrupted submission")
    publisher.submit(request)
    log.info("job %s: its submitter stopped before RabbitMQ confirmed its message; published it again", job_id)
    return True
