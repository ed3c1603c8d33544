"""Building a job request (validated against the store) and submitting it to the servers."""

from __future__ import annotations

import logging
from enum import Enum

from nps.broker import Publisher
from nps.errors import InvalidJob
from nps.jobs.plan import build_resources, build_spec, parse_assignment, parse_input
from nps.jobs.records import TERMINAL, JobRecords
from nps.store import DatasetStore
from schemas.messages import JobRequested, JobState

log = logging.getLogger(__name__)


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


def prepare(store: DatasetStore, records: JobRecords, request: JobRequested) -> Prepared:
    """Record ``request`` (QUEUED), or COMPLETE at once if its result exists; say whether it
    must then be published. Safe to run for many requests in parallel threads."""
    if store.exists(request.job_id):
        if not records.history(request.job_id):
            records.save_request(request)
            records.set_state(request.job_id, JobState.COMPLETE, "result already exists")
        return Prepared.DONE
    records.save_request(request)
    records.clear_cancel(request.job_id)
    history = records.history(request.job_id)
    if not history or history[-1].state in TERMINAL:
        records.set_state(request.job_id, JobState.QUEUED)
        return Prepared.QUEUED
    return Prepared.AGAIN


def submit(store: DatasetStore, records: JobRecords, publisher: Publisher, request: JobRequested) -> bool:
    """Queue ``request`` unless its result exists (then it is COMPLETE at once). True if queued."""
    return submit_many(store, records, publisher, [request], threads=1)[0]


def submit_many(store: DatasetStore, records: JobRecords, publisher: Publisher, requests: list[JobRequested],
                threads: int = 8) -> list[bool]:
    """``submit`` for many requests: their records written by ``threads`` threads at once (each
    costs a few object-store round trips), then published one by one with confirms.

    If publishing fails, every job this call marked QUEUED and did not get into the queue is
    marked FAILED ("not queued"), so nothing waits for a message that was never sent; submitting
    again queues it. (A message whose confirm alone was lost still runs: the worker's states
    follow the FAILED one.)"""
    from concurrent.futures import ThreadPoolExecutor

    if threads <= 1 or len(requests) <= 1:
        prepared = [prepare(store, records, r) for r in requests]
    else:
        with ThreadPoolExecutor(min(threads, len(requests))) as pool:
            prepared = list(pool.map(lambda r: prepare(store, records, r), requests))
    for n, (request, how) in enumerate(zip(requests, prepared, strict=True)):
        if how is Prepared.DONE:
            continue
        try:
            publisher.submit(request)
        except Exception as exc:
            _not_queued(records, [r.job_id for r, h in zip(requests[n:], prepared[n:], strict=True)
                                  if h is Prepared.QUEUED], exc)
            raise
    return [how is not Prepared.DONE for how in prepared]


def _not_queued(records: JobRecords, job_ids: list[str], exc: Exception) -> None:
    for job_id in job_ids:
        try:
            history = records.history(job_id)
            if history and history[-1].state == JobState.QUEUED:
                records.set_state(job_id, JobState.FAILED, f"not queued ({exc}); submit it again")
        except Exception:  # the store may be failing too; the caller still hears the first error
            log.warning("job %s: could not record that it was not queued", job_id, exc_info=True)
