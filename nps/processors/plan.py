"""What a processor should run for one target. Pure: the catalog of indexed data is passed in.

A *target* is one series, study, subject or project (the processor's level). For a target,
each input resolves to candidates: series matching the input's query within the target, or,
with ``from:``, the upstream (series-level) processor's result for each such series. ``need``
says when enough candidates exist; ``choose`` picks one (the latest acquired), each (one job per
candidate) or all (one job, candidates mounted under ``<mount>/1``, ``<mount>/2`` ...). The
outcome is either the job specs to run or why the target still needs inputs.

A result belongs to its inputs' project (for a ``from:`` input, the project of the series it was
computed from), so the members of that project, and only they, see it. A job whose inputs come
from several projects is never planned: a processor runs with no user to decide where such a
result may go, and putting it in either project would show the other project's data there. The
target is *refused* instead, with the projects named; a user allowed in both can still submit
that job by hand and say which project its result belongs to.

Job specs carry ``nps.processor`` (``name@version``) and ``nps.target`` (``level:key``) as
parameters, so every result says which rule made it, and re-evaluating a target gives the same
job ids (submitting them again is a no-op).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.common import DEFAULT_PROJECT
from schemas.job import JobInput, JobSpec
from schemas.processor import Choose, Level, Need, Processor

MAX_JOBS_PER_TARGET = 1000
NO_PROJECT = "-"


@dataclass(frozen=True)
class SeriesRef:
    """The indexed facts about a series that targeting needs."""

    id: str
    revision: int
    study: str | None = None
    subject: str | None = None
    project: str | None = None
    acquired: str | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> SeriesRef:
        """From an index document."""
        return cls(doc["id"], int(doc.get("revision") or 1), doc.get("study_instance_uid"), doc.get("patient_id"),
                   doc.get("project"), doc.get("acquisition_datetime") or doc.get("study_datetime"))

    def key(self, level: Level) -> str | None:
        """This series' target key at ``level`` (None: it has no such target, e.g. no study UID)."""
        return {Level.SERIES: self.id, Level.STUDY: self.study, Level.SUBJECT: self.subject,
                Level.PROJECT: self.project or NO_PROJECT}[level]


@dataclass(frozen=True)
class Target:
    """One target of a processor."""

    level: Level
    key: str

    def __str__(self) -> str:
        return f"{self.level.value}:{self.key}"

    def contains(self, series: SeriesRef) -> bool:
        """True when ``series`` belongs to this target."""
        return series.key(self.level) == self.key


class Catalog(Protocol):
    """What planning reads: indexed series, and whether results exist."""

    def matching(self, query: str, target: Target | None) -> list[SeriesRef]:
        """Series matching ``query`` (Lucene syntax), within ``target`` if given."""

    def result_exists(self, dataset_id: str) -> bool:
        """True when a result dataset is committed."""


@dataclass
class Plan:
    """The outcome for one (processor, target)."""

    processor: str
    target: Target
    specs: list[JobSpec] = field(default_factory=list)
    missing: str | None = None
    refused: str | None = None
    projects: dict[str, str | None] = field(default_factory=dict)  # job id -> its result's project

    @property
    def ready(self) -> bool:
        """True when every input is there (``specs`` holds the jobs to run)."""
        return self.missing is None and self.refused is None

    @property
    def waiting(self) -> str | None:
        """Why the target does not run (None when it is ready)."""
        return self.missing or self.refused


@dataclass(frozen=True)
class _Item:
    dataset: str
    revision: int
    acquired: str
    project: str | None


def project_name(project: str | None) -> str | None:
    """A dataset's project as results and jobs record it: None for the default project (data
    with no project and data of a project named ``default`` are the same to users)."""
    return project if project and project != DEFAULT_PROJECT else None


def result_project(projects: Iterable[str | None]) -> tuple[str | None, list[str]]:
    """The project of a result made from inputs of ``projects`` (None: the default project),
    and, when they are several, their names (then there is no such project)."""
    named = {project_name(p) for p in projects}
    if len(named) > 1:
        return None, sorted(p or DEFAULT_PROJECT for p in named)
    return (named.pop() if named else None), []


class Planner:
    """Plans targets of a set of processors against a catalog (memoizing upstream plans)."""

    def __init__(self, processors: dict[str, Processor], catalog: Catalog, image_ids: dict[str, str]) -> None:
        self.processors = processors
        self.catalog = catalog
        self.image_ids = image_ids
        self._memo: dict[tuple[str, Target], Plan] = {}

    def targets(self, processor: Processor, series: Iterable[SeriesRef] | None = None) -> list[Target]:
        """Targets of ``processor``: of the given series, or of every series its ``where`` matches."""
        matching = self.catalog.matching(processor.where, None)
        eligible = {s.id for s in matching}
        chosen = [s for s in (series if series is not None else matching) if s.id in eligible]
        keys = {s.key(processor.level) for s in chosen}
        return sorted((Target(processor.level, k) for k in keys if k), key=str)

    def plan(self, processor: Processor, target: Target) -> Plan:
        """Jobs to run for ``target``, or what is missing."""
        memo = (processor.name, target)
        if memo not in self._memo:
            self._memo[memo] = self._plan(processor, target)
        return self._memo[memo]

    def _plan(self, processor: Processor, target: Target) -> Plan:
        plan = Plan(processor.key, target)
        if not self.catalog.matching(processor.where, target):
            plan.missing = f"no series in this {target.level.value} matches where: {processor.where!r}"
            return plan
        groups: list[list[list[tuple[str, _Item]]]] = []  # per input: alternatives, each a list of mounts
        for name, inp in processor.inputs.items():
            items, waiting = self._candidates(processor, inp.match, inp.from_, target)
            if inp.need == Need.ALL and waiting:
                plan.missing = f"{name}: waiting for {waiting}"
                return plan
            if not items:
                what = f"results of {inp.from_!r} for series matching {inp.match!r}" if inp.from_ else \
                    f"series matching {inp.match!r}"
                plan.missing = f"{name}: no {what} in this {target.level.value}" + (
                    f" (waiting for {waiting})" if waiting else "")
                return plan
            ordered = sorted(items, key=lambda i: (i.acquired, i.dataset))
            if inp.choose == Choose.LATEST:
                groups.append([[(inp.mount, ordered[-1])]])
            elif inp.choose == Choose.EACH:
                groups.append([[(inp.mount, item)] for item in ordered])
            else:
                groups.append([[(f"{inp.mount}/{n}", item) for n, item in enumerate(ordered, 1)]])
        self._add_jobs(plan, processor, groups)
        return plan

    def _add_jobs(self, plan: Plan, processor: Processor, groups: list[list[list[tuple[str, _Item]]]]) -> None:
        """One job per combination of the inputs' alternatives; the target is refused if any
        job would combine projects."""
        for combination in itertools.islice(itertools.product(*groups), MAX_JOBS_PER_TARGET):
            mounts = [m for part in combination for m in part]
            project, several = result_project(i.project for _, i in mounts)
            if several:
                plan.specs, plan.projects = [], {}
                plan.refused = (f"inputs come from several projects ({', '.join(several)}): a processor never "
                                "combines projects' data (submit the job by hand, naming its project, if it should)")
                return
            spec = JobSpec(
                image=self.image_ids[processor.name], command=tuple(processor.argv()),
                inputs=tuple(JobInput(dataset=i.dataset, revision=i.revision, mount=m) for m, i in mounts),
                env=processor.env,
                parameters={**processor.parameters, "nps.processor": processor.key,
                            "nps.target": str(plan.target)},
            )
            plan.specs.append(spec)
            plan.projects[spec.job_id] = project

    def _candidates(self, processor: Processor, match: str, upstream_name: str | None,
                    target: Target) -> tuple[list[_Item], str | None]:
        series = self.catalog.matching(match, target)
        if processor.level == Level.SERIES:
            series = [s for s in series if s.id == target.key]
        if upstream_name is None:
            return [_Item(s.id, s.revision, s.acquired or "", s.project) for s in series], None
        upstream = self.processors[upstream_name]
        items: list[_Item] = []
        waiting: list[str] = []
        for s in series:
            key = s.key(upstream.level)
            if key is None:
                continue
            up = self.plan(upstream, Target(upstream.level, key))
            if not up.ready:
                waiting.append(f"{upstream.name} on {up.target} ({up.waiting})")
                continue
            for spec in up.specs:
                if self.catalog.result_exists(spec.job_id):
                    items.append(_Item(spec.job_id, 1, s.acquired or "", up.projects.get(spec.job_id)))
                else:
                    waiting.append(f"{upstream.name} result {spec.job_id[:12]} for {up.target}")
        return items, ("; ".join(waiting[:3]) + (f" and {len(waiting) - 3} more" if len(waiting) > 3 else "")
                       if waiting else None)
