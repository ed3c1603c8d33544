"""An analysis's progress as its requester sees it: planned or not, jobs queued, results
searchable, and the states of the rest."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nps.analyses.model import Analysis, AnalysisState, Progress
from nps.analyses.plan import plan
from nps.analyses.records import AnalysisRecords
from nps.errors import NPSError
from nps.index import DatasetIndex
from nps.jobs.records import JobRecords

STATE_SAMPLE = 2_000  # unfinished jobs whose state is read; the rest count as PENDING
FINISHED = ("FAILED", "CANCELLED")


def planned_job_ids(records: AnalysisRecords, analysis: Analysis) -> list[str] | None:
    """Every job id in member order (planned again from the members if that copy was lost);
    None before the analysis is planned."""
    ids = records.job_ids(analysis.id)
    if ids is not None:
        return ids
    members = records.members(analysis.id)
    return [s.job_id for s in plan(analysis, members)] if members else None


def results_filter(records: AnalysisRecords, index: DatasetIndex, analysis: Analysis) -> tuple[str, str]:
    """A ``within`` filter selecting the analysis's results: its job ids, mirrored into the
    index's member lists (mirrored again from the object store if that copy was lost)."""
    if not index.has_members(analysis.id):
        ids = planned_job_ids(records, analysis)
        if ids is not None:
            index.mirror_members(analysis.id, ids)
    return index.member_lists, analysis.id


def tally(progress: Progress, jobs: int, complete: int, states: Iterable[str], unread: int) -> dict[str, Any]:
    """The report from what was read (pure): ``states`` of the unfinished jobs read, ``unread``
    more. ``done``: nothing more will happen (every job finished and every result is
    searchable, or planning failed)."""
    counted: Counter[str] = Counter({"COMPLETE": complete})
    for state in states:
        counted["INDEXING" if state == "COMPLETE" else state] += 1
    if unread:
        counted["PENDING"] += unread
    finished = complete + sum(counted[s] for s in FINISHED)
    done = progress.state is AnalysisState.FAILED or (
        progress.state is AnalysisState.SUBMITTED and finished == jobs)
    return {"submitted": progress.submitted, "complete": complete,
            "states": dict(counted) if jobs else {}, "done": done}


def report(records: AnalysisRecords, index: DatasetIndex, jobs: JobRecords, analysis: Analysis) -> dict[str, Any]:
    """Progress of ``analysis``: the analysis as it is now, then ``tally``'s fields."""
    progress = records.progress(analysis)
    view = records.view(analysis, progress)
    ids = planned_job_ids(records, analysis) or []
    complete = _searchable(index, results_filter(records, index, analysis)) if ids else set()
    rest = [i for i in ids if i not in complete]
    with ThreadPoolExecutor(16) as pool:
        states = list(pool.map(_state_reader(jobs), rest[:STATE_SAMPLE]))
    return {"analysis": view.model_dump(mode="json"),
            **tally(progress, len(ids), len(complete), states, max(0, len(rest) - STATE_SAMPLE))}


def _searchable(index: DatasetIndex, within: tuple[str, str]) -> set[str]:
    """Results a search finds (not a realtime get: "complete" means an export finds it)."""
    found: set[str] = set()
    after = None
    while True:
        page = index.find("*", size=1000, after=after, source=["id"], within=within, sort=[("id", "asc")])
        found.update(h["id"] for h in page.hits)
        if page.after is None:
            return found
        after = page.after


def _state_reader(jobs: JobRecords) -> Callable[[str], str]:
    def state(job_id: str) -> str:
        try:
            history = jobs.history(job_id)
        except NPSError:
            return "UNKNOWN"
        return history[-1].state.value if history else "PLANNED"  # not queued yet
    return state
