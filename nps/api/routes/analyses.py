"""Analyses over groups and query results: map (a job per member) and reduce (one job over all)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field

from nps.analyses import Analysis
from nps.api.deps import Caller, Svc
from nps.api.models import AnalysisCreated, AnalysisJobs, AnalysisStatus
from schemas.job import Resources

router = APIRouter(prefix="/api/v1/analyses", tags=["analyses"])
AnalysisIdPath = Annotated[str, Path(pattern=r"^a-[0-9a-f]{12}$")]


class AnalysisIn(BaseModel):
    """An analysis: which members (a group, a query, or a group narrowed by a query) and the job
    to run. ``mount`` is where each member appears: ``/input`` for a map by default,
    ``/inputs/{id}`` for a reduce (``{id}`` is the member's id, ``{n}`` its position)."""

    model_config = {"extra": "forbid"}
    kind: Literal["map", "reduce"]
    name: str = Field(min_length=1, max_length=200)
    group: str | None = Field(default=None, pattern=r"^g-[0-9a-f]{12}$")
    query: str | None = Field(default=None, min_length=1, max_length=2000)
    image: str = Field(min_length=1, max_length=512)
    command: list[Annotated[str, Field(max_length=65536)]] = Field(min_length=1, max_length=1000)
    mount: str | None = Field(default=None, min_length=2, max_length=1024)
    env: dict[str, Annotated[str, Field(max_length=65536)]] = Field(default_factory=dict, max_length=200)
    parameters: dict[str, Annotated[str, Field(max_length=4096)]] = Field(default_factory=dict, max_length=200)
    resources: Resources = Resources()
    project: str | None = Field(default=None, max_length=128)


@router.post("", status_code=202)
def create(body: AnalysisIn, user: Caller, svc: Svc) -> AnalysisCreated:
    """Record the analysis and answer at once (state PLANNING); the analyst then plans it (its
    members, every job id: ``GET .../jobs``; members whose result exists are skipped) and
    queues its jobs. Whatever can be checked at once is: the group, how many members the caller
    can see, the project, the caller's rights, the image, mounts and parameters."""
    image_id = svc.images.resolve(body.image)  # the image catalog: the API holds no container engine
    analysis = svc.analyses.request(
        user, body.kind, body.name, body.group, body.query, body.image, image_id, body.command, body.mount, body.env,
        body.parameters, body.resources, body.project)
    return AnalysisCreated(analysis=analysis)


@router.get("")
def list_analyses(user: Caller, svc: Svc) -> list[Analysis]:
    """Analyses of the caller's projects, newest first."""
    return list(svc.analyses.for_user(user))


@router.get("/{analysis_id}")
def show(analysis_id: AnalysisIdPath, user: Caller, svc: Svc) -> AnalysisStatus:
    """Progress: the analysis's state (PLANNING, SUBMITTING, SUBMITTED, FAILED with a reason),
    jobs submitted, complete, failed, running, queued; ``done`` when nothing more will happen."""
    return AnalysisStatus(**svc.analyses.status(svc.analyses.get(user, analysis_id)))


@router.get("/{analysis_id}/jobs")
def jobs(analysis_id: AnalysisIdPath, user: Caller, svc: Svc) -> AnalysisJobs:
    """Every job id of the analysis and its members, in plan order (a map's job n is member
    n's); 409 while the analysis is being planned."""
    analysis = svc.analyses.get(user, analysis_id)
    job_ids, members = svc.analyses.jobs(analysis)
    return AnalysisJobs(analysis=analysis.id, job_ids=job_ids, members=members)
