"""The job spec: what a job computes. Its hash is the id of the result dataset.

Resources (cpu, memory, walltime, gpu) are deliberately *not* in the spec: they change how a
job runs, not what it computes, so they travel beside it (see ``JobRequested``).
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from schemas.common import DatasetId, Frozen
from schemas.hashing import json_dataset_id

OUTPUT_MOUNT = "/output"
ImageId = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=256)]
Scalar = str | int | float | bool | None


def check_mount(path: str) -> str:
    """A container mount point: absolute, normalised, not ``/``, no NUL or ``..``."""
    if not path.startswith("/"):
        raise ValueError(f"mount path must be absolute: {path!r}")
    if "\x00" in path or any(part in (".", "..") for part in path.split("/")):
        raise ValueError(f"mount path must not contain '.', '..' or NUL: {path!r}")
    if posixpath.normpath(path) != path or path == "/":
        raise ValueError(f"mount path must be normalised and below '/': {path!r}")
    return path


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


class JobInput(Frozen):
    """An input dataset pinned by id and manifest revision, mounted read-only at ``mount``."""

    dataset: DatasetId
    revision: int = Field(ge=1)
    mount: Annotated[str, Field(max_length=1024)]

    @field_validator("mount")
    @classmethod
    def _mount(cls, v: str) -> str:
        check_mount(v)
        if _overlaps(v, OUTPUT_MOUNT):
            raise ValueError(f"input mount {v!r} overlaps the output directory {OUTPUT_MOUNT}")
        return v


class JobSpec(Frozen):
    """What to run: an image pinned by immutable ID, a command, inputs, parameters, environment."""

    version: int = Field(default=1, ge=1, le=1)
    image: ImageId = Field(description="immutable image ID (sha256:...), never a tag")
    command: tuple[Annotated[str, Field(max_length=65536)], ...] = Field(min_length=1)
    inputs: tuple[JobInput, ...] = ()
    env: dict[EnvName, Annotated[str, Field(max_length=65536)]] = Field(default_factory=dict)
    parameters: dict[Annotated[str, Field(max_length=256)], Scalar] = Field(default_factory=dict)

    @field_validator("inputs")
    @classmethod
    def _sorted_without_overlap(cls, inputs: tuple[JobInput, ...]) -> tuple[JobInput, ...]:
        ordered = tuple(sorted(inputs, key=lambda i: i.mount))
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                if _overlaps(a.mount, b.mount):
                    raise ValueError(f"input mounts overlap: {a.mount!r} and {b.mount!r}")
        return ordered

    @field_validator("parameters")
    @classmethod
    def _finite(cls, params: dict[str, Scalar]) -> dict[str, Scalar]:
        for k, v in params.items():
            if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
                raise ValueError(f"parameter {k!r} is not a finite number")
        return params

    def canonical(self) -> dict[str, object]:
        """The JSON value that is hashed (inputs already sorted by mount path)."""
        return self.model_dump(mode="json")

    @property
    def job_id(self) -> str:
        """``sha1(canonical JSON)``: the id of the job and of its result dataset."""
        return json_dataset_id(self.canonical())


_MEMORY_RE = re.compile(r"^(\d{1,12})\s*([KMGT]i?B?)?$", re.IGNORECASE)


class Resources(Frozen):
    """How a job runs; not part of its hash."""

    cpu: float = Field(default=1.0, gt=0, le=1024)
    memory_mb: int = Field(default=2048, ge=16, le=4 * 1024 * 1024)
    walltime_s: int = Field(default=3600, ge=1, le=30 * 24 * 3600)
    gpu: int = Field(default=0, ge=0, le=64)
    pids: int = Field(default=1024, ge=16, le=1_000_000)
    network: bool = Field(default=False, description="give the container a network (off by default)")
    retries: int = Field(default=0, ge=0, le=10, description="re-run after a non-zero exit this many times")

    @model_validator(mode="before")
    @classmethod
    def _accept_memory_string(cls, data: object) -> object:
        # "4GiB" / "512M" are friendlier on a command line than megabytes.
        if isinstance(data, dict) and isinstance(data.get("memory"), str):
            data = dict(data)
            m = _MEMORY_RE.match(data.pop("memory").strip())
            if not m:
                raise ValueError("memory must look like 512M, 4G or 4GiB")
            amount, unit = int(m.group(1)), (m.group(2) or "M")[0].upper()
            data["memory_mb"] = amount // 1024 if unit == "K" else amount * {"M": 1, "G": 1024, "T": 1024**2}[unit]
        return data
