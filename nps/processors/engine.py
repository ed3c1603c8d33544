"""Running processors: react to an indexed dataset, sweep everything, report and rerun.

Submitting is idempotent: a job whose id already has a record (queued, running, done or
failed) or whose result exists is never submitted again by the engine, so evaluating a
target twice costs nothing. Failed targets are resubmitted only by ``rerun`` (with more
memory or walltime, usually).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from nps.broker import Publisher
from nps.errors import NPSError
from nps.index import DatasetIndex
from nps.jobs import JobRecords
from nps.jobs.submit import submit
from nps.processors.catalog import IndexCatalog, QueryRefused, query_problem
from nps.processors.disabled import DisabledProcessors
from nps.processors.load import Loaded, line_of, upstream
from nps.processors.plan import Plan, Planner, SeriesRef, Target, project_name
from nps.processors.queries import check_queries, queries
from nps.store import DatasetStore
from schemas.job import Resources
from schemas.messages import JobRequested, JobState
from schemas.processor import Level, Processor

log = logging.getLogger("nps.processors")
ACTIVE = {JobState.STAGING, JobState.RUNNING, JobState.UPLOADING}


@dataclass
class Row:
    """Status of one (processor, target)."""

    processor: str
    target: str
    state: str
    reason: str | None = None
    jobs: list[str] = field(default_factory=list)


@dataclass
class SweepReport:
    """What a sweep found and did."""

    targets: int = 0
    ready: int = 0
    need_inputs: int = 0
    submitted: list[str] = field(default_factory=list)
    already_known: int = 0
    refused: int = 0  # targets whose inputs come from several projects
    errors: list[str] = field(default_factory=list)


class ProcessorEngine:
    """Processors (loaded and usable) against the store, the index, job records and the broker.

    Loading checks every query against Elasticsearch (``nps.processors.queries``); a processor
    with a refused query, or whose image cannot be resolved, is not usable. One whose query
    is refused later, while an event is handled, is disabled on the spot (``disable``): the
    event goes on for the other processors."""

    def __init__(self, loaded: Loaded, store: DatasetStore, index: DatasetIndex, records: JobRecords,
                 resolve_image: Callable[[str], str], publisher: Publisher | None = None) -> None:
        self.store = store
        self.index = index
        self.records = records
        self.publisher = publisher
        self.disabled = DisabledProcessors(records.blobs)
        loaded = check_queries(loaded, partial(query_problem, index))
        self.files = loaded.files
        self.errors = list(loaded.errors)
        self.unusable = dict(loaded.rejected)  # name -> why (shown by status)
        self.processors: dict[str, Processor] = {}
        self.image_ids: dict[str, str] = {}
        for processor in loaded.ordered:  # upstream first: a skipped upstream skips its users
            missing = [u for u in upstream(processor) if u not in self.processors]
            try:
                if missing:
                    raise NPSError(f"skipped because {', '.join(missing)} is not usable")
                self.image_ids[processor.name] = resolve_image(processor.image)
            except NPSError as exc:
                why = str(exc) if missing else f"image {processor.image!r}: {exc}"
                self.errors.append(f"{processor.name}: {why}")
                self.unusable[processor.name] = f"{self.files.get(processor.name, processor.name)}: {why}"
                continue
            self.processors[processor.name] = processor

    def planner(self, preload: bool) -> Planner:
        """A planner over the index (``preload`` for sweeps and status)."""
        return Planner(self.processors, IndexCatalog(self.index, self.store, preload=preload), self.image_ids)

    def _chosen(self, names: Iterable[str] | None) -> list[Processor]:
        if names is None:
            return list(self.processors.values())
        unknown = [n for n in names if n not in self.processors and n not in self.unusable]
        if unknown:
            raise NPSError(f"no processor named {', '.join(map(repr, unknown))} "
                           f"(usable: {', '.join(self.processors) or 'none'})")
        return [self.processors[n] for n in names if n in self.processors]

    def disable(self, processor: Processor, refused: QueryRefused) -> list[str]:
        """Stop using the processor whose query Elasticsearch refused while ``processor`` was
        planned (it, or one whose results it takes) and every processor taking its results; log
        one line for each, mark it for ``status``. The names disabled, culprit first."""
        culprit = self._owner(processor, refused.query)
        gone = [culprit.name, *self._users(culprit.name)]
        for name in gone:
            why = self._refusal(culprit, refused) if name == culprit.name else \
                f"{self.files.get(name, name)}: it takes results of {culprit.name!r}, which is disabled"
            log.error("processor %r disabled: %s; the other processors keep running", name, why)
            self.unusable[name] = why
            try:
                self.disabled.mark(self.processors.pop(name), why)
            except NPSError as exc:  # the worker still skips it; only `status` will not say so
                log.warning("processor %r: the mark for `nps processors status` was not written: %s", name, exc)
        return gone

    def _refusal(self, processor: Processor, refused: QueryRefused) -> str:
        """``file:line: where: Elasticsearch refuses ...``, for the processor that has the query."""
        owner = self._owner(processor, refused.query)
        path = self.files.get(owner.name)
        location = next((loc for loc, q in queries(owner) if q == refused.query), ("where",))
        return f"{path or owner.name}:{line_of(path, location) if path else 1}: {'.'.join(location)}: {refused}"

    def _owner(self, processor: Processor, query: str) -> Processor:
        """The processor (``processor`` or one upstream of it) that has ``query``."""
        chain = [processor]
        while chain:
            candidate = chain.pop(0)
            if any(q == query for _, q in queries(candidate)):
                return candidate
            chain += [self.processors[u] for u in sorted(upstream(candidate)) if u in self.processors]
        return processor

    def _users(self, name: str) -> list[str]:
        """Usable processors taking the results of ``name``, directly or not (upstream first)."""
        found: list[str] = []
        for p in self.processors.values():  # upstream first, so one pass finds users of users
            if upstream(p) & {name, *found}:
                found.append(p.name)
        return found

    # ---- events --------------------------------------------------------------------------------
    def on_dataset(self, doc: dict[str, Any]) -> list[Plan]:
        """Plan (and submit) every target the indexed dataset ``doc`` may complete. A processor
        whose query Elasticsearch refuses is disabled; the others go on."""
        planner = self.planner(preload=False)
        series, made_by = self._event_series(doc)
        if series is None:
            return []
        plans = []
        for processor in list(self.processors.values()):
            if processor.name not in self.processors:
                continue  # disabled while this event was handled
            try:
                target = self._target(planner, processor, series, made_by)
                if target is not None:
                    plans.append(self._run(planner, processor, target))
            except QueryRefused as exc:
                self.disable(processor, exc)
        return plans

    def _event_series(self, doc: dict[str, Any]) -> tuple[SeriesRef | None, str | None]:
        """The series an indexed dataset concerns, and the processor that made it (a result)."""
        if doc.get("kind") == "series":
            return SeriesRef.from_doc(doc), None
        if doc.get("kind") == "result" and doc.get("processor") and doc.get("processor_target"):
            level, _, key = str(doc["processor_target"]).partition(":")
            if level == Level.SERIES.value:
                source = self.index.get(key)
                if source is not None:
                    return SeriesRef.from_doc(source), str(doc["processor"])
        return None, None

    def _target(self, planner: Planner, processor: Processor, series: SeriesRef,
                made_by: str | None) -> Target | None:
        """The target of ``processor`` that the new series (or ``made_by``'s new result on it)
        may complete, if any."""
        key = series.key(processor.level)
        if not key:
            return None
        if made_by is None:
            eligible = bool(planner.catalog.matching(processor.where, Target(Level.SERIES, series.id)))
        else:
            eligible = made_by in upstream(processor)
        return Target(processor.level, key) if eligible else None

    def _run(self, planner: Planner, processor: Processor, target: Target) -> Plan:
        plan = planner.plan(processor, target)
        if plan.ready:
            submitted = self._submit(processor, plan, known=None)
            if submitted:
                log.info("%s on %s: submitted %s", processor.key, target, ", ".join(submitted))
        elif plan.refused:
            log.warning("%s on %s: not run: %s", processor.key, target, plan.refused)
        else:
            log.info("%s on %s: needs inputs: %s", processor.key, target, plan.missing)
        return plan

    # ---- sweeps --------------------------------------------------------------------------------
    def sweep(self, names: Iterable[str] | None = None, project: str | None = None) -> SweepReport:
        """Back-fill: plan every target of the chosen processors, submit what is missing."""
        report = SweepReport(errors=list(self.errors))
        planner = self.planner(preload=True)
        known = set(self.records.ids())
        for processor in self._chosen(names):
            try:
                self._sweep_one(planner, processor, project, known, report)
            except QueryRefused as exc:
                report.errors.append(f"{self._refusal(processor, exc)} (processor {processor.name!r} not swept)")
        return report

    def _sweep_one(self, planner: Planner, processor: Processor, project: str | None, known: set[str],
                   report: SweepReport) -> None:
        for target in self._targets(planner, processor, project):
            report.targets += 1
            plan = planner.plan(processor, target)
            if plan.refused:
                report.refused += 1
                continue
            if not plan.ready:
                report.need_inputs += 1
                continue
            report.ready += 1
            new = self._submit(processor, plan, known, planner)
            report.submitted += new
            report.already_known += len(plan.specs) - len(new)

    def _targets(self, planner: Planner, processor: Processor, project: str | None) -> list[Target]:
        series = planner.catalog.matching(processor.where, None)
        if project is not None:
            series = [s for s in series if project_name(s.project) == project_name(project)]
        return planner.targets(processor, series)

    def _submit(self, processor: Processor, plan: Plan, known: set[str] | None,
                planner: Planner | None = None, resources: Resources | None = None) -> list[str]:
        submitted = []
        for spec in plan.specs:
            job_id = spec.job_id
            if known is not None:
                if job_id in known or (planner is not None and planner.catalog.result_exists(job_id)):
                    continue
            elif self.records.history(job_id) or self.store.exists(job_id):
                continue
            if self.publisher is None:
                raise NPSError("cannot submit jobs without a broker connection")
            # The result belongs to its inputs' project (nps.processors.plan): its members see it.
            submit(self.store, self.records, self.publisher,
                   JobRequested(job_id=job_id, spec=spec, resources=resources or processor.resources,
                                project=plan.projects[job_id]))
            if known is not None:
                known.add(job_id)
            submitted.append(job_id)
        return submitted

    # ---- status and rerun ------------------------------------------------------------------------
    def status(self, names: Iterable[str] | None = None, project: str | None = None) -> list[Row]:
        """One row per (processor, target), from the plans and the jobs' records; one INVALID
        row (target ``-``) per processor that is not usable or that a worker disabled."""
        return [row for row, _ in self._rows(names, project)]

    def _rows(self, names: Iterable[str] | None, project: str | None) -> list[tuple[Row, Plan | None]]:
        names = list(names) if names is not None else None
        rows: list[tuple[Row, Plan | None]] = [
            (Row(name, "-", "INVALID", why), None) for name, why in self.unusable.items()
            if names is None or name in names]
        planner = self.planner(preload=True)
        for processor in self._chosen(names):
            why = self.disabled.reason(processor)
            try:
                if why is None:
                    targets = self._targets(planner, processor, project)
                    rows += [self._target_row(planner, processor, t) for t in targets]
                    continue
            except QueryRefused as exc:
                why = self._refusal(processor, exc)
            rows.append((Row(processor.name, "-", "INVALID", why), None))
        return rows

    def _target_row(self, planner: Planner, processor: Processor, target: Target) -> tuple[Row, Plan]:
        plan = planner.plan(processor, target)
        if plan.refused:
            return Row(processor.name, str(target), "FAILED", plan.refused), plan
        if not plan.ready:
            return Row(processor.name, str(target), "NEED_INPUTS", plan.missing), plan
        return self._row(processor, target, [s.job_id for s in plan.specs], planner), plan

    def _row(self, processor: Processor, target: Target, jobs: list[str], planner: Planner) -> Row:
        states: Counter[str] = Counter()
        reason = None
        for job_id in jobs:
            if planner.catalog.result_exists(job_id):
                states["COMPLETE"] += 1
                continue
            history = self.records.history(job_id)
            if not history:
                states["PENDING"] += 1
                continue
            last = history[-1]
            if last.state == JobState.FAILED:
                reason = reason or f"job {job_id[:12]}: {last.reason}"
            states["RUNNING" if last.state in ACTIVE else last.state.value] += 1
        for state in ("FAILED", "CANCELLED", "RUNNING", "QUEUED", "PENDING"):
            if states[state]:
                return Row(processor.name, str(target), state, reason if state == "FAILED" else None, jobs)
        return Row(processor.name, str(target), "COMPLETE", None, jobs)

    def rerun(self, names: Iterable[str] | None = None, targets: set[str] | None = None,
              memory_mb: int | None = None, walltime_s: int | None = None) -> list[str]:
        """Submit the failed jobs of failed targets again, with more memory and/or walltime."""
        again = []
        for row, plan in self._rows(names, None):
            if plan is None or row.state != "FAILED" or (targets and row.target not in targets):
                continue
            for job_id in row.jobs:
                history = self.records.history(job_id)
                if not history or history[-1].state != JobState.FAILED:
                    continue
                request = self.records.request(job_id)
                changes = {k: v for k, v in (("memory_mb", memory_mb), ("walltime_s", walltime_s)) if v}
                resources = Resources.model_validate({**request.resources.model_dump(), **changes})
                again.append(self._submit_failed(JobRequested(
                    job_id=job_id, spec=request.spec, resources=resources, project=plan.projects.get(job_id),
                    requested_by=request.requested_by)))  # the project of its inputs, as when first submitted
        return again

    def _submit_failed(self, request: JobRequested) -> str:
        if self.publisher is None:
            raise NPSError("cannot submit jobs without a broker connection")
        submit(self.store, self.records, self.publisher, request)
        return request.job_id
