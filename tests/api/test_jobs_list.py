"""The job list read from the jobs index, and submitting with no container engine in the API:
the in-process API against the real MinIO, Elasticsearch and RabbitMQ, with real indexer and job
worker processes (and their real container engine) on its bucket and queues."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nps.api.app import create_app
from nps.api.auth import Role
from nps.blobs import MinioBlobs
from nps.index.jobs import JobIndex
from nps.jobs.images import ImageCatalog
from tests.api.test_api import BUSYBOX, h
from tests.conftest import REPO

Start = Callable[[str], subprocess.Popen[bytes]]


@pytest.fixture
def servers(api: dict[str, Any], tmp_path: Path) -> Iterator[Start]:
    """Start ``nps worker KIND`` processes (``index``, ``jobs``) on the API's bucket and queues;
    each is stopped by its pid at the end."""
    s = api["settings"]
    env = dict(os.environ, NPS_MINIO_BUCKET=s.minio_bucket, NPS_QUEUE_PREFIX=s.queue_prefix,
               NPS_HOME=str(tmp_path / "home"))
    started: list[subprocess.Popen[bytes]] = []

    def start(kind: str) -> subprocess.Popen[bytes]:
        args = ["jobs", "-c", "1"] if kind == "jobs" else [kind]
        log = (tmp_path / f"{kind}.log").open("w")
        started.append(subprocess.Popen([sys.executable, "-m", "nps", "worker", *args], env=env, cwd=REPO,
                                        stdout=log, stderr=subprocess.STDOUT))
        if kind == "index":
            wait_for_jobs_index(JobIndex(s.es_url, s.queue_prefix))
        return started[-1]

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_for_jobs_index(index: JobIndex, timeout: float = 60) -> None:
    """Until the indexer has made the jobs index and its shard is active (a search while it is
    being made finds no shard: 503)."""
    deadline = time.monotonic() + timeout
    while not index.es.indices.exists(index=index.name):
        assert time.monotonic() < deadline, "the indexer never made the jobs index"
        time.sleep(0.1)
    index.es.cluster.health(index=index.name, wait_for_status="yellow", timeout="30s")


def submit(c: TestClient, token: str, dataset: str, *command: str) -> str:
    job = {"image": BUSYBOX, "command": list(command), "inputs": [{"dataset": dataset, "mount": "/input"}]}
    answer = c.post("/api/v1/jobs", json=job, headers=h(token))
    assert answer.status_code == 202, answer.text
    return str(answer.json()["job_id"])


def listed(c: TestClient, token: str, **params: Any) -> dict[str, dict[str, Any]]:
    answer = c.get("/api/v1/jobs", params={"size": 500, **params}, headers=h(token))
    assert answer.status_code == 200, answer.text
    return {row["job_id"]: row for row in answer.json()["jobs"]}


def wait_listed(c: TestClient, token: str, ready: Callable[[dict[str, dict[str, Any]]], bool],
                timeout: float = 60) -> dict[str, dict[str, Any]]:
    """Poll the list until ``ready`` says yes (the index follows the records within seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = listed(c, token)
        if ready(rows) or time.monotonic() > deadline:
            assert ready(rows), rows
            return rows
        time.sleep(0.2)


def admin_token(api: dict[str, Any]) -> str:
    api["auth"].add_user("root", Role.ADMIN)
    return str(api["auth"].create_token("root")[0])


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_submitted_job_is_listed_and_its_state_follows_the_worker_running_it(
        api: dict[str, Any], busybox_id: str, servers: Start) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    servers("index")
    job_id = submit(c, t["alice"], d["alpha"], "sh", "-c", "sleep 3; ls /input > /output/files.txt")
    row = wait_listed(c, t["alice"], lambda rows: job_id in rows)[job_id]  # before any worker: QUEUED
    assert (row["state"], row["project"], row["requested_by"], row["image"]) == ("QUEUED", "alpha", "alice",
                                                                                 busybox_id)
    assert row["queued_at"] and row["started_at"] is None and row["finished_at"] is None
    assert "ls /input" in row["command"]
    servers("jobs")
    seen = ["QUEUED"]
    deadline = time.monotonic() + 120
    while seen[-1] != "COMPLETE" and time.monotonic() < deadline:
        state = listed(c, t["alice"]).get(job_id, {}).get("state")
        if state and state != seen[-1]:
            seen.append(state)
        time.sleep(0.1)
    order = ["QUEUED", "STAGING", "RUNNING", "UPLOADING", "COMPLETE"]
    assert seen[-1] == "COMPLETE" and seen == sorted(seen, key=order.index), seen
    done = listed(c, t["alice"], state="COMPLETE")[job_id]
    assert done["started_at"] and done["finished_at"] and done["finished_at"] >= done["started_at"]
    assert job_id not in listed(c, t["alice"], state="QUEUED")
    assert listed(c, t["bob"]) == {}


def test_another_projects_jobs_never_appear_in_the_list(api: dict[str, Any], busybox_id: str,
                                                        servers: Start) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    servers("index")
    alices = submit(c, t["alice"], d["alpha"], "true")
    bobs = submit(c, t["bob"], d["beta"], "true")
    root = admin_token(api)
    wait_listed(c, root, lambda rows: {alices, bobs} <= set(rows))  # both indexed
    assert set(listed(c, t["alice"])) == set(listed(c, t["victor"])) == {alices}
    assert set(listed(c, t["bob"])) == {bobs}
    assert set(listed(c, t["bob"], state="QUEUED")) == {bobs}


def test_the_list_pages_in_id_order_with_a_cursor(api: dict[str, Any], busybox_id: str, servers: Start) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    servers("index")
    ids = sorted(submit(c, t["alice"], d["alpha"], "echo", str(n)) for n in range(5))
    wait_listed(c, t["alice"], lambda rows: set(ids) <= set(rows))
    pages, after = [], None
    while True:
        params: dict[str, Any] = {"size": 2, **({"after": after} if after else {})}
        page = c.get("/api/v1/jobs", params=params, headers=h(t["alice"])).json()
        pages.append([j["job_id"] for j in page["jobs"]])
        after = page["next"]
        if after is None:
            break
    assert pages == [ids[0:2], ids[2:4], ids[4:]]


def test_the_job_list_answers_503_naming_the_index_when_elasticsearch_is_down(
        api: dict[str, Any], busybox_id: str) -> None:
    down = api["settings"].model_copy(update={"es_url": f"http://elastic:s3cret@127.0.0.1:{closed_port()}"})
    c, t, d = TestClient(create_app(down)), api["tokens"], api["data"]
    answer = c.get("/api/v1/jobs", headers=h(t["alice"]))
    assert answer.status_code == 503, answer.text
    assert "jobs index" in answer.json()["detail"] and "unavailable" in answer.json()["detail"]
    assert "s3cret" not in answer.text
    job_id = submit(c, t["alice"], d["alpha"], "true")  # submitting and a job's own page need no index
    assert c.get(f"/api/v1/jobs/{job_id}", headers=h(t["alice"])).json()["state"] == "QUEUED"


def test_reindex_rebuilds_the_jobs_index_from_the_job_records(api: dict[str, Any], busybox_id: str,
                                                             tmp_path: Path) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    ids = {submit(c, t["alice"], d["alpha"], "echo", str(n)) for n in range(3)}
    assert listed(c, t["alice"]) == {}  # no indexer has run: nothing in the index yet
    s = api["settings"]
    env = dict(os.environ, NPS_MINIO_BUCKET=s.minio_bucket, NPS_QUEUE_PREFIX=s.queue_prefix,
               NPS_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-m", "nps", "reindex"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 job(s)" in done.stderr
    rows = listed(c, t["alice"])
    assert set(rows) == ids and {r["state"] for r in rows.values()} == {"QUEUED"}


def test_the_api_with_no_container_engine_submits_by_a_tag_a_worker_announced(
        api: dict[str, Any], busybox_id: str, servers: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("NPS_DOCKER_HOST", raising=False)
    catalog = ImageCatalog(MinioBlobs(api["store"]))
    catalog.forget(BUSYBOX)  # only what the worker below announces counts
    engineless = api["settings"].model_copy(update={"docker_host": "unix:///nonexistent/nps-no-engine.sock"})
    c, t, d = TestClient(create_app(engineless)), api["tokens"], api["data"]
    job = {"image": BUSYBOX, "command": ["true"], "inputs": [{"dataset": d["alpha"], "mount": "/input"}]}
    assert c.post("/api/v1/jobs", json=job, headers=h(t["alice"])).status_code == 400  # nobody announced it
    servers("jobs")  # a worker announces what its engine holds when it starts
    deadline = time.monotonic() + 60
    while (record := catalog.find(BUSYBOX)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert record is not None and socket.gethostname() in record.hosts
    accepted = c.post("/api/v1/jobs", json=job, headers=h(t["alice"]))
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert c.get(f"/api/v1/jobs/{job_id}", headers=h(t["alice"])).json()["request"]["spec"]["image"] == busybox_id
    deadline = time.monotonic() + 120
    while (state := c.get(f"/api/v1/jobs/{job_id}", headers=h(t["alice"])).json()["state"]) != "COMPLETE":
        assert state not in ("FAILED", "CANCELLED") and time.monotonic() < deadline, state
        time.sleep(0.2)
    group = c.post("/api/v1/groups", json={"name": "one", "ids": [d["alpha"]]}, headers=h(t["alice"]))
    assert group.status_code == 201, group.text
    analysis = c.post("/api/v1/analyses", json={"kind": "map", "name": "x", "group": group.json()["id"],
                                                "image": BUSYBOX, "command": ["true"]}, headers=h(t["alice"]))
    assert analysis.status_code == 202, analysis.text


def test_an_unknown_tag_is_refused_with_400_naming_the_fix(api: dict[str, Any]) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    job = {"image": "localhost/nps/never-built:1", "command": ["true"],
           "inputs": [{"dataset": d["alpha"], "mount": "/input"}]}
    answer = c.post("/api/v1/jobs", json=job, headers=h(t["alice"]))
    assert answer.status_code == 400
    assert "nps image announce localhost/nps/never-built:1" in answer.json()["detail"]


def test_the_api_loads_no_container_engine_adapter() -> None:
    """The API process holds no engine socket: it does not even load the Docker adapter or SDK."""
    script = ("import sys\nfrom nps.config import load_settings\nfrom nps.api.app import create_app\n"
              "create_app(load_settings())\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'docker' or m == 'nps.engine.docker'))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_metadata_layer_is_not_kept_when_the_index_is_down_so_a_retry_adds_it_once(api: dict[str, Any]) -> None:
    down = api["settings"].model_copy(update={"es_url": f"http://127.0.0.1:{closed_port()}"})
    c, t, d = TestClient(create_app(down)), api["tokens"], api["data"]
    answer = c.post(f"/api/v1/datasets/{d['alpha']}/metadata", json={"fields": {"qc": "pass"}}, headers=h(t["alice"]))
    assert answer.status_code == 503, answer.text
    assert api["client"].get(f"/api/v1/datasets/{d['alpha']}/metadata", headers=h(t["alice"])).json()["layers"] == []
    again = api["client"].post(f"/api/v1/datasets/{d['alpha']}/metadata", json={"fields": {"qc": "pass"}},
                               headers=h(t["alice"]))
    assert again.status_code == 201 and again.json()["seq"] == 1
