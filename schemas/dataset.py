"""``.nps/dataset.json``: what a dataset is, where it came from, and what it was made from."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from schemas.common import DatasetId, Frozen, utcnow
from schemas.hashing import series_dataset_id
from schemas.job import JobInput, JobSpec, Resources


class SeriesOrigin(Frozen):
    """An imported DICOM series: its id is ``sha1(SeriesInstanceUID)``."""

    kind: Literal["series"] = "series"
    series_instance_uid: str
    study_instance_uid: str | None = None


class ResultOrigin(Frozen):
    """The output of a job: its id is ``sha1(canonical JSON of the spec)``."""

    kind: Literal["result"] = "result"
    job: JobSpec
    resources: Resources = Resources()
    exit_code: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    host: str | None = None
    duration_s: float | None = Field(default=None, ge=0, description="wall time the container ran")
    peak_memory_mb: float | None = Field(default=None, ge=0, description="sampled peak memory use")


class UploadOrigin(Frozen):
    """A directory put into the store by hand: its id is the hash of its file list (see nps.store)."""

    kind: Literal["upload"] = "upload"
    source: str = Field(default="", max_length=4096, description="where it was uploaded from, informative")


Origin = Annotated[SeriesOrigin | ResultOrigin | UploadOrigin, Field(discriminator="kind")]


class DatasetRecord(Frozen):
    """Identity and provenance of one dataset."""

    schema_: Literal["nps.dataset"] = Field(default="nps.dataset", alias="schema")
    version: Literal[1] = 1
    id: DatasetId
    created_at: datetime = Field(default_factory=utcnow)
    project: str | None = Field(default=None, max_length=128)
    origin: Origin
    inputs: tuple[JobInput, ...] = Field(default=(), description="datasets this one was computed from")

    @property
    def kind(self) -> str:
        """series, result or upload."""
        return self.origin.kind

    @model_validator(mode="after")
    def _id_matches_origin(self) -> DatasetRecord:
        # The id is a claim about the content: check it wherever it can be checked from the record.
        expected: str | None = None
        if isinstance(self.origin, SeriesOrigin):
            expected = series_dataset_id(self.origin.series_instance_uid)
        elif isinstance(self.origin, ResultOrigin):
            expected = self.origin.job.job_id
            if self.inputs != self.origin.job.inputs:
                raise ValueError("a result's inputs must be its job's inputs")
        if expected is not None and expected != self.id:
            raise ValueError(f"dataset id {self.id} does not match its origin (expected {expected})")
        return self
