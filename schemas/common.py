"""Field types shared by the schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from schemas.paths import check_relpath

DatasetId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]  # a SHA-256 or BLAKE3 hex digest
Sha256Hex = Hex64
RelPath = Annotated[str, AfterValidator(check_relpath)]

# The project of data recorded with no project (``project: null``): one name for both.
DEFAULT_PROJECT = "default"


def utcnow() -> datetime:
    """Timezone-aware now, in UTC."""
    return datetime.now(UTC)


class Frozen(BaseModel):
    """Base for stored and sent values: immutable, and unknown fields are an error, not ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)
