"""Planning targets, on an in-memory catalog of indexed series (the planner's own interface;
the Elasticsearch-backed catalog is exercised end to end in test_engine.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from nps.processors.plan import Planner, SeriesRef, Target
from schemas.processor import Level, Processor

IMAGE = "sha256:" + "1" * 64


@dataclass
class Catalog:
    """Series, with the queries each one matches (a query is a tag here)."""

    series: dict[str, tuple[SeriesRef, set[str]]] = field(default_factory=dict)
    results: set[str] = field(default_factory=set)

    def add(self, sid: str, tags: set[str], study: str = "st1", subject: str = "sub1", acquired: str = "",
            project: str | None = None) -> None:
        self.series[sid] = (SeriesRef(sid, 1, study, subject, project, acquired), tags | {"*"})

    def matching(self, query: str, target: Target | None) -> list[SeriesRef]:
        return [ref for ref, tags in self.series.values()
                if query in tags and (target is None or target.contains(ref))]

    def result_exists(self, dataset_id: str) -> bool:
        return dataset_id in self.results


def proc(name: str, level: str = "series", where: str = "*", **inputs: dict[str, object]) -> Processor:
    return Processor.model_validate({"name": name, "version": 1, "level": level, "where": where,
                                     "inputs": inputs, "image": "x", "command": ["run"]})


def planner(catalog: Catalog, *processors: Processor) -> Planner:
    return Planner({p.name: p for p in processors}, catalog, {p.name: IMAGE for p in processors})


CONVERT = proc("convert", where="mr", dicom={"mount": "/input"})
STATS = proc("stats", where="t1", nifti={"from": "convert", "mount": "/input"})
PAIR = proc("pair", "study", t1={"from": "convert", "match": "t1", "mount": "/t1"},
            flair={"from": "convert", "match": "flair", "mount": "/flair"})


def test_a_series_level_processor_runs_on_each_series_its_where_matches() -> None:
    catalog = Catalog()
    catalog.add("a" * 40, {"mr", "t1"})
    catalog.add("b" * 40, {"ct"})
    p = planner(catalog, CONVERT)
    assert p.targets(CONVERT) == [Target(Level.SERIES, "a" * 40)]
    plan = p.plan(CONVERT, Target(Level.SERIES, "a" * 40))
    assert plan.ready and len(plan.specs) == 1
    spec = plan.specs[0]
    assert [(i.dataset, i.revision, i.mount) for i in spec.inputs] == [("a" * 40, 1, "/input")]
    assert spec.parameters == {"nps.processor": "convert@1", "nps.target": f"series:{'a' * 40}"}
    again = planner(catalog, CONVERT).plan(CONVERT, Target(Level.SERIES, "a" * 40))
    assert again.specs[0].job_id == spec.job_id  # same inputs, same job: resubmitting is a no-op
    assert not p.plan(CONVERT, Target(Level.SERIES, "b" * 40)).ready


def test_a_pipeline_step_waits_for_its_upstream_result() -> None:
    catalog = Catalog()
    catalog.add("a" * 40, {"mr", "t1"})
    target = Target(Level.SERIES, "a" * 40)
    waiting = planner(catalog, CONVERT, STATS).plan(STATS, target)
    assert not waiting.ready and "convert" in (waiting.missing or "")
    converted = planner(catalog, CONVERT).plan(CONVERT, target).specs[0].job_id
    catalog.results.add(converted)
    plan = planner(catalog, CONVERT, STATS).plan(STATS, target)
    assert plan.ready and plan.specs[0].inputs[0].dataset == converted


def test_a_study_job_needs_both_inputs_and_says_which_is_missing() -> None:
    catalog = Catalog()
    catalog.add("a" * 40, {"mr", "t1"}, study="S")
    target = Target(Level.STUDY, "S")
    t1_result = planner(catalog, CONVERT).plan(CONVERT, Target(Level.SERIES, "a" * 40)).specs[0].job_id
    catalog.results.add(t1_result)
    missing = planner(catalog, CONVERT, PAIR).plan(PAIR, target)
    assert not missing.ready and (missing.missing or "").startswith("flair: no results of 'convert'")
    catalog.add("f" * 40, {"mr", "flair"}, study="S")
    catalog.results.add(planner(catalog, CONVERT).plan(CONVERT, Target(Level.SERIES, "f" * 40)).specs[0].job_id)
    plan = planner(catalog, CONVERT, PAIR).plan(PAIR, target)
    assert plan.ready
    assert {i.mount: i.dataset for i in plan.specs[0].inputs}["/t1"] == t1_result


@pytest.mark.parametrize(("choose", "jobs", "mounts"), [
    ("latest", 1, ["/in"]), ("each", 3, ["/in"]), ("all", 1, ["/in/1", "/in/2", "/in/3"])])
def test_choose_latest_each_or_all(choose: str, jobs: int, mounts: list[str]) -> None:
    catalog = Catalog()
    for n, when in enumerate(["2024-03-01", "2024-01-01", "2024-02-01"]):
        catalog.add(str(n) * 40, {"t1"}, subject="P", acquired=when)
    reduce = proc("mean", "subject", t1s={"match": "t1", "need": "at_least_one", "choose": choose, "mount": "/in"})
    plan = planner(catalog, reduce).plan(reduce, Target(Level.SUBJECT, "P"))
    assert len(plan.specs) == jobs
    assert sorted(i.mount for i in plan.specs[0].inputs) == mounts
    if choose == "latest":
        assert plan.specs[0].inputs[0].dataset == "0" * 40  # acquired 2024-03-01
    if choose == "all":  # ordered by acquisition time
        assert [i.dataset[0] for i in sorted(plan.specs[0].inputs, key=lambda i: i.mount)] == ["1", "2", "0"]


def test_every_result_belongs_to_the_project_of_its_inputs() -> None:
    catalog = Catalog()
    catalog.add("a" * 40, {"mr", "t1"}, study="S", project="alpha")
    catalog.add("b" * 40, {"mr", "t1"}, study="S", project="alpha")
    catalog.add("d" * 40, {"mr", "t1"}, study="D", project="default")  # the same as no project
    catalog.add("e" * 40, {"mr", "t1"}, study="D")
    convert = planner(catalog, CONVERT).plan(CONVERT, Target(Level.SERIES, "a" * 40))
    assert list(convert.projects.values()) == ["alpha"]
    catalog.results.add(convert.specs[0].job_id)
    stats = planner(catalog, CONVERT, STATS).plan(STATS, Target(Level.SERIES, "a" * 40))
    assert list(stats.projects.values()) == ["alpha"]  # a result of a result: still the series' project
    study = proc("study", "study", t1s={"match": "t1", "need": "at_least_one", "choose": "all", "mount": "/in"})
    assert list(planner(catalog, study).plan(study, Target(Level.STUDY, "S")).projects.values()) == ["alpha"]
    assert list(planner(catalog, study).plan(study, Target(Level.STUDY, "D")).projects.values()) == [None]
    whole = proc("whole", "project", t1s={"match": "t1", "need": "at_least_one", "choose": "all", "mount": "/in"})
    assert list(planner(catalog, whole).plan(whole, Target(Level.PROJECT, "-")).projects.values()) == [None]


def test_a_target_whose_inputs_come_from_two_projects_is_refused_and_names_them() -> None:
    catalog = Catalog()
    catalog.add("a" * 40, {"mr", "t1"}, study="S", project="alpha", acquired="2024-01-01")
    catalog.add("b" * 40, {"mr", "t1"}, study="S", project="beta", acquired="2024-02-01")
    both = proc("both", "study", t1s={"match": "t1", "need": "at_least_one", "choose": "all", "mount": "/in"})
    plan = planner(catalog, both).plan(both, Target(Level.STUDY, "S"))
    assert not plan.ready and plan.missing is None and plan.specs == []
    assert (plan.refused or "").startswith("inputs come from several projects (alpha, beta)")
    latest = proc("latest", "study", t1={"match": "t1", "mount": "/in"})  # one input, one project: runs
    one = planner(catalog, latest).plan(latest, Target(Level.STUDY, "S"))
    assert [one.projects[s.job_id] for s in one.specs] == ["beta"]
