"""Building a job request (validated against the store) and submitting it to the servers."""

from __future__ import annotations

from nps.broker import Publisher
from nps.errors import InvalidJob
from nps.jobs.plan import build_resources, build_spec, parse_assignment, parse_input
from nps.jobs.records import TERMINAL, JobRecords
from nps.store import DatasetStore
from schemas.messages import JobRequested, JobState


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


def prepare(store: DatasetStore, records: JobRecords, request: JobRequested) -> bool:
    """Record ``request`` (QUEUED), or COMPLETE at once if its result exists; True if it must
    then be published. Safe to run for many requests in parallel threads."""
    if store.exists(request.job_id):
        if not records.history(request.job_id):
            records.save_request(request)
            records.set_state(request.job_id, JobState.COMPLETE, "result already exists")
        return False
    records.save_request(request)
    records.clear_cancel(request.job_id)
    history = records.history(request.job_id)
    if not history or history[-1].state in TERMINAL:
        records.set_state(request.job_id, JobState.QUEUED)
    return True


def submit(store: DatasetStore, records: JobRecords, publisher: Publisher, request: JobRequested) -> bool:
    """Queue ``request`` unless its result exists (then it is COMPLETE at once). True if queued."""
    if not prepare(store, records, request):
        return False
    publisher.submit(request)
    return True


def submit_many(store: DatasetStore, records: JobRecords, publisher: Publisher, requests: list[JobRequested],
                threads: int = 8) -> list[bool]:
    """``submit`` for many requests: their records written by ``threads`` threads at once (each
    costs a few object-store round trips), then published one by one with confirms."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max(1, threads)) as pool:
        needed = list(pool.map(lambda r: prepare(store, records, r), requests))
    for request, publish in zip(requests, needed, strict=True):
        if publish:
            publisher.submit(request)
    return needed
