"""Analyses as the API serves them: the caller's rights applied, the request checked and
recorded, one ``analysis.requested`` message sent. Planning and queuing the jobs is the
analyst's (``nps.analyses.fanout``, run by ``nps worker analyses``), never this process's.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, Literal

from nps.analyses import Analysis, AnalysisNotFound, AnalysisRecords, AnalysisState, Progress
from nps.analyses.plan import DEFAULT_MOUNT, check_member_count, check_plannable, result_project
from nps.analyses.status import planned_job_ids, report, results_filter
from nps.api.auth import User, require_write
from nps.api.errors import Conflict
from nps.api.groups import Groups
from nps.errors import InvalidQuery, NPSError
from nps.index import DatasetIndex
from nps.jobs.records import JobRecords
from schemas.common import DEFAULT_PROJECT
from schemas.job import Resources
from schemas.messages import AnalysisRequested

__all__ = ["Analyses", "Analysis", "AnalysisNotFound"]
log = logging.getLogger("nps.api.analyses")


class Analyses:
    """Analyses kept in ``records``; ``publish`` sends a confirmed ``analysis.requested``."""

    def __init__(self, records: AnalysisRecords, groups: Groups, index: DatasetIndex, jobs: JobRecords,
                 publish: Callable[[AnalysisRequested], None]) -> None:
        self.records = records
        self.groups = groups
        self.index = index
        self.job_records = jobs
        self.publish = publish

    def request(self, user: User, kind: Literal["map", "reduce"], name: str, group: str | None, query: str | None,
                image: str, image_id: str, command: list[str], mount: str | None, env: dict[str, str],
                parameters: dict[str, str], resources: Resources, project: str | None) -> Analysis:
        """Check a request against what can be known at once (the group, how many members the
        caller can see and their project, the caller's rights, mounts and parameters), record
        it and ask the analyst to plan it; the analysis, PLANNING."""
        count, projects = self.census(user, group, query)
        check_member_count(kind, count)
        project = result_project(projects, project)
        require_write(user, project)
        analysis = Analysis(id=f"a-{uuid.uuid4().hex[:12]}", name=name, kind=kind,
                            project=project, group=group, query=query, image=image, image_id=image_id,
                            command=tuple(command), mount=mount or DEFAULT_MOUNT[kind], env=env,
                            parameters=parameters, resources=resources, created_by=user.name)
        check_plannable(analysis, count)
        self.records.create(analysis, Progress(projects=user.readable()))
        try:
            self.publish(AnalysisRequested(analysis_id=analysis.id))
        except NPSError:
            self._forget(analysis.id)
            raise
        return analysis

    def census(self, user: User, group: str | None, query: str | None) -> tuple[int, set[str]]:
        """How many members the caller can see now, and their projects: one search, no paging."""
        if group is None and query is None:
            raise InvalidQuery("give a group, a query, or both")
        within = self.groups.within(user, group) if group is not None else None
        page = self.index.find(query or "*", size=0, projects=user.readable(), leading_wildcards=False,
                               within=within, facets=["project"], facet_size=2)
        buckets = page.facets.get("project", [])
        projects = {str(b["value"]) for b in buckets}
        if page.total > sum(int(b["count"]) for b in buckets):  # members without a project
            projects.add(DEFAULT_PROJECT)
        return page.total, projects

    def _forget(self, analysis_id: str) -> None:
        """Remove a request whose message was not sent (the caller hears the error and asks again)."""
        try:
            self.records.forget(analysis_id)
        except NPSError as exc:
            log.error("analysis %s was not queued and could not be removed: %s", analysis_id, exc)

    def get(self, user: User, analysis_id: str) -> Analysis:
        """An analysis the caller may see, as it is now (AnalysisNotFound otherwise, the same either way)."""
        analysis = self.records.load(analysis_id)
        if analysis is None or not user.can_read(analysis.project):
            raise AnalysisNotFound(f"analysis {analysis_id[:40]} not found")
        return self.records.view(analysis)

    def for_user(self, user: User) -> list[Analysis]:
        """Analyses of the caller's projects, newest first."""
        found = [self.records.view(a) for a in self.records.all() if user.can_read(a.project)]
        return sorted(found, key=lambda a: a.created_at, reverse=True)

    def jobs(self, analysis: Analysis) -> tuple[list[str], list[str]]:
        """Every job id and every member, in plan order (a map's job n is member n's);
        Conflict while the analysis is being planned."""
        ids = planned_job_ids(self.records, analysis)
        if ids is None and analysis.state is AnalysisState.PLANNING:
            raise Conflict(f"analysis {analysis.id} is being planned: its jobs are not known yet")
        return ids or [], [m for m, _ in self.records.members(analysis.id)]

    def results_filter(self, analysis: Analysis) -> tuple[str, str]:
        """A ``within`` filter selecting the analysis's results."""
        return results_filter(self.records, self.index, analysis)

    def status(self, analysis: Analysis) -> dict[str, Any]:
        """Progress: the analysis now, submitted, complete (searchable), states and done."""
        return report(self.records, self.index, self.job_records, analysis)
