"""``.nps/manifest.json``: every file of a dataset. Written last: a dataset exists iff it exists."""

from __future__ import annotations

from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, SerializerFunctionWrapHandler, field_validator, model_serializer, model_validator

from schemas.common import DatasetId, Frozen, Hex64, RelPath, utcnow


class ManifestFile(Frozen):
    """One file of a dataset: where, how big, and its checksum (BLAKE3; SHA-256 in version 1)."""

    path: RelPath
    size: int = Field(ge=0)
    blake3: Hex64 | None = None
    sha256: Hex64 | None = Field(default=None, description="manifests of version 1")

    @model_validator(mode="after")
    def _has_checksum(self) -> ManifestFile:
        if self.blake3 is None and self.sha256 is None:
            raise ValueError(f"{self.path}: a file needs a checksum (blake3 or sha256)")
        return self

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}

    @property
    def checksum(self) -> tuple[Literal["blake3", "sha256"], str]:
        """(algorithm, hex digest) to verify this file with."""
        if self.blake3 is not None:
            return "blake3", self.blake3
        assert self.sha256 is not None
        return "sha256", self.sha256


class Manifest(Frozen):
    """The complete, ordered list of a dataset's files (the manifest itself excluded)."""

    schema_: Literal["nps.manifest"] = Field(default="nps.manifest", alias="schema")
    version: Literal[1, 2] = Field(default=2, description="2: BLAKE3 checksums; 1: SHA-256")
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
