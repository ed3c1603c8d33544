"""What an analysis is: the request (frozen when it is made) and how far its planning and
submission got."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from nps.errors import DatasetNotFound
from schemas.common import DEFAULT_PROJECT, Frozen, utcnow
from schemas.job import Resources

AnalysisId = Annotated[str, StringConstraints(pattern=r"^a-[0-9a-f]{12}$")]
Member = tuple[str, int]  # (dataset id, pinned revision)


class AnalysisNotFound(DatasetNotFound):
    """Raised when no such analysis exists (or it is not in the caller's projects)."""


class AnalysisState(StrEnum):
    """Where an analysis is: its jobs then have states of their own."""

    PLANNING = "PLANNING"  # recorded; members not resolved yet
    SUBMITTING = "SUBMITTING"  # planned: its jobs are being queued (``submitted`` of ``jobs``)
    SUBMITTED = "SUBMITTED"  # every job queued, or complete already
    FAILED = "FAILED"  # could not be planned (``reason``); nothing was queued


ACTIVE = frozenset({AnalysisState.PLANNING, AnalysisState.SUBMITTING})


class Analysis(Frozen):
    """An analysis as shown: what was asked, and (once planned) its size and state."""

    id: AnalysisId
    name: str
    kind: Literal["map", "reduce"]
    project: str = DEFAULT_PROJECT
    group: str | None = None
    query: str | None = None
    image: str
    image_id: str
    command: tuple[str, ...]
    mount: str
    env: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Resources()
    members: int = Field(default=0, description="members resolved when planned")
    jobs: int = Field(default=0, description="jobs planned (a map's job n is member n's)")
    skipped: int = Field(default=0, description="jobs whose result existed when planned")
    state: AnalysisState = AnalysisState.PLANNING
    reason: str | None = Field(default=None, description="why planning failed")
    created_by: str
    created_at: str = Field(default_factory=lambda: utcnow().isoformat())


class Progress(Frozen):
    """How far the analyst got (``analyses/<id>/progress.json``): it resumes from here."""

    state: AnalysisState = AnalysisState.PLANNING
    step: int = Field(default=0, ge=0, description="the step a current analysis.requested message carries")
    members: int = 0
    jobs: int = 0
    skipped: int = 0
    submitted: int = Field(default=0, ge=0, description="jobs queued so far, in plan order: the cursor")
    reason: str | None = None
    projects: tuple[str, ...] | None = Field(
        default=None, description="what the requester could read: members are resolved within it (None: all)")
