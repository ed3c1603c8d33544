"""Jobs: submit, list, get, cancel, logs."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from nps.api.auth import User, require_write
from nps.api.deps import Caller, DatasetIdPath, Svc, job_request, publish, visible
from nps.api.models import JobOut, JobRow, JobsPage
from nps.errors import InvalidJob, JobNotFound
from schemas.common import DEFAULT_PROJECT
from schemas.job import Resources
from schemas.messages import JobRequested, JobState

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


class JobInputIn(BaseModel):
    """One input of a submitted job."""

    dataset: str = Field(pattern=r"^[0-9a-f]{40}$")
    mount: str = Field(min_length=2, max_length=1024)


class JobIn(BaseModel):
    """A job to submit (the same as ``nps submit``)."""

    model_config = {"extra": "forbid"}
    image: str = Field(min_length=1, max_length=512)
    command: list[Annotated[str, Field(max_length=65536)]] = Field(min_length=1, max_length=1000)
    inputs: list[JobInputIn] = Field(default_factory=list, max_length=1000)
    env: dict[str, Annotated[str, Field(max_length=65536)]] = Field(default_factory=dict, max_length=200)
    parameters: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=200)
    resources: Resources = Resources()
    project: str | None = Field(default=None, max_length=128)


class Accepted(BaseModel):
    """A submitted job: its id is its result's id."""

    job_id: str
    queued: bool


def result_project(user: User, projects: set[str], asked: str | None) -> str:
    """The project a result belongs to: its inputs' one, or the one asked for (needed when the
    inputs come from several projects); the caller must be allowed to write there."""
    project = asked or (next(iter(projects)) if len(projects) == 1 else None)
    if project is None and len(projects) > 1:
        raise InvalidJob("inputs come from several projects: say which project the result belongs to")
    project = project or DEFAULT_PROJECT
    require_write(user, project)
    return project


@router.post("", status_code=202)
def submit_job(job: JobIn, user: Caller, svc: Svc) -> Accepted:
    """Queue a job (inputs pinned to their current revision); answers at once with its id."""
    from nps.engine import DockerEngine
    from nps.jobs.plan import build_spec

    project = result_project(user, {visible(svc, user, i.dataset)[0].project or DEFAULT_PROJECT
                                    for i in job.inputs}, job.project)
    pinned = [(i.dataset, svc.store.manifest(i.dataset).revision, i.mount) for i in job.inputs]
    image_id = DockerEngine(svc.settings.docker_host).resolve_image(job.image)
    spec = build_spec(image_id, job.command, pinned, list(job.env.items()),
                      [(k, api_parameter(v)) for k, v in job.parameters.items()])
    request = JobRequested(job_id=spec.job_id, spec=spec, resources=job.resources,
                           project=project if project != DEFAULT_PROJECT else None, requested_by=user.name)
    return Accepted(job_id=spec.job_id, queued=publish(svc, [request])[0])


@router.get("")
def list_jobs(user: Caller, svc: Svc,
              state: Annotated[list[JobState], Query(max_length=8, description="only jobs in these states")] = [],  # noqa: B006
              size: Annotated[int, Query(ge=1, le=500)] = 100,
              after: Annotated[str | None, Query(pattern=r"^[0-9a-f]{40}$", description="the previous answer's next")]
              = None) -> JobsPage:
    """Jobs of the caller's projects in id order, with their latest state, a page at a time."""
    from concurrent.futures import ThreadPoolExecutor

    def row(job_id: str) -> JobRow | None:
        try:
            request = svc.records.request(job_id)
        except JobNotFound:
            return None
        if not user.can_read(request.project):
            return None
        history = svc.records.history(job_id)
        latest = history[-1] if history else None
        return JobRow(job_id=job_id, state=latest.state.value if latest else "QUEUED",
                      reason=latest.reason if latest else None, project=request.project or DEFAULT_PROJECT,
                      requested_by=request.requested_by, updated=latest.created_at.isoformat() if latest else None)

    rows: list[JobRow] = []
    ids = (i for i in svc.records.ids() if after is None or i > after)
    with ThreadPoolExecutor(8) as pool:
        while len(rows) < size:
            chunk = [i for _, i in zip(range(64), ids, strict=False)]
            if not chunk:
                break
            rows += [r for r in pool.map(row, chunk) if r and (not state or r.state in state)]
    rows = rows[:size]
    return JobsPage(jobs=rows, next=rows[-1].job_id if len(rows) == size else None)


@router.get("/{job_id}")
def job(job_id: DatasetIdPath, user: Caller, svc: Svc) -> JobOut:
    """A job's spec, resources, state and timestamped history."""
    request = job_request(svc, user, job_id)
    history = svc.records.history(job_id)
    return JobOut(job_id=job_id, state=history[-1].state.value if history else "QUEUED", request=request,
                  history=history)


@router.post("/{job_id}/cancel", status_code=202)
def cancel(job_id: DatasetIdPath, user: Caller, svc: Svc) -> dict[str, str]:
    """Ask a queued or running job to stop."""
    request = job_request(svc, user, job_id)
    require_write(user, request.project)
    svc.records.request_cancel(job_id)
    return {"job_id": job_id, "cancel": "requested"}


@router.get("/{job_id}/logs", responses={200: {"content": {"text/plain": {}}}})
def logs(job_id: DatasetIdPath, user: Caller, svc: Svc,
         stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout") -> StreamingResponse:
    """A job's stdout or stderr (size-capped; kept for failed jobs too)."""
    job_request(svc, user, job_id)
    data = svc.records.log(job_id, stream) or b""
    return StreamingResponse(iter([data]), media_type="text/plain")


def api_parameter(value: str | int | float | bool | None) -> str:
    """A JSON parameter as the text ``build_spec`` parses back: typed values keep their type
    (``true`` stays a boolean, not the string ``"True"``); strings are taken as given."""
    return value if isinstance(value, str) else json.dumps(value)

