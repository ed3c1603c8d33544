"""Map and reduce analyses through the API, run by real job and index workers on the real
stack: every job id at once, results indexed, progress, export of an analysis's results,
members with results skipped, and submission carried on after the API lost the broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from nps.api.app import create_app
from nps.index import DatasetIndex
from nps.index.sync import document_from_store
from nps.store import upload_dataset_id
from nps.store.source import hash_sources, scan_source
from schemas.dataset import DatasetRecord, UploadOrigin
from tests.api.test_groups import h
from tests.conftest import REPO
from tests.faults import Proxy
from tests.store.helpers import make_tree

BUSYBOX = "localhost/nps/busybox:1"
COUNT_FILES = ["sh", "-c", 'mkdir -p /output/.nps && n=$(find /input -type f ! -path \"*/.nps/*\" | wc -l) && '
               'echo "{\\"files\\": $n}" > /output/.nps/metadata.json']
COUNT_MEMBERS = ["sh", "-c", 'mkdir -p /output/.nps && n=$(ls /inputs | wc -l) && '
                 'echo "{\\"members\\": $n}" > /output/.nps/metadata.json']


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
def workers(api: dict[str, Any], busybox_id: str, tmp_path: Path) -> Iterator[None]:
    """A job worker and an indexer on the API's bucket and queues; stopped by pid."""
    s = api["settings"]
    env = dict(os.environ, NPS_MINIO_BUCKET=s.minio_bucket, NPS_QUEUE_PREFIX=s.queue_prefix,
               NPS_HOME=str(tmp_path / "home"))
    procs = [subprocess.Popen([sys.executable, "-m", "nps", "worker", *args], env=env, cwd=REPO,
                              stdout=(tmp_path / f"{args[0]}.log").open("w"), stderr=subprocess.STDOUT)
             for args in (["jobs", "-c", "2"], ["index"])]
    yield
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def wait_done(c: TestClient, token: str, analysis_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = c.get(f"/api/v1/analyses/{analysis_id}", headers=h(token)).json()
        if status.get("done"):
            return status
        time.sleep(1)
    pytest.fail(f"analysis {analysis_id} not done: {status}")


def test_map_and_reduce_over_a_group_then_export_and_skip_what_exists(
        api: dict[str, Any], members: list[str], workers: None) -> None:
    c, t = api["client"], api["tokens"]
    group = c.post("/api/v1/groups", json={"name": "five", "project": "alpha", "ids": members},
                   headers=h(t["alice"])).json()
    body = {"kind": "map", "name": "count files", "group": group["id"], "image": BUSYBOX, "command": COUNT_FILES}
    started = c.post("/api/v1/analyses", json=body, headers=h(t["alice"]))
    assert started.status_code == 202, started.text
    made = started.json()
    assert len(made["job_ids"]) == 5 and made["analysis"]["skipped"] == 0
    assert len(set(made["job_ids"])) == 5 and sorted(made["members"]) == sorted(members)
    job_of = dict(zip(made["members"], made["job_ids"], strict=True))
    status = wait_done(c, t["alice"], made["analysis"]["id"])
    assert status["complete"] == 5 and status["states"] == {"COMPLETE": 5}

    table = c.get("/api/v1/export", params={"analysis": made["analysis"]["id"], "fields": "metadata.files",
                                            "input_fields": "id,files", "format": "jsonl"}, headers=h(t["alice"]))
    rows = [__import__("json").loads(line) for line in table.text.splitlines()]
    assert len(rows) == 5
    assert all(r["metadata.files"] == r["input.files"] for r in rows), rows  # each job saw exactly its member
    assert {(r["input"], r["result"]) for r in rows} == set(job_of.items())

    again = c.post("/api/v1/analyses", json=body | {"name": "again"}, headers=h(t["alice"])).json()
    assert again["job_ids"] == made["job_ids"] and again["analysis"]["skipped"] == 5

    narrowed = c.post("/api/v1/analyses", json={**body, "query": "files:>=3"}, headers=h(t["alice"])).json()
    assert narrowed["analysis"]["members"] == 2  # the group narrowed by a query

    reduce = c.post("/api/v1/analyses", json={"kind": "reduce", "name": "all", "group": group["id"],
                                              "image": BUSYBOX, "command": COUNT_MEMBERS},
                    headers=h(t["alice"])).json()
    assert len(reduce["job_ids"]) == 1
    wait_done(c, t["alice"], reduce["analysis"]["id"])
    result = c.get("/api/v1/search", params={"q": f"id:{reduce['job_ids'][0]}"}, headers=h(t["alice"])).json()
    assert result["hits"][0]["metadata"]["members"] == 5
    assert sorted(result["hits"][0]["inputs"]) == sorted(members)
    down = c.get(f"/api/v1/datasets/{members[1]}/provenance", params={"direction": "descendants"},
                 headers=h(t["alice"])).json()
    assert {n["id"] for n in down["datasets"]} == {job_of[members[1]], reduce["job_ids"][0]}


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


def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 30) -> None:
    """Poll the captured log records (of every thread) until one contains ``text``."""
    deadline = time.monotonic() + timeout
    while not any(text in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, f"never logged: {text!r}"
        time.sleep(0.05)


def test_an_api_that_lost_the_broker_carries_on_submitting_when_restarted(
        api: dict[str, Any], members: list[str], busybox_id: str, caplog: pytest.LogCaptureFixture) -> None:
    s, c, t = api["settings"], api["client"], api["tokens"]
    url = urlsplit(s.amqp_url.get_secret_value())
    proxy = Proxy(url.hostname or "127.0.0.1", url.port or 5672)
    through = s.model_copy(update={"amqp_url": SecretStr(urlunsplit(url._replace(netloc=url.netloc.replace(
        f"{url.hostname}:{url.port}", f"127.0.0.1:{proxy.port}"))))})
    try:
        proxy.cut()  # the broker is unreachable from this API process
        cut_off = TestClient(create_app(through, resume=False))
        made = cut_off.post("/api/v1/analyses", json={"kind": "map", "name": "later", "query": "kind:*",
                                                      "image": BUSYBOX, "command": ["true"]},
                            headers=h(t["alice"])).json()
        analysis_id = made["analysis"]["id"]
        _wait_for_log(caplog, f"submitting analysis {analysis_id} stopped")  # its background submission failed
        first = c.get(f"/api/v1/analyses/{analysis_id}", headers=h(t["alice"])).json()
        assert first["submitted"] == 0 and first["done"] is False, first
        proxy.restore()
        with TestClient(create_app(through)) as restarted:  # its start resumes unfinished analyses
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status = restarted.get(f"/api/v1/analyses/{analysis_id}", headers=h(t["alice"])).json()
                if status["submitted"] == len(made["job_ids"]):
                    break
                time.sleep(0.5)
            assert status["submitted"] == 5 and status["states"] == {"COMPLETE": 0, "QUEUED": 5}, status
    finally:
        proxy.close()
