"""The analyst's work: turn a recorded analysis into queued jobs, a bounded step at a time.

Each ``analysis.requested`` message asks for one step: plan the analysis if it is not planned
yet (resolve its members through the index, build and hash every job spec, keep members and
job ids), then queue its jobs a batch at a time (``nps.jobs.submit``), recording the cursor
after every batch. A step stops after ``STEP_SECONDS``; if work remains, it sends the next
step's message before its own is acknowledged. So:

- a killed analyst leaves its message unacknowledged; it is delivered again and carries on
  from the cursor, queuing at most the batch that was in flight a second time (queuing a job
  twice runs it once: its id is its spec's hash);
- no delivery outlives the broker's consumer timeout, and analyses share the analysts fairly;
- a message whose ``step`` is behind the recorded one is stale (a step sent twice when an
  analyst died between sending the next step and acknowledging) and is dropped.

Requests that cannot be planned (no members, too many, a mount that does not tell members
apart) end FAILED with the reason; infrastructure errors propagate, so the message is retried.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nps.analyses.model import ACTIVE, Analysis, AnalysisNotFound, AnalysisState, Member, Progress
from nps.analyses.plan import check_member_count, job_requests, plan, plan_slice, visible
from nps.analyses.records import AnalysisRecords
from nps.errors import InvalidJob, InvalidQuery
from nps.groups import GroupNotFound, GroupRecords
from nps.index import DatasetIndex
from schemas.messages import AnalysisRequested, JobRequested

log = logging.getLogger("nps.analyses")
STEP_SECONDS = 20.0
SUBMIT_BATCH = 256  # jobs queued between two cursor records: what a redelivery may queue twice
PAGE = 1000


@dataclass
class Analyst:
    """What a step needs: where analyses, groups and documents are, how jobs are queued
    (``submit``: ``nps.jobs.submit.submit_many`` bound to a store, records and publisher) and
    how the next step is sent (``again``)."""

    records: AnalysisRecords
    groups: GroupRecords
    index: DatasetIndex
    submit: Callable[[list[JobRequested]], Any]
    again: Callable[[AnalysisRequested], None]
    step_seconds: float = STEP_SECONDS
    batch: int = SUBMIT_BATCH

    def step(self, message: AnalysisRequested) -> Progress:
        """Do one step of ``message``'s analysis; the progress it left."""
        analysis = self.records.load(message.analysis_id)
        if analysis is None:
            raise AnalysisNotFound(f"analysis {message.analysis_id} is not recorded")
        progress = self.records.progress(analysis)
        if message.step < progress.step or progress.state not in ACTIVE:
            log.info("analysis %s: step %d is stale (at step %d, %s); dropped", analysis.id, message.step,
                     progress.step, progress.state.value)
            return progress
        deadline = time.monotonic() + self.step_seconds
        members: list[Member] | None = None
        while True:  # at least one piece of work per step, more while time is left
            if progress.state is AnalysisState.PLANNING:
                progress, members = self._plan(analysis, progress)
            else:
                members = members if members is not None else self.records.members(analysis.id)
                progress = self._submit_batch(analysis, progress, members)
            if progress.state not in ACTIVE or time.monotonic() >= deadline:
                break
        if progress.state in ACTIVE:  # the next step first: if this analyst dies now, it is not lost
            progress = progress.model_copy(update={"step": max(message.step, progress.step) + 1})
            self.again(AnalysisRequested(analysis_id=analysis.id, step=progress.step))
            self.records.save_progress(analysis.id, progress)
        return progress

    def _plan(self, analysis: Analysis, progress: Progress) -> tuple[Progress, list[Member]]:
        try:
            members = self.members(analysis, progress.projects)
            check_member_count(analysis.kind, len(members))
            job_ids = [s.job_id for s in plan(analysis, members)]
        except (InvalidQuery, InvalidJob, GroupNotFound) as exc:
            log.info("analysis %s cannot be planned: %s", analysis.id, exc)
            return self._save(analysis, progress, state=AnalysisState.FAILED, reason=str(exc)), []
        skipped = len(self.index.mget(job_ids, source=["id"]))
        self.records.save_plan(analysis.id, members, job_ids)
        self.index.mirror_members(analysis.id, job_ids)  # so "results of this analysis" is one filter
        log.info("analysis %s planned: %d member(s), %d job(s), %d already complete", analysis.id, len(members),
                 len(job_ids), skipped)
        return self._save(analysis, progress, state=AnalysisState.SUBMITTING, members=len(members),
                          jobs=len(job_ids), skipped=skipped, submitted=0), members

    def _submit_batch(self, analysis: Analysis, progress: Progress, members: list[Member]) -> Progress:
        start = progress.submitted
        stop = min(start + self.batch, progress.jobs)
        if start < stop:
            self.submit(job_requests(analysis, plan_slice(analysis, members, start, stop)))
        state = AnalysisState.SUBMITTED if stop >= progress.jobs else AnalysisState.SUBMITTING
        return self._save(analysis, progress, state=state, submitted=stop)

    def _save(self, analysis: Analysis, progress: Progress, **changes: Any) -> Progress:
        changed = progress.model_copy(update=changes)
        self.records.save_progress(analysis.id, changed)
        return changed

    def members(self, analysis: Analysis, projects: tuple[str, ...] | None) -> list[Member]:
        """The members (id, current revision) the requester could see: a group's, a query's
        (in id order), or a group's narrowed by a query."""
        if analysis.group is not None and self.groups.load(analysis.group) is None:
            raise GroupNotFound(f"group {analysis.group} not found")
        if analysis.group is not None and analysis.query is None:
            ids = self.groups.members(analysis.group)
            check_member_count(analysis.kind, len(ids))
            docs = self.index.mget(ids, source=["id", "revision", "project"])
            found = [docs[i] for i in ids if i in docs and visible(docs[i].get("project"), projects)]
        else:
            found = self._found(analysis, projects)
        return [(str(d["id"]), int(d.get("revision") or 1)) for d in found]

    def _found(self, analysis: Analysis, projects: tuple[str, ...] | None) -> list[dict[str, Any]]:
        within = self.groups.within(analysis.group) if analysis.group is not None else None
        found: list[dict[str, Any]] = []
        after = None
        while True:
            page = self.index.find(analysis.query or "*", size=PAGE, after=after, projects=projects,
                                   source=["id", "revision", "project"], leading_wildcards=False, within=within,
                                   sort=[("id", "asc")])
            found += page.hits
            check_member_count(analysis.kind, len(found) or 1)  # stop paging as soon as there are too many
            if page.after is None:
                return found
            after = page.after
