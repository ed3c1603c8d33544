"""Processors a worker stopped using while running, and why, kept beside the job records.

A query that passed the check at load time can still be refused later (Elasticsearch's
mapping of a field changed, say). The worker then stops using that processor, and those taking
its results, until its file changes or the worker restarts; it writes the reason here
(``processors/disabled/<name>.json``) so that ``nps processors status``, run anywhere, shows it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from nps.blobs import Blobs
from schemas.common import utcnow
from schemas.processor import Processor

PREFIX = "processors/disabled"


class DisabledProcessors:
    """The marks, one small object per processor name."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def mark(self, processor: Processor, reason: str) -> None:
        """Record that ``processor`` (this version of it) is not used, and why."""
        record = {"processor": processor.key, "reason": reason, "at": utcnow().isoformat()}
        self.blobs.put(f"{PREFIX}/{processor.name}.json", json.dumps(record).encode())

    def clear(self, names: Iterable[str]) -> None:
        """Forget the marks of processors that are used again."""
        for name in names:
            self.blobs.delete(f"{PREFIX}/{name}.json")

    def reason(self, processor: Processor) -> str | None:
        """Why a worker stopped using this version of ``processor`` (None: it did not)."""
        raw = self.blobs.get(f"{PREFIX}/{processor.name}.json")
        if raw is None:
            return None
        try:
            record = json.loads(raw)
        except ValueError:
            return None  # a mark that cannot be read is no reason to stop anything
        if not isinstance(record, dict) or record.get("processor") != processor.key:
            return None  # another version: the new file is used afresh
        return f"disabled by the processor worker at {record.get('at')}: {record.get('reason')}"
