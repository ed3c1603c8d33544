"""What NPS needs from a container engine, and nothing more."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nps.images import HeldImage


@dataclass(frozen=True)
class Mount:
    """A host directory bound into the container."""

    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class RunRequest:
    """One container run, with every limit spelled out."""

    image: str
    command: tuple[str, ...]
    mounts: tuple[Mount, ...]
    env: dict[str, str]
    stdout: Path
    stderr: Path
    memory_mb: int
    cpu: float
    pids: int
    walltime_s: float
    network: bool = False
    user: str = "65534:65534"
    log_limit_bytes: int = 10 * 1024 * 1024
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunResult:
    """How a run ended."""

    exit_code: int | None
    oom_killed: bool
    timed_out: bool
    cancelled: bool
    duration_s: float
    peak_memory_mb: float | None


class ContainerEngine(ABC):
    """Resolve images and run containers to completion."""

    @abstractmethod
    def resolve_image(self, reference: str) -> str:
        """The immutable image ID (``sha256:...``) of a tag or ID; ImageNotFound if absent."""

    @abstractmethod
    def images(self, references: Sequence[str] = ()) -> list[HeldImage]:
        """The images held that have a name, or those ``references`` name (ImageNotFound if one is absent)."""

    @abstractmethod
    def run(self, request: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        """Run to completion (or walltime, or ``cancel``); logs go to the request's files, capped."""
