"""``.nps/series/r<N>.json``: what an imported series is, as of manifest revision N.

Written by the series assembler beside the instances (``dicom/<SOPInstanceUID>.dcm``). It is
what the indexer reads, so a series is searchable without opening a single instance again.
Each revision has its own file (files of a dataset are never rewritten), listed by that
revision's manifest.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from schemas.common import DatasetId, Frozen

SERIES_DIR = ".nps/series"


def summary_path(revision: int) -> str:
    """Where revision ``revision``'s summary lives inside the dataset."""
    return f"{SERIES_DIR}/r{revision}.json"


class SeriesSummary(Frozen):
    """Series-level fields (from the first instance by InstanceNumber) and what all instances add."""

    schema_: Literal["nps.series"] = Field(default="nps.series", alias="schema")
    version: Literal[1] = 1
    dataset_id: DatasetId
    revision: int = Field(ge=1)
    fields: dict[str, Any] = Field(description="patient, study and series fields (see nps.dicom.metadata)")
    number_of_instances: int = Field(ge=0)
    b_values: tuple[float, ...] = Field(default=(), description="distinct b-values, ascending")
    is_diffusion: bool = False
    slice_positions: tuple[str, ...] = Field(default=(), description="distinct image positions seen")
    first_instance_number: int | None = None
    acquisition_datetime: str | None = Field(default=None, description="earliest acquisition, ISO 8601")
    classification: str = "other"
    sop_class_uids: tuple[str, ...] = ()
