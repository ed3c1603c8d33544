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


def submit(store: DatasetStore, records: JobRecords, publisher: Publisher, request: JobRequested) -> bool:
    """Queue ``request`` unless its result exists (then it is COMPLETE at once). True if queued."""
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
    publisher.submit(request)
    return True
