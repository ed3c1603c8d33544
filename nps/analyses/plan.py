"""Planning an analysis: pure functions, no store, no index, no broker.

A map is one job per member (member ``n`` mounted at ``mount``; job ``n`` is member ``n``'s),
a reduce one job over every member (each at its own mount). A job's id is its spec's hash, so
the same members always give the same jobs, and a plan can be made again piece by piece.
"""

from __future__ import annotations

from nps.analyses.model import Analysis, Member
from nps.errors import InvalidJob, InvalidQuery
from nps.jobs.plan import build_spec
from schemas.common import DEFAULT_PROJECT
from schemas.job import JobSpec
from schemas.messages import JobRequested

MAX_MAP = 200_000
MAX_REDUCE = 2_000
DEFAULT_MOUNT = {"map": "/input", "reduce": "/inputs/{id}"}
# Stand-ins for members when a request is checked before its members are resolved.
_PLACEHOLDERS: list[Member] = [("0" * 40, 1), ("1" * 40, 1)]


def member_limit(kind: str) -> int:
    """How many members an analysis of this kind may have (a reduce mounts every one)."""
    return MAX_MAP if kind == "map" else MAX_REDUCE


def check_member_count(kind: str, count: int) -> None:
    """InvalidQuery unless an analysis of ``kind`` may run over ``count`` members."""
    if count == 0:
        raise InvalidQuery("the analysis has no members")
    if count > member_limit(kind):
        raise InvalidQuery(f"{count} members: at most {member_limit(kind)} for a {kind}: narrow the query")


def check_plannable(analysis: Analysis, count: int) -> None:
    """InvalidJob if the analysis could not be planned over ``count`` members whatever they are
    (a bad mount, env or parameter; a reduce whose mounts do not tell two members apart)."""
    plan(analysis, _PLACEHOLDERS[:min(count, len(_PLACEHOLDERS))])


def result_project(projects: set[str], asked: str | None) -> str:
    """The project results belong to: the one asked for, else the members' one (members of
    several projects need one asked for)."""
    if asked:
        return asked
    if len(projects) > 1:
        raise InvalidJob("the members come from several projects: say which project the results belong to")
    return next(iter(projects), DEFAULT_PROJECT)


def mount_for(template: str, member: str, n: int) -> str:
    """``{id}`` becomes the member's id, ``{n}`` its position (from 0)."""
    return template.replace("{id}", member).replace("{n}", str(n))


def plan(analysis: Analysis, members: list[Member]) -> list[JobSpec]:
    """The job specs of an analysis, in member order (the same members give the same ids)."""
    env, params = list(analysis.env.items()), list(analysis.parameters.items())
    if analysis.kind == "map":
        return [build_spec(analysis.image_id, list(analysis.command), [(m, r, mount_for(analysis.mount, m, 0))],
                           env, params) for m, r in members]
    inputs = [(m, r, mount_for(analysis.mount, m, n)) for n, (m, r) in enumerate(members)]
    if len({mount for _, _, mount in inputs}) != len(inputs):
        raise InvalidJob("a reduce mounts every member: the mount template needs {id} or {n}")
    return [build_spec(analysis.image_id, list(analysis.command), inputs, env, params)]


def plan_slice(analysis: Analysis, members: list[Member], start: int, stop: int) -> list[JobSpec]:
    """Jobs ``start`` to ``stop`` of the plan, without planning the others (a map's job n
    depends on member n alone)."""
    if analysis.kind == "map":
        return plan(analysis, members[start:stop])
    return plan(analysis, members)[start:stop]


def job_requests(analysis: Analysis, specs: list[JobSpec]) -> list[JobRequested]:
    """What is queued for each spec: its resources, project and who asked."""
    project = None if analysis.project == DEFAULT_PROJECT else analysis.project
    return [JobRequested(job_id=s.job_id, spec=s, resources=analysis.resources, project=project,
                         requested_by=analysis.created_by) for s in specs]


def visible(project: str | None, projects: tuple[str, ...] | None) -> bool:
    """True when data of ``project`` is within ``projects`` (None: every project)."""
    return projects is None or (project or DEFAULT_PROJECT) in projects
