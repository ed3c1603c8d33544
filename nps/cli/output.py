"""How the CLI talks to people and scripts: tables, JSON, progress bars, one-line errors."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from nps.store.source import ProgressFn

err = Console(stderr=True, soft_wrap=True)  # never re-wrap messages: scripts grep them
out = Console()


def emit_json(value: Any) -> None:
    """One JSON document on stdout (for scripts)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def human_size(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@contextlib.contextmanager
def transfer_progress(label: str, total_bytes: int, enabled: bool = True) -> Iterator[ProgressFn]:
    """A byte progress bar on stderr (only on a terminal); yields the callback to feed it."""
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
        TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True,
        disable=not (enabled and err.is_terminal),
    )
    with progress:
        task = progress.add_task(label, total=total_bytes)
        yield lambda n: progress.advance(task, n)
