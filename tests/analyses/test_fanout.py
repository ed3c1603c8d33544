"""The analyst's steps on the real Elasticsearch, analyses kept in a local blob space (the
store's second real implementation). Queued jobs and next steps are collected where the
analyst would hand them to RabbitMQ (tests/api/test_analyses.py runs the whole path)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nps.analyses import Analysis, AnalysisRecords, AnalysisState, Analyst, Progress
from nps.analyses.plan import plan
from nps.blobs import LocalBlobs
from nps.config import Settings
from nps.groups import Group, GroupRecords
from nps.index import DatasetIndex
from schemas.messages import AnalysisRequested, JobRequested
from tests.analyses.test_plan import analysis
from tests.api.test_groups import series
from tests.conftest import service_missing


@pytest.fixture
def index(settings: Settings) -> Iterator[DatasetIndex]:
    index = DatasetIndex(settings.es_url, f"t{uuid.uuid4().hex[:10]}")
    try:
        index.ensure()
    except Exception as exc:
        service_missing(f"Elasticsearch at {settings.es_url} unusable: {exc}")
    index.bulk([series(n, "alpha") for n in range(1, 11)] + [series(n, "beta") for n in range(11, 14)])
    yield index
    index.drop()
    index.es.indices.delete(index=index.member_lists, ignore_unavailable=True)


class Harness:
    """An analyst whose queued jobs and next steps are kept in lists."""

    def __init__(self, tmp_path: Path, index: DatasetIndex) -> None:
        blobs = LocalBlobs(tmp_path / "blobs")
        self.records = AnalysisRecords(blobs)
        self.groups = GroupRecords(blobs, index)
        self.queued: list[JobRequested] = []
        self.next: list[AnalysisRequested] = []
        self.analyst = Analyst(self.records, self.groups, index, self.queued.extend, self.next.append,
                               step_seconds=0, batch=3)

    def request(self, made: Analysis, projects: tuple[str, ...] | None = ("alpha",)) -> AnalysisRequested:
        self.records.create(made, Progress(projects=projects))
        return AnalysisRequested(analysis_id=made.id)

    def run(self, message: AnalysisRequested) -> Progress:
        """Deliver ``message`` and then every next step, one after the other."""
        progress = self.analyst.step(message)
        while self.next:
            progress = self.analyst.step(self.next.pop(0))
        return progress


def test_steps_plan_then_queue_a_batch_each_until_every_job_is_queued_once(tmp_path: Path,
                                                                          index: DatasetIndex) -> None:
    h = Harness(tmp_path, index)
    made = analysis(query="kind:series")
    first = h.analyst.step(h.request(made))
    assert first.state is AnalysisState.SUBMITTING and (first.members, first.jobs, first.submitted) == (10, 10, 0)
    assert [m.step for m in h.next] == [1]  # one piece of work per step here: the next step is queued
    done = h.run(h.next.pop())
    assert done.state is AnalysisState.SUBMITTED and done.submitted == 10 and not h.next
    members = h.records.members(made.id)
    assert [m for m, _ in members] == [f"{n:040x}" for n in range(1, 11)]  # alice's (alpha) only, in id order
    assert [r.job_id for r in h.queued] == [s.job_id for s in plan(made, members)]  # each once, in order
    assert h.records.job_ids(made.id) == [r.job_id for r in h.queued]
    assert index.has_members(made.id)  # its results are one filter away


def test_a_stale_step_is_dropped_and_a_step_ahead_of_the_record_carries_on(tmp_path: Path,
                                                                         index: DatasetIndex) -> None:
    h = Harness(tmp_path, index)
    message = h.request(analysis(query="kind:series"))
    h.analyst.step(message)  # planned
    second = h.next.pop()
    h.analyst.step(second)  # a batch queued
    third = h.next.pop()
    queued = len(h.queued)
    # The analyst died after sending `third` but before acking: `second` comes back, and is stale.
    for stale in (second, message):
        assert h.analyst.step(stale).submitted == 3 and len(h.queued) == queued and not h.next
    # A step sent whose record was lost (the analyst died in between) is ahead of the record: it carries on...
    progress = h.analyst.step(AnalysisRequested(analysis_id=message.analysis_id, step=5))
    assert progress.submitted == 6 and [m.step for m in h.next] == [6]
    # ...and the step it overtook is stale from then on.
    assert h.analyst.step(third).submitted == 6 and len(h.next) == 1
    assert h.run(h.next.pop()).state is AnalysisState.SUBMITTED
    assert len({r.job_id for r in h.queued}) == len(h.queued) == 10


def test_an_analysis_that_cannot_be_planned_fails_with_its_reason_and_queues_nothing(tmp_path: Path,
                                                                                    index: DatasetIndex) -> None:
    h = Harness(tmp_path, index)
    for made, reason in ((analysis(id="a-000000000001", query="nothing:here"), "no members"),
                         (analysis(id="a-000000000002", kind="reduce", mount="/in", query="kind:series"), "{id}"),
                         (analysis(id="a-000000000003", group="g-0123456789ab"), "not found")):
        progress = h.run(h.request(made))
        assert progress.state is AnalysisState.FAILED and reason in (progress.reason or ""), progress
    assert h.queued == [] and h.next == []


def test_a_group_analysis_takes_the_members_the_requester_could_see(tmp_path: Path, index: DatasetIndex) -> None:
    h = Harness(tmp_path, index)
    ids = [f"{n:040x}" for n in (2, 11, 3)]  # 11 is beta's
    h.groups.save(Group(id="g-0123456789ab", name="g", project="alpha", size=3, created_by="root"), ids)
    alices = h.run(h.request(analysis(id="a-000000000001", group="g-0123456789ab")))
    roots = h.run(h.request(analysis(id="a-000000000002", group="g-0123456789ab"), projects=None))
    narrowed = h.run(h.request(analysis(id="a-000000000003", group="g-0123456789ab", query="patient_id:P003"),
                               projects=None))
    assert [m for m, _ in h.records.members("a-000000000001")] == [ids[0], ids[2]] and alices.jobs == 2
    assert [m for m, _ in h.records.members("a-000000000002")] == ids and roots.jobs == 3  # group order kept
    assert [m for m, _ in h.records.members("a-000000000003")] == [ids[2]] and narrowed.jobs == 1
