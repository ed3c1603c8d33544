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
from typing import Any

from nps.broker import Publisher
from nps.errors import NPSError
from nps.index import DatasetIndex
from nps.jobs import JobRecords
from nps.jobs.submit import submit
from nps.processors.catalog import IndexCatalog
from nps.processors.load import Loaded
from nps.processors.plan import Plan, Planner, SeriesRef, Target
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
    errors: list[str] = field(default_factory=list)


class ProcessorEngine:
    """Processors (loaded and usable) against the store, the index, job records and the broker."""

    def __init__(self, loaded: Loaded, store: DatasetStore, index: DatasetIndex, records: JobRecords,
                 resolve_image: Callable[[str], str], publisher: Publisher | None = None) -> None:
        self.store = store
        self.index = index
        self.records = records
        self.publisher = publisher
        self.errors = list(loaded.errors)
        self.processors: dict[str, Processor] = {}
        self.image_ids: dict[str, str] = {}
        for processor in loaded.ordered:  # upstream first: a skipped upstream skips its users
            missing = [u for u in (i.from_ for i in processor.inputs.values()) if u and u not in self.processors]
            if missing:
                self.errors.append(f"{processor.name}: skipped because {', '.join(missing)} is not usable")
                continue
            try:
                self.image_ids[processor.name] = resolve_image(processor.image)
            except NPSError as exc:
                self.errors.append(f"{processor.name}: image {processor.image!r}: {exc}")
                continue
            self.processors[processor.name] = processor

    def planner(self, preload: bool) -> Planner:
        """A planner over the index (``preload`` for sweeps and status)."""
        return Planner(self.processors, IndexCatalog(self.index, self.store, preload=preload), self.image_ids)

    def _chosen(self, names: Iterable[str] | None) -> list[Processor]:
        if names is None:
            return list(self.processors.values())
        unknown = [n for n in names if n not in self.processors]
        if unknown:
            raise NPSError(f"no usable processor named {', '.join(map(repr, unknown))} "
                           f"(usable: {', '.join(self.processors) or 'none'})")
        return [self.processors[n] for n in names]

    # ---- events --------------------------------------------------------------------------------
    def on_dataset(self, doc: dict[str, Any]) -> list[Plan]:
        """Plan (and submit) every target the indexed dataset ``doc`` may complete."""
        planner = self.planner(preload=False)
        wanted: list[tuple[Processor, Target]] = []
        if doc.get("kind") == "series":
            series = SeriesRef.from_doc(doc)
            for p in self.processors.values():
                key = series.key(p.level)
                if key and planner.catalog.matching(p.where, Target(Level.SERIES, series.id)):
                    wanted.append((p, Target(p.level, key)))
        elif doc.get("kind") == "result" and doc.get("processor") and doc.get("processor_target"):
            level, _, key = str(doc["processor_target"]).partition(":")
            if level == Level.SERIES.value:
                source = self.index.get(key)
                if source is not None:
                    series = SeriesRef.from_doc(source)
                    for p in self.processors.values():
                        if any(i.from_ == doc["processor"] for i in p.inputs.values()):
                            target_key = series.key(p.level)
                            if target_key:
                                wanted.append((p, Target(p.level, target_key)))
        plans = []
        for processor, target in wanted:
            plan = planner.plan(processor, target)
            plans.append(plan)
            if plan.ready:
                submitted = self._submit(processor, plan, known=None)
                if submitted:
                    log.info("%s on %s: submitted %s", processor.key, target, ", ".join(submitted))
            else:
                log.info("%s on %s: needs inputs: %s", processor.key, target, plan.missing)
        return plans

    # ---- sweeps --------------------------------------------------------------------------------
    def sweep(self, names: Iterable[str] | None = None, project: str | None = None) -> SweepReport:
        """Back-fill: plan every target of the chosen processors, submit what is missing."""
        report = SweepReport(errors=list(self.errors))
        planner = self.planner(preload=True)
        known = set(self.records.ids())
        for processor in self._chosen(names):
            for target in self._targets(planner, processor, project):
                report.targets += 1
                plan = planner.plan(processor, target)
                if not plan.ready:
                    report.need_inputs += 1
                    continue
                report.ready += 1
                new = self._submit(processor, plan, known, planner)
                report.submitted += new
                report.already_known += len(plan.specs) - len(new)
        return report

    def _targets(self, planner: Planner, processor: Processor, project: str | None) -> list[Target]:
        series = planner.catalog.matching(processor.where, None)
        if project is not None:
            series = [s for s in series if s.project == project]
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
            project = plan.target.key if plan.target.level == Level.PROJECT else None
            submit(self.store, self.records, self.publisher,
                   JobRequested(job_id=job_id, spec=spec, resources=resources or processor.resources,
                                project=project))
            if known is not None:
                known.add(job_id)
            submitted.append(job_id)
        return submitted

    # ---- status and rerun ------------------------------------------------------------------------
    def status(self, names: Iterable[str] | None = None, project: str | None = None) -> list[Row]:
        """One row per (processor, target), from the plans and the jobs' records."""
        planner = self.planner(preload=True)
        rows = []
        for processor in self._chosen(names):
            for target in self._targets(planner, processor, project):
                plan = planner.plan(processor, target)
                if not plan.ready:
                    rows.append(Row(processor.name, str(target), "NEED_INPUTS", plan.missing))
                    continue
                rows.append(self._row(processor, target, [s.job_id for s in plan.specs], planner))
        return rows

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
        for row in self.status(names):
            if row.state != "FAILED" or (targets and row.target not in targets):
                continue
            for job_id in row.jobs:
                history = self.records.history(job_id)
                if not history or history[-1].state != JobState.FAILED:
                    continue
                request = self.records.request(job_id)
                changes = {k: v for k, v in (("memory_mb", memory_mb), ("walltime_s", walltime_s)) if v}
                resources = Resources.model_validate({**request.resources.model_dump(), **changes})
                again.append(self._submit_failed(JobRequested(
                    job_id=job_id, spec=request.spec, resources=resources, project=request.project,
                    requested_by=request.requested_by)))  # its project kept (a project-level job's result goes there)
        return again

    def _submit_failed(self, request: JobRequested) -> str:
        if self.publisher is None:
            raise NPSError("cannot submit jobs without a broker connection")
        submit(self.store, self.records, self.publisher, request)
        return request.job_id
