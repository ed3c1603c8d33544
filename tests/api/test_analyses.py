"""Map and reduce analyses through the API, planned and queued by the analyst (`nps worker
analyses`) and run by real job and index workers on the real stack: results indexed, progress,
export of an analysis's results, members with results skipped; an API that only records the
request, an analyst killed mid-way that carries on without queuing jobs twice, and outages of
the broker and Elasticsearch answered with 503."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from nps.analyses import AnalysisRecords, AnalysisState, Progress
from nps.analyses.fanout import SUBMIT_BATCH
from nps.api.app import create_app
from nps.blobs import MinioBlobs
from nps.broker import Publisher, browse_dlq, queue_state, topology
from nps.config import Settings
from nps.index import DatasetIndex
from nps.index.sync import document_from_store
from nps.jobs import records_for
from nps.store import upload_dataset_id
from nps.store.source import hash_sources, scan_source
from schemas.dataset import DatasetRecord, UploadOrigin
from schemas.messages import AnalysisRequested
from tests.api.test_groups import closed_port, h, series
from tests.conftest import REPO
from tests.faults import Proxy
from tests.store.helpers import make_tree

BUSYBOX = "localhost/nps/busybox:1"
COUNT_FILES = ["sh", "-c", 'mkdir -p /output/.nps && n=$(find /input -type f ! -path \"*/.nps/*\" | wc -l) && '
               'echo "{\\"files\\": $n}" > /output/.nps/metadata.json']
COUNT_MEMBERS = ["sh", "-c", 'mkdir -p /output/.nps && n=$(ls /inputs | wc -l) && '
                 'echo "{\\"members\\": $n}" > /output/.nps/metadata.json']
Start = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def members(api: dict[str, Any], tmp_path: Path) -> list[str]:
    """Four more alpha datasets with 1..4 files (five alpha members in all)."""
    store, s = api["store"], api["settings"]
    index = DatasetIndex(s.es_url, s.queue_prefix)
    made = [api["data"]["alpha"]]
    for n in range(1, 5):
        src = make_tree(tmp_path / f"m{n}", {f"f{k}.txt": f"{n}-{k}".encode() for k in range(n)})
        files = scan_source(src)
        dataset_id = upload_dataset_id((f.path, f.size, x) for f, x in zip(files, hash_sources(files, 2), strict=True))
        store.put(dataset_id, src, DatasetRecord(id=dataset_id, project="alpha", origin=UploadOrigin(source="m")))
        index.put(document_from_store(store, dataset_id))
        made.append(dataset_id)
    return made


@pytest.fixture
def start(api: dict[str, Any], tmp_path: Path) -> Iterator[Start]:
    """Start `nps worker ...` processes on the API's bucket and queues; all stopped (by pid) after."""
    s = api["settings"]
    env = dict(os.environ, NPS_MINIO_BUCKET=s.minio_bucket, NPS_QUEUE_PREFIX=s.queue_prefix,
               NPS_HOME=str(tmp_path / "home"))
    procs: list[subprocess.Popen[bytes]] = []

    def run(*args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{args[0]}-{len(procs)}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "-m", "nps", "worker", *args], env=env | extra_env, cwd=REPO,
                                      stdout=log, stderr=subprocess.STDOUT))
        return procs[-1]

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def workers(start: Start, busybox_id: str) -> None:
    """An analyst, a job worker and an indexer."""
    for args in (["analyses"], ["jobs", "-c", "2"], ["index"]):
        start(*args)


def wait_done(c: TestClient, token: str, analysis_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = c.get(f"/api/v1/analyses/{analysis_id}", headers=h(token)).json()
        if status.get("done"):
            return status
        time.sleep(1)
    pytest.fail(f"analysis {analysis_id} not done: {status}")


def progress(api: dict[str, Any], analysis_id: str) -> Progress:
    records = AnalysisRecords(MinioBlobs(api["store"]))
    analysis = records.load(analysis_id)
    assert analysis is not None
    return records.progress(analysis)


def wait_progress(api: dict[str, Any], analysis_id: str, ready: Callable[[Progress], bool],
                  timeout: float = 120) -> Progress:
    deadline = time.monotonic() + timeout
    while not ready(now := progress(api, analysis_id)):
        assert time.monotonic() < deadline, f"analysis {analysis_id} never got there: {now}"
        time.sleep(0.05)
    return now


def queued_jobs(s: Settings) -> int:
    """Messages waiting in the jobs queue (no job worker runs in the tests that count them)."""
    state = queue_state(topology(s), f"{s.queue_prefix}.jobs")
    assert state is not None
    return state.messages


def big_group(api: dict[str, Any], size: int) -> str:
    """A group of ``size`` alpha series documents (in the index only: enough to plan and queue)."""
    DatasetIndex(api["settings"].es_url, api["settings"].queue_prefix).bulk(
        series(n, "alpha") for n in range(1, size + 1))
    made = api["client"].post("/api/v1/groups", json={"name": "big", "project": "alpha", "query": "kind:series"},
                              headers=h(api["tokens"]["alice"]))
    assert made.status_code == 201 and made.json()["size"] == size, made.text
    return str(made.json()["id"])


def test_map_and_reduce_over_a_group_then_export_and_skip_what_exists(
        api: dict[str, Any], members: list[str], workers: None) -> None:
    c, t = api["client"], api["tokens"]
    group = c.post("/api/v1/groups", json={"name": "five", "project": "alpha", "ids": members},
                   headers=h(t["alice"])).json()
    body = {"kind": "map", "name": "count files", "group": group["id"], "image": BUSYBOX, "command": COUNT_FILES}
    started = c.post("/api/v1/analyses", json=body, headers=h(t["alice"]))
    assert started.status_code == 202, started.text
    analysis_id = started.json()["analysis"]["id"]
    assert started.json()["analysis"]["state"] == "PLANNING"
    status = wait_done(c, t["alice"], analysis_id)
    assert status["complete"] == 5 and status["states"] == {"COMPLETE": 5}
    assert status["analysis"]["state"] == "SUBMITTED" and status["submitted"] == 5
    assert (status["analysis"]["members"], status["analysis"]["jobs"], status["analysis"]["skipped"]) == (5, 5, 0)
    made = c.get(f"/api/v1/analyses/{analysis_id}/jobs", headers=h(t["alice"])).json()
    assert len(set(made["job_ids"])) == 5 and sorted(made["members"]) == sorted(members)
    job_of = dict(zip(made["members"], made["job_ids"], strict=True))

    table = c.get("/api/v1/export", params={"analysis": analysis_id, "fields": "metadata.files",
                                            "input_fields": "id,files", "format": "jsonl"}, headers=h(t["alice"]))
    rows = [__import__("json").loads(line) for line in table.text.splitlines()]
    assert len(rows) == 5
    assert all(r["metadata.files"] == r["input.files"] for r in rows), rows  # each job saw exactly its member
    assert {(r["input"], r["result"]) for r in rows} == set(job_of.items())

    again = c.post("/api/v1/analyses", json=body | {"name": "again"}, headers=h(t["alice"])).json()
    again_status = wait_done(c, t["alice"], again["analysis"]["id"])
    assert again_status["analysis"]["skipped"] == 5
    assert c.get(f"/api/v1/analyses/{again['analysis']['id']}/jobs", headers=h(t["alice"])).json()["job_ids"] \
        == made["job_ids"]

    narrowed = c.post("/api/v1/analyses", json={**body, "query": "files:>=3"}, headers=h(t["alice"])).json()
    assert wait_done(c, t["alice"], narrowed["analysis"]["id"])["analysis"]["members"] == 2  # the group, narrowed

    reduce = c.post("/api/v1/analyses", json={"kind": "reduce", "name": "all", "group": group["id"],
                                              "image": BUSYBOX, "command": COUNT_MEMBERS},
                    headers=h(t["alice"])).json()
    wait_done(c, t["alice"], reduce["analysis"]["id"])
    reduced = c.get(f"/api/v1/analyses/{reduce['analysis']['id']}/jobs", headers=h(t["alice"])).json()["job_ids"]
    assert len(reduced) == 1
    result = c.get("/api/v1/search", params={"q": f"id:{reduced[0]}"}, headers=h(t["alice"])).json()
    assert result["hits"][0]["metadata"]["members"] == 5
    assert sorted(result["hits"][0]["inputs"]) == sorted(members)
    down = c.get(f"/api/v1/datasets/{members[1]}/provenance", params={"direction": "descendants"},
                 headers=h(t["alice"])).json()
    assert {n["id"] for n in down["datasets"]} == {job_of[members[1]], reduced[0]}


def test_who_may_run_what_and_bad_analyses_get_clear_4xx(api: dict[str, Any], members: list[str],
                                                          busybox_id: str) -> None:
    c, t = api["client"], api["tokens"]
    group = c.post("/api/v1/groups", json={"name": "five", "project": "alpha", "ids": members},
                   headers=h(t["alice"])).json()
    body = {"kind": "map", "name": "x", "group": group["id"], "image": BUSYBOX, "command": ["true"]}
    assert c.post("/api/v1/analyses", json=body, headers=h(t["bob"])).status_code == 404  # not bob's group
    assert c.post("/api/v1/analyses", json=body, headers=h(t["victor"])).status_code == 403  # a viewer
    made = c.post("/api/v1/analyses", json=body, headers=h(t["alice"])).json()
    assert c.get(f"/api/v1/analyses/{made['analysis']['id']}", headers=h(t["bob"])).status_code == 404
    assert [a["id"] for a in c.get("/api/v1/analyses", headers=h(t["bob"])).json()] == []
    for bad, status in (({"kind": "reduce", "mount": "/inputs/same"}, 400), ({"query": "nothing:matches"}, 400),
                        ({"group": None}, 400), ({"image": "no/such:image"}, 400), ({"mount": "/output"}, 400),
                        ({"image": "Bad Name"}, 400), ({"kind": "scatter"}, 422), ({"extra": 1}, 422),
                        ({"group": "g-000000000000"}, 404), ({"command": []}, 422)):
        answer = c.post("/api/v1/analyses", json=body | bad, headers=h(t["alice"]))
        assert answer.status_code == status, (bad, answer.status_code, answer.text)
    assert [a["id"] for a in c.get("/api/v1/analyses", headers=h(t["alice"])).json()] == [made["analysis"]["id"]]


def test_the_api_only_records_an_analysis_and_the_analyst_queues_its_jobs(
        api: dict[str, Any], start: Start) -> None:
    c, t, s = api["client"], api["tokens"], api["settings"]
    group = big_group(api, 1000)
    made = c.post("/api/v1/analyses", json={"kind": "map", "name": "big", "group": group, "image": BUSYBOX,
                                            "command": ["true"]}, headers=h(t["alice"]))
    assert made.status_code == 202, made.text
    analysis_id = made.json()["analysis"]["id"]
    # No analyst runs yet: the API planned nothing, queued nothing and recorded no job.
    status = c.get(f"/api/v1/analyses/{analysis_id}", headers=h(t["alice"])).json()
    assert status["analysis"]["state"] == "PLANNING" and status["submitted"] == 0 and not status["done"]
    assert c.get(f"/api/v1/analyses/{analysis_id}/jobs", headers=h(t["alice"])).status_code == 409
    assert queued_jobs(s) == 0 and list(records_for(api["store"]).ids()) == []

    start("analyses")
    done = wait_progress(api, analysis_id, lambda p: p.state is AnalysisState.SUBMITTED)
    assert (done.members, done.jobs, done.submitted) == (1000, 1000, 1000)
    assert queued_jobs(s) == 1000
    status = c.get(f"/api/v1/analyses/{analysis_id}", headers=h(t["alice"])).json()
    assert status["submitted"] == 1000 and status["states"] == {"COMPLETE": 0, "QUEUED": 1000}


def test_an_analyst_killed_mid_way_carries_on_queuing_no_job_twice_beyond_the_batch_in_flight(
        api: dict[str, Any], start: Start) -> None:
    c, t, s = api["client"], api["tokens"], api["settings"]
    group = big_group(api, 1500)
    made = c.post("/api/v1/analyses", json={"kind": "map", "name": "big", "group": group, "image": BUSYBOX,
                                            "command": ["true"]}, headers=h(t["alice"])).json()
    analysis_id = made["analysis"]["id"]
    analyst = start("analyses")
    wait_progress(api, analysis_id, lambda p: p.submitted >= SUBMIT_BATCH)
    analyst.send_signal(signal.SIGKILL)
    analyst.wait(timeout=10)
    killed_at = progress(api, analysis_id)
    assert killed_at.state is AnalysisState.SUBMITTING and killed_at.submitted < 1500, killed_at

    start("analyses")
    done = wait_progress(api, analysis_id, lambda p: p.state is AnalysisState.SUBMITTED)
    assert done.submitted == 1500
    assert 1500 <= queued_jobs(s) <= 1500 + SUBMIT_BATCH  # at most the batch in flight went out twice
    assert len(list(records_for(api["store"]).ids())) == 1500


def _through_cut_proxy(s: Settings, proxy: Proxy) -> Settings:
    url = urlsplit(s.amqp_url.get_secret_value())  # type: ignore[union-attr]
    netloc = url.netloc.replace(f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}")
    return s.model_copy(update={"amqp_url": SecretStr(urlunsplit(url._replace(netloc=netloc)))})


def test_an_api_that_cannot_reach_the_broker_answers_503_and_keeps_no_analysis(
        api: dict[str, Any], members: list[str], busybox_id: str) -> None:
    s, t = api["settings"], api["tokens"]
    url = urlsplit(s.amqp_url.get_secret_value())
    proxy = Proxy(url.hostname or "127.0.0.1", url.port or 5672)
    try:
        proxy.cut()  # the broker is unreachable from this API process
        cut_off = TestClient(create_app(_through_cut_proxy(s, proxy)))
        answer = cut_off.post("/api/v1/analyses", json={"kind": "map", "name": "later", "query": "kind:*",
                                                        "image": BUSYBOX, "command": ["true"]},
                              headers=h(t["alice"]))
        assert answer.status_code == 503 and "RabbitMQ" in answer.json()["detail"], answer.text
        assert cut_off.get("/api/v1/analyses", headers=h(t["alice"])).json() == []  # asked again, not half kept
    finally:
        proxy.close()


def test_an_elasticsearch_outage_is_a_503_for_analyses(
        api: dict[str, Any], members: list[str], start: Start, busybox_id: str) -> None:
    c, t = api["client"], h(api["tokens"]["alice"])
    group = c.post("/api/v1/groups", json={"name": "five", "project": "alpha", "ids": members}, headers=t).json()
    made = c.post("/api/v1/analyses", json={"kind": "map", "name": "x", "group": group["id"], "image": BUSYBOX,
                                            "command": ["true"]}, headers=t).json()
    analysis_id = made["analysis"]["id"]
    start("analyses")
    wait_progress(api, analysis_id, lambda p: p.state is AnalysisState.SUBMITTED)

    down = TestClient(create_app(api["settings"].model_copy(update={"es_url": f"http://127.0.0.1:{closed_port()}"})),
                      raise_server_exceptions=False)  # an unexpected error answers 500, as in production
    for method, path, kwargs in (
            ("POST", "/api/v1/analyses", {"json": {"kind": "map", "name": "y", "group": group["id"],
                                                   "image": BUSYBOX, "command": ["true"]}}),
            ("GET", f"/api/v1/analyses/{analysis_id}", {}),
            ("GET", "/api/v1/export", {"params": {"analysis": analysis_id, "fields": "id"}})):
        answer = down.request(method, path, headers=t, **kwargs)
        assert answer.status_code == 503, (path, answer.status_code, answer.text)
        assert "Elasticsearch" in answer.json()["detail"], answer.text
    assert down.get(f"/api/v1/analyses/{analysis_id}/jobs", headers=t).json()["job_ids"]  # no search needed


def test_a_request_for_an_analysis_never_recorded_is_set_aside_with_its_reason(
        api: dict[str, Any], start: Start) -> None:
    topo = topology(api["settings"])
    publisher = Publisher(topo)
    try:
        publisher.analysis(AnalysisRequested(analysis_id="a-000000000000"))
    finally:
        publisher.close()
    start("analyses")
    deadline = time.monotonic() + 60
    while not (dead := list(browse_dlq(topo, queue="analyses"))):
        assert time.monotonic() < deadline, "the request was never set aside"
        time.sleep(0.2)
    assert len(dead) == 1 and "a-000000000000 is not recorded" in dead[0].reason


def test_an_index_outage_longer_than_the_delivery_limit_delays_an_analysis_and_never_sets_it_aside(
        api: dict[str, Any], start: Start, tmp_path: Path) -> None:
    c, t = api["client"], api["tokens"]
    group = big_group(api, 10)
    made = c.post("/api/v1/analyses", json={"kind": "map", "name": "outage", "group": group, "image": BUSYBOX,
                                            "command": ["true"]}, headers=h(t["alice"]))
    assert made.status_code == 202, made.text
    analysis_id = made.json()["analysis"]["id"]
    blind = start("analyses", NPS_ES_URL=f"http://127.0.0.1:{closed_port()}")  # a real refused connection
    log = tmp_path / "analyses-0.log"
    deadline = time.monotonic() + 120
    while "the request was sent again" not in log.read_text():  # the queue's delivery limit was reached
        assert time.monotonic() < deadline and blind.poll() is None, log.read_text()
        time.sleep(0.5)
    topo = topology(api["settings"])
    assert list(browse_dlq(topo, queue="analyses")) == []
    assert progress(api, analysis_id).state is AnalysisState.PLANNING
    blind.terminate()
    blind.wait(timeout=30)

    start("analyses")  # Elasticsearch is back for the analysts: the analysis carries on
    done = wait_progress(api, analysis_id, lambda p: p.state is AnalysisState.SUBMITTED)
    assert done.submitted == 10 and list(browse_dlq(topo, queue="analyses")) == []
