"""``.nps/manifest.json``: every file of a dataset. Written last: a dataset exists iff it exists."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Literal

from pydantic import Field, field_validator

from schemas.common import DatasetId, Frozen, RelPath, Sha256Hex, utcnow


class ManifestFile(Frozen):
    """One file of a dataset: where, how big, and its SHA-256."""

    path: RelPath
    size: int = Field(ge=0)
    sha256: Sha256Hex


class Manifest(Frozen):
    """The complete, ordered list of a dataset's files (the manifest itself excluded)."""

    schema_: Literal["nps.manifest"] = Field(default="nps.manifest", alias="schema")
    version: Literal[1] = 1
    dataset_id: DatasetId
    revision: int = Field(default=1, ge=1, description="1 for a new dataset; amendments increase it")
    created_at: datetime = Field(default_factory=utcnow)
    files: tuple[ManifestFile, ...]

    @field_validator("files")
    @classmethod
    def _sorted_and_unique(cls, files: tuple[ManifestFile, ...]) -> tuple[ManifestFile, ...]:
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise ValueError("duplicate path in manifest")
        return tuple(sorted(files, key=lambda f: f.path))

    @property
    def total_size(self) -> int:
        """Sum of all file sizes in bytes."""
        return sum(f.size for f in self.files)

    @cached_property
    def _by_path(self) -> dict[str, ManifestFile]:
        return {f.path: f for f in self.files}

    def file(self, path: str) -> ManifestFile | None:
        """The entry for ``path``, or None."""
        return self._by_path.get(path)
