"""Analyses: one job per member (*map*) or one job over every member (*reduce*).

An analysis is planned at once, in the request: members are resolved (a frozen group, a query,
or a group narrowed by a query), every job spec is built and hashed, and members whose result
already exists are skipped. The caller gets every job id straight away. Submitting the jobs
(one confirmed message each) then happens in the background; what was submitted is recorded
(``analyses/<id>/progress.json``) so an API restarted mid-way carries on where it stopped.
Submission is idempotent (a job's id is its spec's hash), so carrying on never runs twice.

Stored in the object store: ``analyses/<id>/analysis.json`` (what was asked, frozen),
``members.json.gz`` (each member's id and pinned revision), ``jobs.json.gz`` (the job ids, in
member order) and ``progress.json``.
"""

from __future__ import annotations

import gzip
import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

from pydantic import Field

from nps.api.auth import User, require_write
from nps.blobs import Blobs
from nps.errors import DatasetNotFound, InvalidJob, InvalidQuery, NPSError
from nps.jobs.plan import build_spec
from schemas.common import DEFAULT_PROJECT, Frozen, utcnow
from schemas.job import JobSpec, Resources
from schemas.messages import JobRequested

log = logging.getLogger("nps.api.analyses")
MAX_MAP = 200_000
MAX_REDUCE = 2_000
STATE_SAMPLE = 2_000
SUBMIT_BATCH = 200


class AnalysisNotFound(DatasetNotFound):
    """No such analysis (or not in the caller's projects)."""


class Analysis(Frozen):
    """What was asked (frozen when the analysis is created)."""

    id: Annotated[str, Field(pattern=r"^a-[0-9a-f]{12}$")]
    name: str
    kind: Literal["map", "reduce"]
    project: str = DEFAULT_PROJECT
    group: str | None = None
    query: str | None = None
    image: str
    image_id: str
    command: tuple[str, ...]
    mount: str
    env: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Resources()
    members: int
    jobs: int
    skipped: int
    created_by: str
    created_at: str = Field(default_factory=lambda: utcnow().isoformat())


Member = tuple[str, int]  # (dataset id, pinned revision)


def mount_for(template: str, member: str, n: int) -> str:
    """``{id}`` becomes the member's id, ``{n}`` its position (from 0)."""
    return template.replace("{id}", member).replace("{n}", str(n))


def plan(analysis: Analysis, members: list[Member]) -> list[JobSpec]:
    """The job specs of an analysis, in member order (pure: the same members give the same ids)."""
    env, params = list(analysis.env.items()), list(analysis.parameters.items())
    if analysis.kind == "map":
        return [build_spec(analysis.image_id, list(analysis.command), [(m, r, mount_for(analysis.mount, m, 0))],
                           env, params) for m, r in members]
    inputs = [(m, r, mount_for(analysis.mount, m, n)) for n, (m, r) in enumerate(members)]
    if len({mount for _, _, mount in inputs}) != len(inputs):
        raise InvalidJob("a reduce mounts every member: the mount template needs {id} or {n}")
    return [build_spec(analysis.image_id, list(analysis.command), inputs, env, params)]


class Analyses:
    """Analyses kept in ``blobs``; ``index``, ``groups`` resolve members; ``publish`` submits."""

    def __init__(self, blobs: Blobs, index: Any, groups: Any, records: Any,
                 publish: Callable[[list[JobRequested]], list[bool]]) -> None:
        self.blobs = blobs
        self.index = index
        self.groups = groups
        self.records = records
        self.publish = publish
        self._running: set[str] = set()
        self._guard = threading.Lock()

    # ---- creating -----------------------------------------------------------------------------

    def members(self, user: User, group: str | None, query: str | None,
                limit: int) -> tuple[list[Member], set[str]]:
        """The members (id, current revision) of a group, a query, or a group narrowed by a
        query, and the projects they belong to."""
        if group is None and query is None:
            raise InvalidQuery("give a group, a query, or both")
        found: list[dict[str, Any]] = []
        if group is not None and query is None:
            ids = self.groups.members(self.groups.get(user, group).id)
            if len(ids) > limit:
                raise InvalidQuery(f"{len(ids)} members: at most {limit} for this kind of analysis")
            docs = self.index.mget(ids, source=["id", "revision", "project"])
            found = [docs[i] for i in ids if i in docs and user.can_read(docs[i].get("project"))]
        else:
            within = None
            if group is not None:
                self.groups.get(user, group)
                within = (self.groups.mirror, group)
            after = None
            while True:
                page = self.index.find(query or "*", size=1000, after=after, source=["id", "revision", "project"],
                                       projects=user.readable(), leading_wildcards=False, within=within,
                                       sort=[("id", "asc")])
                found += page.hits
                if len(found) > limit:
                    raise InvalidQuery(f"more than {limit} members: narrow the query")
                if page.after is None:
                    break
                after = page.after
        if not found:
            raise InvalidQuery("the analysis has no members")
        members = [(str(d["id"]), int(d.get("revision") or 1)) for d in found]
        return members, {d.get("project") or DEFAULT_PROJECT for d in found}

    def create(self, user: User, kind: str, name: str, group: str | None, query: str | None, image: str,
               image_id: str, command: list[str], mount: str | None, env: dict[str, str],
               parameters: dict[str, str], resources: Resources,
               project: str | None) -> tuple[Analysis, list[str], list[str]]:
        """Plan an analysis, record it and start submitting; return it with every job id and
        every member (for a map, job ``n`` is member ``n``'s)."""
        from nps.api.routes.jobs import result_project

        found, projects = self.members(user, group, query, MAX_MAP if kind == "map" else MAX_REDUCE)
        project = result_project(user, projects, project)
        draft = Analysis(id=f"a-{uuid.uuid4().hex[:12]}", name=name, kind=kind,
                         project=project, group=group, query=query, image=image, image_id=image_id,
                         command=tuple(command), mount=mount or ("/input" if kind == "map" else "/inputs/{id}"),
                         env=env, parameters=parameters, resources=resources, members=len(found), jobs=0,
                         skipped=0, created_by=user.name)
        specs = plan(draft, found)
        ids = [s.job_id for s in specs]
        existing = set(self.index.mget(ids, source=["id"]))
        analysis = draft.model_copy(update={"jobs": len(ids), "skipped": len(existing)})
        require_write(user, project)
        prefix = f"analyses/{analysis.id}"
        self.blobs.put(f"{prefix}/members.json.gz", gzip.compress(json.dumps(found).encode()))
        self.blobs.put(f"{prefix}/jobs.json.gz", gzip.compress(json.dumps(ids).encode()))
        self.blobs.put(f"{prefix}/progress.json", json.dumps({"submitted": 0}).encode())
        self.groups.mirror_members(analysis.id, ids)  # so "results of this analysis" is one filter
        self.blobs.put(f"{prefix}/analysis.json", analysis.model_dump_json().encode())  # last: it is now visible
        self.start(analysis)
        return analysis, ids, [m for m, _ in found]

    # ---- submitting ---------------------------------------------------------------------------

    def start(self, analysis: Analysis) -> None:
        """Submit (the rest of) an analysis's jobs in a background thread."""
        with self._guard:
            if analysis.id in self._running:
                return
            self._running.add(analysis.id)
        threading.Thread(target=self._submit_all, args=(analysis,), name=f"submit-{analysis.id}",
                         daemon=True).start()

    def _submit_all(self, analysis: Analysis) -> None:
        try:
            members = self._members(analysis.id)
            requests = [JobRequested(job_id=s.job_id, spec=s, resources=analysis.resources,
                                     project=None if analysis.project == DEFAULT_PROJECT else analysis.project,
                                     requested_by=analysis.created_by) for s in plan(analysis, members)]
            done = self.progress(analysis.id)
            for start in range(done, len(requests), SUBMIT_BATCH):
                batch = requests[start:start + SUBMIT_BATCH]
                self.publish(batch)
                self._save_progress(analysis.id, start + len(batch))
            if not requests[done:]:
                self._save_progress(analysis.id, len(requests))
        except NPSError as exc:  # picked up again at the next start (or by `resume`)
            log.error("submitting analysis %s stopped: %s", analysis.id, exc)
        except Exception:
            log.exception("submitting analysis %s stopped", analysis.id)
        finally:
            with self._guard:
                self._running.discard(analysis.id)

    def resume(self) -> int:
        """Carry on submitting every analysis left unfinished (at API start); how many."""
        count = 0
        for child in self.blobs.children("analyses"):
            raw = self.blobs.get(f"analyses/{child}/analysis.json")
            if raw:
                analysis = Analysis.model_validate_json(raw)
                if self.progress(analysis.id) < analysis.jobs:
                    self.start(analysis)
                    count += 1
        return count

    def _members(self, analysis_id: str) -> list[Member]:
        raw = self.blobs.get(f"analyses/{analysis_id}/members.json.gz")
        return [(m, int(r)) for m, r in json.loads(gzip.decompress(raw))] if raw else []

    def progress(self, analysis_id: str) -> int:
        """How many of its jobs have been submitted."""
        raw = self.blobs.get(f"analyses/{analysis_id}/progress.json")
        return int(json.loads(raw)["submitted"]) if raw else 0

    def _save_progress(self, analysis_id: str, submitted: int) -> None:
        self.blobs.put(f"analyses/{analysis_id}/progress.json", json.dumps({"submitted": submitted}).encode())

    # ---- reading ------------------------------------------------------------------------------

    def get(self, user: User, analysis_id: str) -> Analysis:
        """An analysis the caller may see (AnalysisNotFound otherwise, the same either way)."""
        valid = len(analysis_id) == 14 and analysis_id.startswith("a-")
        raw = self.blobs.get(f"analyses/{analysis_id}/analysis.json") if valid else None
        analysis = Analysis.model_validate_json(raw) if raw else None
        if analysis is None or not user.can_read(analysis.project):
            raise AnalysisNotFound(f"analysis {analysis_id[:40]} not found")
        return analysis

    def for_user(self, user: User) -> list[Analysis]:
        """Analyses of the caller's projects, newest first."""
        found = []
        for child in self.blobs.children("analyses"):
            raw = self.blobs.get(f"analyses/{child}/analysis.json")
            if raw:
                analysis = Analysis.model_validate_json(raw)
                if user.can_read(analysis.project):
                    found.append(analysis)
        return sorted(found, key=lambda a: a.created_at, reverse=True)

    def job_ids(self, analysis: Analysis) -> list[str]:
        """Every job id, in member order (kept when planned; planned again if that copy is lost)."""
        raw = self.blobs.get(f"analyses/{analysis.id}/jobs.json.gz")
        if raw:
            return [str(i) for i in json.loads(gzip.decompress(raw))]
        return [s.job_id for s in plan(analysis, self._members(analysis.id))]

    def results_filter(self, analysis: Analysis) -> tuple[str, str]:
        """A ``within`` filter selecting the analysis's results: its job ids, mirrored into the
        groups index (rebuilt from the object store if the mirror was lost)."""
        if not self.index.es.exists(index=self.groups.mirror, id=analysis.id):
            self.groups.mirror_members(analysis.id, self.job_ids(analysis))
        return self.groups.mirror, analysis.id

    def status(self, analysis: Analysis) -> dict[str, Any]:
        """Progress: submitted, complete (results searchable: what search and export see), and
        the states of the rest (read for up to 2,000 unfinished jobs, beyond that PENDING;
        PLANNED: not queued yet; INDEXING: finished, its result not searchable yet)."""
        ids = self.job_ids(analysis)
        complete: set[str] = set()
        within, after = self.results_filter(analysis), None
        while True:  # a search, not a realtime get: "complete" means export finds it
            page = self.index.find("*", size=1000, after=after, source=["id"], within=within, sort=[("id", "asc")])
            complete.update(h["id"] for h in page.hits)
            if page.after is None:
                break
            after = page.after
        rest = [i for i in ids if i not in complete]
        states: Counter[str] = Counter({"COMPLETE": len(complete)})
        with ThreadPoolExecutor(16) as pool:
            for state in pool.map(self._state, rest[:STATE_SAMPLE]):
                states["INDEXING" if state == "COMPLETE" else state] += 1
        if len(rest) > STATE_SAMPLE:
            states["PENDING"] += len(rest) - STATE_SAMPLE
        submitted = self.progress(analysis.id)
        finished = len(complete) + states["FAILED"] + states["CANCELLED"]
        return {"analysis": analysis.model_dump(mode="json"), "submitted": submitted, "complete": len(complete),
                "states": dict(states), "done": submitted >= analysis.jobs and finished == analysis.jobs}

    def _state(self, job_id: str) -> str:
        try:
            history = self.records.history(job_id)
        except NPSError:
            return "UNKNOWN"
        return history[-1].state.value if history else "PLANNED"  # not submitted yet
