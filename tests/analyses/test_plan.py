"""Planning an analysis: pure functions, no services."""

from __future__ import annotations

import pytest

from nps.analyses import Analysis, AnalysisState, Progress
from nps.analyses.plan import (
    MAX_REDUCE,
    check_member_count,
    check_plannable,
    plan,
    plan_slice,
    result_project,
)
from nps.analyses.status import tally
from nps.errors import InvalidJob, InvalidQuery

IMAGE = "sha256:" + "a" * 64
MEMBERS = [(f"{n:040x}", 1 + n % 2) for n in range(1, 8)]


def analysis(**changes: object) -> Analysis:
    base = {"id": "a-0123456789ab", "name": "t", "kind": "map", "image": IMAGE, "image_id": IMAGE,
            "command": ("true",), "mount": "/input", "created_by": "alice"}
    return Analysis.model_validate(base | changes)


def test_a_maps_job_n_is_member_ns_and_any_slice_of_the_plan_is_the_same_jobs() -> None:
    whole = plan(analysis(), MEMBERS)
    assert [s.inputs[0].dataset for s in whole] == [m for m, _ in MEMBERS]
    assert [s.inputs[0].revision for s in whole] == [r for _, r in MEMBERS]  # pinned
    assert plan_slice(analysis(), MEMBERS, 2, 5) == whole[2:5]
    assert [s.job_id for s in plan(analysis(), MEMBERS)] == [s.job_id for s in whole]  # the same members, same ids


def test_a_reduce_is_one_job_mounting_every_member_where_its_template_says() -> None:
    (job,) = plan(analysis(kind="reduce", mount="/inputs/{n}"), MEMBERS)
    assert [i.mount for i in sorted(job.inputs, key=lambda i: int(i.mount.rsplit("/", 1)[1]))] == [
        f"/inputs/{n}" for n in range(len(MEMBERS))]
    assert plan_slice(analysis(kind="reduce", mount="/inputs/{id}"), MEMBERS, 0, 1) == plan(
        analysis(kind="reduce", mount="/inputs/{id}"), MEMBERS)


def test_a_request_that_cannot_be_planned_is_refused_before_its_members_are_known() -> None:
    check_plannable(analysis(kind="reduce", mount="/inputs/same"), 1)  # one member: one mount is enough
    with pytest.raises(InvalidJob, match=r"needs \{id\} or \{n\}"):
        check_plannable(analysis(kind="reduce", mount="/inputs/same"), 2)
    with pytest.raises(InvalidJob):
        check_plannable(analysis(mount="/output"), 5)
    with pytest.raises(InvalidJob, match=r"twice|both"):
        check_plannable(analysis(env={"X": "1"}, parameters={"X": "2"}), 5)


def test_member_counts_and_the_results_project_follow_the_rules() -> None:
    with pytest.raises(InvalidQuery, match="no members"):
        check_member_count("map", 0)
    check_member_count("reduce", MAX_REDUCE)
    with pytest.raises(InvalidQuery, match="at most"):
        check_member_count("reduce", MAX_REDUCE + 1)
    assert result_project({"alpha"}, None) == "alpha"
    assert result_project(set(), None) == "default"
    assert result_project({"alpha", "beta"}, "beta") == "beta"
    with pytest.raises(InvalidJob, match="several projects"):
        result_project({"alpha", "beta"}, None)


def test_an_analysis_is_done_when_every_job_finished_or_when_it_could_not_be_planned() -> None:
    submitting = Progress(state=AnalysisState.SUBMITTING, jobs=3, submitted=2)
    assert not tally(submitting, 3, 3, [], 0)["done"]  # all complete so far, but one job not queued yet
    submitted = submitting.model_copy(update={"state": AnalysisState.SUBMITTED, "submitted": 3})
    assert tally(submitted, 3, 2, ["FAILED"], 0) == {"submitted": 3, "complete": 2,
                                                      "states": {"COMPLETE": 2, "FAILED": 1}, "done": True}
    assert tally(submitted, 3, 1, ["COMPLETE", "RUNNING"], 0)["states"] == {"COMPLETE": 1, "INDEXING": 1,
                                                                            "RUNNING": 1}
    assert not tally(Progress(), 0, 0, [], 0)["done"]  # PLANNING: nothing known yet
    assert tally(Progress(state=AnalysisState.FAILED, reason="no members"), 0, 0, [], 0)["done"]
