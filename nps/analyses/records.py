"""Analyses kept in the object store, the system of record (``analyses/<id>/``):

- ``analysis.json``: what was asked, frozen when the request is recorded;
- ``progress.json``: state, size and the submission cursor, rewritten by the analyst;
- ``members.json.gz`` and ``jobs.json.gz``: each member's id and pinned revision, and the job
  ids in member order, written once when the analysis is planned.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

from nps.analyses.model import Analysis, AnalysisState, Member, Progress
from nps.blobs import Blobs


def valid_analysis_id(analysis_id: str) -> bool:
    """True for ``a-`` and 12 lowercase hex digits (anything else is never a stored key)."""
    return (len(analysis_id) == 14 and analysis_id.startswith("a-")
            and all(c in "0123456789abcdef" for c in analysis_id[2:]))


class AnalysisRecords:
    """Read and write analyses in a ``Blobs`` space."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def create(self, analysis: Analysis, progress: Progress) -> None:
        """Record a new request: its progress first, then the analysis (from then on it is visible)."""
        self.save_progress(analysis.id, progress)
        self.blobs.put(self._key(analysis.id, "analysis.json"), analysis.model_dump_json().encode())

    def forget(self, analysis_id: str) -> None:
        """Remove a request that was never queued (its record goes first: no half analysis is listed)."""
        for name in ("analysis.json", "progress.json"):
            self.blobs.delete(self._key(analysis_id, name))

    def load(self, analysis_id: str) -> Analysis | None:
        """The analysis as asked, or None."""
        raw = self.blobs.get(self._key(analysis_id, "analysis.json")) if valid_analysis_id(analysis_id) else None
        return Analysis.model_validate_json(raw) if raw else None

    def all(self) -> Iterator[Analysis]:
        """Every analysis as asked, in no particular order."""
        for child in self.blobs.children("analyses"):
            analysis = self.load(child)
            if analysis is not None:
                yield analysis

    def progress(self, analysis: Analysis) -> Progress:
        """How far the analysis got."""
        raw = self.blobs.get(self._key(analysis.id, "progress.json"))
        data = json.loads(raw) if raw else {}
        if "state" not in data:  # planned by the API before the analyst existed: only a count was kept
            submitted = int(data.get("submitted", 0))
            state = AnalysisState.SUBMITTED if submitted >= analysis.jobs else AnalysisState.SUBMITTING
            return Progress(state=state, members=analysis.members, jobs=analysis.jobs, skipped=analysis.skipped,
                            submitted=submitted)
        return Progress.model_validate(data)

    def save_progress(self, analysis_id: str, progress: Progress) -> None:
        """Replace the progress record."""
        self.blobs.put(self._key(analysis_id, "progress.json"), progress.model_dump_json().encode())

    def view(self, analysis: Analysis, progress: Progress | None = None) -> Analysis:
        """The analysis with its size and state as they are now (or as ``progress`` says)."""
        p = progress or self.progress(analysis)
        return analysis.model_copy(update={"members": p.members, "jobs": p.jobs, "skipped": p.skipped,
                                           "state": p.state, "reason": p.reason})

    def save_plan(self, analysis_id: str, members: list[Member], job_ids: list[str]) -> None:
        """Keep the resolved members and the job ids (in member order)."""
        self.blobs.put(self._key(analysis_id, "members.json.gz"), gzip.compress(json.dumps(members).encode()))
        self.blobs.put(self._key(analysis_id, "jobs.json.gz"), gzip.compress(json.dumps(job_ids).encode()))

    def members(self, analysis_id: str) -> list[Member]:
        """The planned members ([] before planning)."""
        raw = self.blobs.get(self._key(analysis_id, "members.json.gz"))
        return [(str(m), int(r)) for m, r in json.loads(gzip.decompress(raw))] if raw else []

    def job_ids(self, analysis_id: str) -> list[str] | None:
        """The planned job ids in member order; None before planning."""
        raw = self.blobs.get(self._key(analysis_id, "jobs.json.gz"))
        return [str(i) for i in json.loads(gzip.decompress(raw))] if raw else None

    @staticmethod
    def _key(analysis_id: str, name: str) -> str:
        return f"analyses/{analysis_id}/{name}"
