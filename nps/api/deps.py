"""What every route shares: the services (made once per process), the caller, visibility."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Path, Request
from starlette.concurrency import run_in_threadpool

from nps.api.analyses import Analyses
from nps.api.auth import Auth, AuthError, User
from nps.api.groups import Groups
from nps.broker import PublisherPool, Topology, topology
from nps.config import Settings
from nps.errors import DatasetNotFound, InvalidQuery, JobNotFound
from nps.hashing import check_dataset_id
from nps.index import DatasetIndex
from nps.index.jobs import JobIndex
from nps.jobs.images import ImageCatalog
from nps.jobs.records import JobRecords
from nps.layers import Layers
from nps.store.minio import MinioStore
from schemas.dataset import DatasetRecord
from schemas.manifest import Manifest
from schemas.messages import AnalysisRequested, JobRequested

DatasetIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{40}$", description="40 lowercase hex characters")]
FIELD = r"[A-Za-z0-9_.]{1,100}"


@dataclass
class Services:
    """What the routes use."""

    settings: Settings
    store: MinioStore
    index: DatasetIndex
    records: JobRecords
    auth: Auth
    groups: Groups
    layers: Layers
    analyses: Analyses
    lock: threading.Lock
    jobs: JobIndex
    images: ImageCatalog


async def services(request: Request) -> Services:
    """The process's services (async: no thread hop for a lookup)."""
    return request.app.state.services  # type: ignore[no-any-return]


Svc = Annotated[Services, Depends(services)]
_publishers: dict[Topology, PublisherPool] = {}
_publishers_lock = threading.Lock()


def publishers(settings: Settings) -> PublisherPool:
    """The process's confirmed publishers: long-lived connections lent to one request thread
    at a time (as many as requests publish at once), not one connection per submit."""
    topo = topology(settings)
    with _publishers_lock:
        pool = _publishers.get(topo)
        if pool is None:
            pool = _publishers[topo] = PublisherPool(topo)
        return pool


def publish(svc: Services, requests: list[JobRequested]) -> list[bool]:
    """Submit requests through one confirmed publisher; True for each one queued (False: its
    result already exists)."""
    from nps.jobs.submit import submit_many

    with publishers(svc.settings).borrow() as publisher:
        return submit_many(svc.store, svc.records, publisher, requests)


async def caller(svc: Svc, authorization: Annotated[str | None, Header()] = None) -> User:
    """The user the bearer token belongs to (401 otherwise). A token checked moments ago is
    answered here; otherwise the object-store reads run in a worker thread."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("missing or invalid token")
    known = svc.auth.trusted(token.strip())
    if known is not None:
        return known
    return await run_in_threadpool(svc.auth.authenticate, token.strip())


Caller = Annotated[User, Depends(caller)]


def visible(svc: Services, user: User, dataset_id: str) -> tuple[DatasetRecord, Manifest]:
    """A dataset the caller may read; another project's answers exactly like a missing one."""
    check_dataset_id(dataset_id)
    hidden = DatasetNotFound(f"dataset {dataset_id} not found")
    try:
        manifest = svc.store.manifest(dataset_id)
        record = svc.store.record(dataset_id)
    except DatasetNotFound:
        raise hidden from None
    if not user.can_read(record.project):
        raise hidden
    return record, manifest


def job_request(svc: Services, user: User, job_id: str) -> Any:
    """A job the caller may read (404 otherwise)."""
    check_dataset_id(job_id)
    try:
        request = svc.records.request(job_id)
    except JobNotFound:
        request = None
    if request is None or not user.can_read(request.project):
        raise JobNotFound(f"no job {job_id}")
    return request


def cursor(after: str | None) -> list[Any] | None:
    """A ``search_after`` cursor this API handed out as ``next``."""
    if not after:
        return None
    try:
        value = json.loads(after)
    except ValueError as exc:
        raise InvalidQuery("after: not a cursor returned by this endpoint") from exc
    if not isinstance(value, list):
        raise InvalidQuery("after: not a cursor returned by this endpoint")
    return value


def publish_analysis(svc: Services, message: AnalysisRequested) -> None:
    """Send an analysis request to the analysts (confirmed), on one of the process's publishers."""
    with publishers(svc.settings).borrow() as publisher:
        publisher.analysis(message)
