"""What NPS needs from a container engine, and nothing more."""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"(?:(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*)"  # [registry[:port]/]path
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?")
_IMAGE_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12,64}")


def valid_reference(reference: str) -> bool:
    """True for what an engine can look up: ``name[:tag][@sha256:...]`` (the distribution
    reference grammar, name at most 255 characters) or an image ID (``sha256:<hex>`` or a hex
    prefix). Checked before asking, because Podman answers a malformed name with a server error."""
    if _IMAGE_ID.fullmatch(reference):
        return True
    head, _, last = reference.split("@", 1)[0].rpartition("/")
    name = f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]
    return len(name) <= 255 and _REFERENCE.fullmatch(reference) is not None


@dataclass(frozen=True)
class HeldImage:
    """An image an engine holds, as it describes it."""

    id: str
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    size: int | None = None
    created: datetime | None = None


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
