"""The REST API in-process (FastAPI's test client) against the real MinIO, Elasticsearch,
RabbitMQ and container engine: auth, project isolation, files, search, jobs, provenance, and
what a careless or hostile client sends."""

from __future__ import annotations

import io
import tarfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nps.index import DatasetIndex
from nps.index.sync import document_from_store
from schemas.dataset import DatasetRecord
from tests.store.helpers import make_tree

BUSYBOX = "localhost/nps/busybox:1"


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_wrong_revoked_or_expired_token_gets_401_and_health_needs_none(api: dict[str, Any]) -> None:
    c, auth = api["client"], api["auth"]
    assert c.get("/api/v1/health").json() == {"status": "ok"}
    assert c.get("/api/v1/me").status_code == 401
    assert c.get("/api/v1/me", headers=h("nps_" + "x" * 43)).status_code == 401
    assert c.get("/api/v1/me", headers={"Authorization": "Basic abc"}).status_code == 401
    secret, record = auth.create_token("alice")
    assert c.get("/api/v1/me", headers=h(secret)).json()["name"] == "alice"
    auth.revoke(record.id)  # by another process (`nps admin token revoke`): refused once the API's
    deadline = time.monotonic() + api["settings"].api_auth_cache_seconds + 5  # few-second trust ends
    while c.get("/api/v1/me", headers=h(secret)).status_code != 401:
        assert time.monotonic() < deadline, "a revoked token is still accepted"
        time.sleep(0.2)
    unused, unused_record = auth.create_token("alice")
    auth.revoke(unused_record.id)
    assert c.get("/api/v1/me", headers=h(unused)).status_code == 401  # never trusted: refused at once
    expired, _ = auth.create_token("alice", timedelta(seconds=-1))
    answer = c.get("/api/v1/me", headers=h(expired))
    assert answer.status_code == 401 and answer.json() == {"detail": "missing or invalid token"}


def test_another_projects_dataset_answers_exactly_like_a_missing_one(api: dict[str, Any]) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    mine = c.get(f"/api/v1/datasets/{d['alpha']}", headers=h(t["alice"]))
    assert mine.status_code == 200 and mine.json()["record"]["project"] == "alpha"
    theirs = c.get(f"/api/v1/datasets/{d['beta']}", headers=h(t["alice"]))
    missing = c.get(f"/api/v1/datasets/{'0' * 40}", headers=h(t["alice"]))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"].replace(d["beta"], "X") == missing.json()["detail"].replace("0" * 40, "X")
    for path in ("files", "files/notes.txt", "archive", "provenance"):
        assert c.get(f"/api/v1/datasets/{d['beta']}/{path}", headers=h(t["alice"])).status_code == 404
    assert "secret" not in str(theirs.json()).lower() and api["settings"].minio_bucket not in theirs.text


def test_files_ranges_and_archives(api: dict[str, Any]) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    base = f"/api/v1/datasets/{d['alpha']}"
    listed = {f["path"]: f for f in c.get(f"{base}/files", headers=h(t["victor"])).json()}
    assert listed["notes.txt"]["size"] == 11000
    whole = c.get(f"{base}/files/notes.txt", headers=h(t["victor"]))
    assert whole.status_code == 200 and whole.content == b"alpha data\n" * 1000
    part = c.get(f"{base}/files/notes.txt", headers=h(t["victor"]) | {"Range": "bytes=11-21"})
    assert part.status_code == 206 and part.content == b"alpha data\n"
    assert part.headers["content-range"] == "bytes 11-21/11000"
    tail = c.get(f"{base}/files/sub/x.bin", headers=h(t["victor"]) | {"Range": "bytes=-4"})
    assert tail.content == bytes([252, 253, 254, 255])
    for bad, status in (("bytes=20000-", 416), ("bytes=5-2", 416), ("lines=1-2", 422), ("bytes=0-1,4-5", 422),
                        ("bytes=a-b", 422)):
        assert c.get(f"{base}/files/notes.txt", headers=h(t["victor"]) | {"Range": bad}).status_code == status, bad
    with tarfile.open(fileobj=io.BytesIO(c.get(f"{base}/archive", headers=h(t["victor"])).content)) as tar:
        names = tar.getnames()
        member = tar.extractfile(f"{d['alpha']}/notes.txt")
        assert member is not None and member.read() == b"alpha data\n" * 1000
    assert f"{d['alpha']}/.nps/manifest.json" not in names and f"{d['alpha']}/.nps/dataset.json" in names


@pytest.mark.parametrize("path", ["../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd",
                                  "notes.txt%00.png", "nope.txt", "%2e%2e/%2e%2e/x", "sub%2F..%2F..%2Fx"])
def test_path_traversal_and_unknown_files_are_refused_never_500(api: dict[str, Any], path: str) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    answer = c.get(f"/api/v1/datasets/{d['alpha']}/files/{path}", headers=h(t["alice"]))
    assert answer.status_code == 404, (path, answer.status_code, answer.text)
    assert "root:" not in answer.text


def test_search_sees_only_the_callers_projects_and_refuses_expensive_queries(api: dict[str, Any]) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    ids = [x["id"] for x in c.get("/api/v1/search", params={"q": "kind:upload"}, headers=h(t["alice"])).json()["hits"]]
    assert ids == [d["alpha"]]
    ids = [x["id"] for x in c.get("/api/v1/search", params={"q": "*"}, headers=h(t["bob"])).json()["hits"]]
    assert ids == [d["beta"]]
    assert c.get("/api/v1/search", params={"q": "files:*"}, headers=h(t["alice"])).status_code == 200
    assert c.get("/api/v1/search", params={"q": "id:*abc"}, headers=h(t["alice"])).status_code == 400
    assert c.get("/api/v1/search", params={"q": "x" * 3000}, headers=h(t["alice"])).status_code == 422
    assert c.get("/api/v1/search", params={"size": 100000}, headers=h(t["alice"])).status_code == 422
    assert c.get("/api/v1/search", params={"after": "[oops"}, headers=h(t["alice"])).status_code == 400


def test_jobs_submit_get_and_the_rules_of_who_may(api: dict[str, Any], busybox_id: str) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    job = {"image": BUSYBOX, "command": ["true"], "inputs": [{"dataset": d["alpha"], "mount": "/input"}]}
    accepted = c.post("/api/v1/jobs", json=job, headers=h(t["alice"]))
    assert accepted.status_code == 202 and accepted.json()["queued"] is True
    job_id = accepted.json()["job_id"]
    again = c.post("/api/v1/jobs", json=job, headers=h(t["alice"]))
    assert again.json()["job_id"] == job_id  # the same spec is the same job
    got = c.get(f"/api/v1/jobs/{job_id}", headers=h(t["alice"])).json()
    assert got["state"] == "QUEUED" and got["request"]["project"] == "alpha"
    assert got["request"]["requested_by"] == "alice"
    assert c.get(f"/api/v1/jobs/{job_id}", headers=h(t["bob"])).status_code == 404
    # The job list (read from the jobs index, which an indexer keeps): tests/api/test_jobs_list.py
    assert c.get("/api/v1/jobs", params={"state": "DONE"}, headers=h(t["alice"])).status_code == 422
    assert c.post("/api/v1/jobs", json=job, headers=h(t["victor"])).status_code == 403  # a viewer
    other = {**job, "inputs": [{"dataset": d["beta"], "mount": "/input"}]}
    assert c.post("/api/v1/jobs", json=other, headers=h(t["alice"])).status_code == 404
    for bad in ({**job, "inputs": [{"dataset": d["alpha"], "mount": "../x"}]}, {**job, "command": []},
                {**job, "surprise": 1}, {**job, "image": "no/such:image"}):
        answer = c.post("/api/v1/jobs", json=bad, headers=h(t["alice"]))
        assert 400 <= answer.status_code < 500, (bad, answer.status_code, answer.text)
    raw = c.post("/api/v1/jobs", content=b"{not json", headers=h(t["alice"]) | {"Content-Type": "application/json"})
    assert raw.status_code == 422
    huge = c.post("/api/v1/jobs", content=b"x" * (2 * 1024 * 1024),
                  headers=h(t["alice"]) | {"Content-Type": "application/json"})
    assert huge.status_code == 413
    assert c.post(f"/api/v1/jobs/{job_id}/cancel", headers=h(t["alice"])).status_code == 202


def test_provenance_walks_ancestors_and_descendants(api: dict[str, Any], tmp_path: Path) -> None:
    c, t, d, store = api["client"], api["tokens"], api["data"], api["store"]
    from schemas.dataset import ResultOrigin
    from schemas.job import JobInput, JobSpec

    spec = JobSpec(image="sha256:" + "2" * 64, command=("true",),
                   inputs=(JobInput(dataset=d["alpha"], revision=1, mount="/input"),))
    out = make_tree(tmp_path / "out", {"r.txt": b"result"})
    store.put(spec.job_id, out, DatasetRecord(id=spec.job_id, project="alpha", origin=ResultOrigin(job=spec),
                                              inputs=spec.inputs))
    DatasetIndex(api["settings"].es_url, api["settings"].queue_prefix).put(document_from_store(store, spec.job_id))
    up = c.get(f"/api/v1/datasets/{spec.job_id}/provenance", headers=h(t["alice"])).json()
    assert up["datasets"] == [{"id": d["alpha"], "depth": 1}]
    down = c.get(f"/api/v1/datasets/{d['alpha']}/provenance", params={"direction": "descendants", "depth": 3},
                 headers=h(t["alice"])).json()
    assert down["datasets"] == [{"id": spec.job_id, "depth": 1}]
    assert c.get(f"/api/v1/datasets/{d['alpha']}/provenance", params={"depth": 99},
                 headers=h(t["alice"])).status_code == 422


def test_the_openapi_description_lists_every_route(api: dict[str, Any]) -> None:
    spec = api["client"].get("/api/v1/openapi.json").json()
    assert {"/api/v1/datasets/{dataset_id}/files/{path}", "/api/v1/search", "/api/v1/jobs",
            "/api/v1/datasets/{dataset_id}/provenance", "/api/v1/jobs/{job_id}/logs"} <= set(spec["paths"])


def test_the_api_trusts_a_checked_token_briefly_and_never_a_refused_one(api: dict[str, Any]) -> None:
    from nps.api.auth import Auth
    from nps.blobs import MinioBlobs

    auth = Auth(MinioBlobs(api["store"]), cache_seconds=60)
    secret, record = auth.create_token("alice")
    assert auth.authenticate(secret).name == "alice"
    api["auth"].revoke(record.id)  # elsewhere: this instance still trusts it for its cache time
    assert auth.authenticate(secret).name == "alice"
    auth.revoke(record.id)  # here: forgotten at once
    with pytest.raises(Exception, match="missing or invalid token"):
        auth.authenticate(secret)
    expiring, record = auth.create_token("alice", timedelta(seconds=1))
    assert auth.authenticate(expiring).name == "alice"  # checked, so trusted for 60 s... or until it expires
    assert record.expires_at is not None
    refused_at = _first_refusal(auth, expiring, record.expires_at + timedelta(seconds=5))
    assert refused_at >= record.expires_at  # a cached token still expires on time: not earlier,
    assert refused_at < record.expires_at + timedelta(seconds=5)  # nor when its 60 s of trust end


def _first_refusal(auth: Any, secret: str, give_up: datetime) -> datetime:
    """Poll ``authenticate`` until it refuses ``secret``; when it did (UTC). The wait is the
    token's own 1 s lifetime, which a test cannot shorten: a token with less could expire before
    it is first checked."""
    while datetime.now(UTC) < give_up:
        try:
            auth.authenticate(secret)
        except Exception as exc:
            assert "missing or invalid token" in str(exc)
            return datetime.now(UTC)
        time.sleep(0.05)
    pytest.fail("the token was still accepted long after it expired")
