"""Building a job request (validated against the store) and submitting it to the servers."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from enum import Enum
from typing import TypeVar

from nps.broker import Publisher
from nps.errors import InvalidJob, NPSError
from nps.jobs.plan import build_resources, build_spec, parse_assignment, parse_input
from nps.jobs.records import TERMINAL, JobRecords
from nps.store import DatasetStore
from schemas.messages import JobRequested, JobState, JobStatus

log = logging.getLogger(__name__)
CHUNK = 256  # requests recorded, then published, at a time: keeps each outbox entry young
T = TypeVar("T")
R = TypeVar("R")


class Prepared(Enum):
    """What ``prepare`` found: the result exists (DONE), it recorded the job QUEUED (QUEUED),
    or the job was already queued or running and is published again (AGAIN; harmless, the
    worker runs a job once)."""

    DONE = "done"
    QUEUED = "queued"
    AGAIN = "again"


def build_request(store: DatasetStore, image_id: str, command: list[str], inputs: list[str] | None,
                  env: list[str] | None, params: list[str] | None, cpu: float, memory: str, walltime: str,
                  network: bool, retries: int, project: str | None, gpu: int = 0) -> JobRequested:
    """Validate everything a job needs before anything runs: inputs must exist, pinned by revision."""
    pinned = []
    for arg in inputs or []:
        dataset, mount = parse_input(arg)
        if not store.exists(dataset):
            raise InvalidJob(f"input {dataset} does not exist in the {store.name} store")
        pinned.append((dataset, store.manifest(dataset).revision, mount))
    spec = build_spec(image_id, command, pinned,
                      [parse_assignment(e, "-e") for e in env or []], [parse_assignment(p, "-p") for p in params or []])
    resources = build_resources(cpu, memory, walltime, gpu, network, retries)
    return JobRequested(job_id=spec.job_id, spec=spec, resources=resources, project=project)


def prepare(store: DatasetStore, records: JobRecords,
            request: JobRequested) -> tuple[Prepared, str | None, JobStatus | None]:
    """Record ``request`` (QUEUED), or COMPLETE at once if its result exists; say whether it
    must then be published, name the outbox entry to remove once it is, and give the status
    recorded (None if none). Safe to run for many requests in parallel threads."""
    if store.exists(request.job_id):
        if not records.history(request.job_id):
            records.save_request(request)
            return Prepared.DONE, None, records.set_state(request.job_id, JobState.COMPLETE, "result already exists")
        return Prepared.DONE, None, None
    # First of all: if this process dies from here on, the job workers' repair finds the entry
    # and publishes the job (nps.jobs.outbox), so no job is left QUEUED without a message.
    entry = records.outbox.add(request.job_id)
    records.save_request(request)
    records.clear_cancel(request.job_id)
    history = records.history(request.job_id)
    if not history or history[-1].state in TERMINAL:
        return Prepared.QUEUED, entry, records.set_state(request.job_id, JobState.QUEUED)
    return Prepared.AGAIN, entry, None


def submit(store: DatasetStore, records: JobRecords, publisher: Publisher, request: JobRequested) -> bool:
    """Queue ``request`` unless its result exists (then it is COMPLETE at once). True if queued."""
    return submit_many(store, records, publisher, [request], threads=1)[0]


def submit_many(store: DatasetStore, records: JobRecords, publisher: Publisher, requests: list[JobRequested],
                threads: int = 8) -> list[bool]:
    """``submit`` for many requests, a chunk at a time: the records of a chunk written by
    ``threads`` threads at once (each costs a few object-store round trips), then published
    one by one with confirms.

    If publishing fails, every job this call marked QUEUED and did not get into the queue is
    marked FAILED ("not queued"), so nothing waits for a message that was never sent; submitting
    again queues it. (A message whose confirm alone was lost still runs: the worker's states
    follow the FAILED one.) Jobs of later chunks are not recorded at all. If this process dies
    instead, the job workers publish what it recorded (``nps.jobs.outbox``)."""
    queued: list[bool] = []
    for start in range(0, len(requests), CHUNK):
        queued += _submit_chunk(store, records, publisher, requests[start:start + CHUNK], threads)
    return queued


def _submit_chunk(store: DatasetStore, records: JobRecords, publisher: Publisher, requests: list[JobRequested],
                  threads: int) -> list[bool]:
    prepared = _in_threads(lambda r: prepare(store, records, r), requests, threads)
    confirmed: list[str] = []
    try:
        for n, (request, (how, entry, _)) in enumerate(zip(requests, prepared, strict=True)):
            if how is Prepared.DONE:
                continue
            try:
                publisher.submit(request)
            except Exception as exc:
                _not_queued(records, [r.job_id for r, (h, _, _) in zip(requests[n:], prepared[n:], strict=True)
                                      if h is Prepared.QUEUED], exc)
                raise
            if entry is not None:
                confirmed.append(entry)
    finally:
        _in_threads(lambda name: _forget(records, name), confirmed, threads)
    _announce(publisher, [status for _, _, status in prepared if status is not None])
    return [how is not Prepared.DONE for how, _, _ in prepared]


def _announce(publisher: Publisher, statuses: list[JobStatus]) -> None:
    """Publish the statuses recorded as ``job.status`` events (the jobs index follows them). The
    record is authoritative: a lost event only delays the index, so a failure is logged, and
    the rest of the chunk is not tried against a broker that just failed."""
    for status in statuses:
        try:
            publisher.event(status)
        except NPSError as exc:
            log.warning("could not announce %d job status(es) (the jobs index lags until their next "
                        "change or `nps reindex`): %s", len(statuses), exc)
            return


def _in_threads(fn: Callable[[T], R], items: list[T], threads: int) -> list[R]:
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def _forget(records: JobRecords, entry: str) -> None:
    """Remove the outbox entry of a confirmed message. If that fails, the repair publishes the
    job once more later: a harmless duplicate, not worth failing a submission for."""
    try:
        records.outbox.remove(entry)
    except NPSError as exc:
        log.warning("could not remove outbox entry %s: %s", entry, exc)


def _not_queued(records: JobRecords, job_ids: list[str], exc: Exception) -> None:
    for job_id in job_ids:
        try:
            history = records.history(job_id)
            if history and history[-1].state == JobState.QUEUED:
                records.set_state(job_id, JobState.FAILED, f"not queued ({exc}); submit it again")
        except Exception:  # the store may be failing too; the caller still hears the first error
            log.warning("job %s: could not record that it was not queued", job_id, exc_info=True)
