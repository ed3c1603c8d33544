"""What the API answers, as models: the OpenAPI description says exactly what each route
returns, and FastAPI checks every answer against it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from nps.analyses import Analysis
from nps.groups import Group
from nps.layers import Layer
from schemas.messages import JobRequested, JobStatus


class Me(BaseModel):
    """The token's user."""

    name: str
    role: str
    projects: list[str]


class DatasetOut(BaseModel):
    """A dataset's record (``.nps/dataset.json``) and manifest summary."""

    record: dict[str, Any] = Field(description="kind, project, origin (series, upload or result with its job), inputs")
    revision: int
    files: int
    bytes: int


class MetadataOut(BaseModel):
    """A dataset's user metadata."""

    dataset: str
    merged: dict[str, Any] = Field(description="the current view, searched as user.*")
    layers: list[Layer]


class Related(BaseModel):
    """A dataset found walking provenance, and how many steps away."""

    id: str
    depth: int


class ProvenanceOut(BaseModel):
    """Ancestors or descendants of a dataset."""

    dataset: str
    direction: str
    depth: int
    datasets: list[Related]


class Bucket(BaseModel):
    """One value of a facet and how many hits have it."""

    value: str | int | float | bool
    count: int


class SearchOut(BaseModel):
    """A page of hits (index documents), the facet counts asked for, and the next page's cursor."""

    total: int
    hits: list[dict[str, Any]]
    facets: dict[str, list[Bucket]] = Field(default_factory=dict)
    next: str | None = Field(description="pass as `after` for the next page; null on the last page")


class GroupPage(BaseModel):
    """A group and a page of its members (ids, or documents when filtered by a query)."""

    group: Group
    total: int
    members: list[dict[str, Any]]
    next: str | None


class AnalysisCreated(BaseModel):
    """A recorded analysis, PLANNING: its members and jobs are known once the analyst planned it."""

    analysis: Analysis


class AnalysisStatus(BaseModel):
    """An analysis's progress."""

    analysis: Analysis
    submitted: int = Field(description="jobs queued so far")
    complete: int = Field(description="jobs whose result exists")
    states: dict[str, int] = Field(description="jobs by state (PLANNED: not queued yet; INDEXING: finished, "
                                               "result not searchable yet; PENDING: not read)")
    done: bool = Field(description="every job queued and finished and every result searchable, "
                                   "or planning failed (the analysis's state and reason say why)")


class AnalysisJobs(BaseModel):
    """Every job id of a planned analysis and its members, in plan order (a map's job n is member n's)."""

    analysis: str
    job_ids: list[str]
    members: list[str]


class JobRow(BaseModel):
    """A job and its latest state, as the jobs index has it (a second or so behind the record)."""

    job_id: str
    state: str
    reason: str | None
    project: str
    requested_by: str | None
    updated: str | None = Field(description="when it reached its state")
    image: str | None = Field(default=None, description="the image ID it runs")
    command: str | None = Field(default=None, description="its command, words joined (cut at 1,000 characters)")
    submitted_at: str | None = None
    queued_at: str | None = Field(default=None, description="when its latest run was queued")
    started_at: str | None = Field(default=None, description="when its latest run started staging or running")
    finished_at: str | None = Field(default=None, description="when it ended (COMPLETE, FAILED or CANCELLED)")

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> JobRow:
        """A row from a jobs index document (``nps.index.jobs.job_document``)."""
        return cls(job_id=doc["id"], **{k: doc.get(k) for k in cls.model_fields if k != "job_id"})


class JobsPage(BaseModel):
    """A page of jobs."""

    jobs: list[JobRow]
    next: str | None = Field(description="pass as `after` for the next page; null on the last page")


class JobOut(BaseModel):
    """A job: what was asked, its state and its history."""

    job_id: str
    state: str
    request: JobRequested
    history: list[JobStatus]
