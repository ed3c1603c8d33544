"""Frozen groups and export through the API, on documents in the real Elasticsearch index
(as the indexer writes them) and groups kept in the real MinIO."""

from __future__ import annotations

import csv
import io
import json
import socket
from typing import Any

from fastapi.testclient import TestClient

from nps.api.app import create_app
from nps.index import DatasetIndex


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def closed_port() -> int:
    """A loopback port nothing listens on (an Elasticsearch that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def index(api: dict[str, Any]) -> DatasetIndex:
    return DatasetIndex(api["settings"].es_url, api["settings"].queue_prefix)


def series(n: int, project: str, dwi: bool = False) -> dict[str, Any]:
    return {"id": f"{n:040x}", "kind": "series", "project": project, "revision": 1, "files": 1, "bytes": 1,
            "inputs": [], "created_at": "2026-01-01T00:00:00", "patient_id": f"P{n:03d}", "modality": "MR",
            "series_description": "ep2d_diff" if dwi else "t1_mprage", "is_diffusion": dwi,
            "study_datetime": "2025-01-02T10:00:00"}


def result(n: int, project: str, of: str, brain_mean: float) -> dict[str, Any]:
    return {"id": f"{n:040x}", "kind": "result", "project": project, "revision": 1, "files": 1, "bytes": 1,
            "inputs": [of], "created_at": "2026-01-01T00:00:00", "processor": "stats",
            "metadata": {"brain_mean": brain_mean}}


def test_a_group_is_frozen_filtered_paged_and_private(api: dict[str, Any]) -> None:
    c, t = api["client"], api["tokens"]
    docs = [series(n, "alpha", dwi=n % 3 == 0) for n in range(1, 31)] + [series(n, "beta") for n in range(31, 41)]
    index(api).bulk(docs)
    made = c.post("/api/v1/groups", json={"name": "mr", "project": "alpha", "query": "kind:series"},
                  headers=h(t["alice"]))
    assert made.status_code == 201, made.text
    group = made.json()
    assert group["size"] == 30  # beta's series are not alice's to group
    index(api).bulk([series(99, "alpha")])  # new data never changes a group
    shown = c.get(f"/api/v1/groups/{group['id']}", params={"size": 20}, headers=h(t["alice"])).json()
    assert shown["total"] == 30 and len(shown["members"]) == 20 and shown["next"] == "20"
    rest = c.get(f"/api/v1/groups/{group['id']}", params={"size": 20, "after": "20"}, headers=h(t["alice"])).json()
    assert len(rest["members"]) == 10 and rest["next"] is None
    dwi = c.get(f"/api/v1/groups/{group['id']}", params={"q": "is_diffusion:true"}, headers=h(t["alice"])).json()
    assert sorted(m["id"] for m in dwi["members"]) == sorted(f"{n:040x}" for n in range(1, 31) if n % 3 == 0)
    assert c.get(f"/api/v1/groups/{group['id']}", headers=h(t["bob"])).status_code == 404
    assert [g["id"] for g in c.get("/api/v1/groups", headers=h(t["alice"])).json()] == [group["id"]]
    assert c.get("/api/v1/groups", headers=h(t["bob"])).json() == []
    assert c.get("/api/v1/groups/g-000000000000", headers=h(t["alice"])).status_code == 404
    assert c.get("/api/v1/groups/..%2Fetc", headers=h(t["alice"])).status_code in (404, 422)


def test_a_group_from_ids_accepts_only_visible_datasets(api: dict[str, Any]) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    ok = c.post("/api/v1/groups", json={"name": "two", "project": "alpha", "ids": [d["alpha"]]},
                headers=h(t["alice"]))
    assert ok.status_code == 201 and ok.json()["size"] == 1
    theirs = c.post("/api/v1/groups", json={"name": "x", "project": "alpha", "ids": [d["alpha"], d["beta"]]},
                    headers=h(t["alice"]))
    assert theirs.status_code == 400 and "not datasets you can see" in theirs.json()["detail"]
    assert c.post("/api/v1/groups", json={"name": "v", "project": "alpha", "query": "*"},
                  headers=h(t["victor"])).status_code == 403  # viewers read, they do not create
    both = c.post("/api/v1/groups", json={"name": "b", "query": "*", "ids": [d["alpha"]]}, headers=h(t["alice"]))
    assert both.status_code == 400
    # Without a project, a group belongs to its members' project; mixed members need one named.
    implied = c.post("/api/v1/groups", json={"name": "mine", "ids": [d["alpha"]]}, headers=h(t["alice"]))
    assert implied.status_code == 201 and implied.json()["project"] == "alpha"
    from nps.api.auth import Role

    api["auth"].add_user("root", Role.ADMIN)
    root = h(api["auth"].create_token("root")[0])
    mixed = c.post("/api/v1/groups", json={"name": "m", "ids": [d["alpha"], d["beta"]]}, headers=root)
    assert mixed.status_code == 400 and "several projects" in mixed.json()["detail"]
    named = c.post("/api/v1/groups", json={"name": "m", "project": "beta", "ids": [d["alpha"], d["beta"]]},
                   headers=root)
    assert named.status_code == 201 and named.json()["size"] == 2


def test_groups_beyond_the_default_terms_limit_still_filter(api: dict[str, Any]) -> None:
    c, t = api["client"], api["tokens"]
    index(api).bulk(series(n, "alpha", dwi=n % 1000 == 0) for n in range(1, 70_001))
    group = c.post("/api/v1/groups", json={"name": "big", "project": "alpha", "query": "kind:series"},
                   headers=h(t["alice"])).json()
    assert group["size"] == 70_000  # over Elasticsearch's default 65,536 terms
    dwi = c.get(f"/api/v1/groups/{group['id']}", params={"q": "is_diffusion:true", "size": 1000},
                headers=h(t["alice"])).json()
    assert dwi["total"] == 70


def test_export_gives_one_row_per_result_and_input_with_the_inputs_fields(api: dict[str, Any]) -> None:
    c, t = api["client"], api["tokens"]
    index(api).bulk([series(1, "alpha"), series(2, "alpha"), series(3, "beta"),
                     result(101, "alpha", f"{1:040x}", 500.5), result(102, "alpha", f"{2:040x}", 612.0),
                     result(103, "beta", f"{3:040x}", 1.0)])
    answer = c.get("/api/v1/export", params={"q": "processor:stats", "fields": "metadata.brain_mean"},
                   headers=h(t["alice"]))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [(r["input.patient_id"], r["metadata.brain_mean"]) for r in rows] == [("P001", "500.5"), ("P002", "612.0")]
    lines = c.get("/api/v1/export", params={"q": "processor:stats", "fields": "metadata.brain_mean",
                                             "format": "jsonl"}, headers=h(t["bob"])).text.splitlines()
    assert [json.loads(line)["input.patient_id"] for line in lines] == ["P003"]
    assert c.get("/api/v1/export", params={"q": "*", "fields": "a b"}, headers=h(t["alice"])).status_code == 422


def test_an_elasticsearch_outage_is_a_503_when_making_or_filtering_a_group(api: dict[str, Any]) -> None:
    c, t = api["client"], h(api["tokens"]["alice"])
    index(api).bulk([series(n, "alpha", dwi=n == 2) for n in (1, 2)])
    group = c.post("/api/v1/groups", json={"name": "mr", "project": "alpha", "query": "kind:series"},
                   headers=t).json()
    down = TestClient(create_app(api["settings"].model_copy(update={"es_url": f"http://127.0.0.1:{closed_port()}"})),
                      raise_server_exceptions=False)  # an unexpected error answers 500, as in production
    for method, path, kwargs in (
            ("POST", "/api/v1/groups", {"json": {"name": "q", "project": "alpha", "query": "kind:series"}}),
            ("POST", "/api/v1/groups", {"json": {"name": "i", "project": "alpha", "ids": [f"{1:040x}"]}}),
            ("GET", f"/api/v1/groups/{group['id']}", {"params": {"q": "is_diffusion:true"}})):
        answer = down.request(method, path, headers=t, **kwargs)
        assert answer.status_code == 503, (path, answer.status_code, answer.text)
        assert "Elasticsearch" in answer.json()["detail"], answer.text
    assert down.get(f"/api/v1/groups/{group['id']}", headers=t).json()["total"] == 2  # no search needed
    assert [g["id"] for g in down.get("/api/v1/groups", headers=t).json()] == [group["id"]]
