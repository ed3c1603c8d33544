"""The stack's nginx in front of the API: file downloads authorized by the API and streamed by
nginx straight from MinIO (X-Accel-Redirect with a signed URL that never leaves nginx). Real
nginx, real API server (on the port nginx forwards to), real MinIO."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import blake3
import httpx
import pytest
import uvicorn

from tests.conftest import service_missing


@pytest.fixture
def web(api: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``api`` served on NPS_API_PORT, reached through nginx at NPS_WEB_URL."""
    s = api["settings"]
    if not s.web_url or s.api_accel_secret is None:
        service_missing("the stack's nginx is not configured: run `make up`")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", s.api_port))
    except OSError as exc:
        pytest.fail(f"port {s.api_port} (NPS_API_PORT, nginx's upstream) is busy: {exc}")
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(api["app"], log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.05)
    try:
        with httpx.Client(base_url=s.web_url, timeout=30) as client:
            if client.get("/nginx-health").status_code != 200:
                service_missing(f"nginx at {s.web_url} is not answering: run `make up`")
            yield api | {"web": client, "direct": f"http://127.0.0.1:{s.api_port}"}
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_downloads_through_nginx_are_authorized_by_the_api_and_leak_nothing(web: dict[str, Any]) -> None:
    c, t, d, store, s = web["web"], web["tokens"], web["data"], web["store"], web["settings"]
    content = b"alpha data\n" * 1000
    url = f"/api/v1/datasets/{d['alpha']}/files/notes.txt"
    whole = c.get(url, headers=h(t["alice"]))
    assert whole.status_code == 200 and whole.content == content
    assert whole.headers["x-nps-checksum"] == f"blake3-{blake3.blake3(content).hexdigest()}"
    assert whole.headers["content-type"] == "application/octet-stream"
    leaked = " ".join(f"{k}: {v}" for k, v in whole.headers.items()).lower()
    for secret in (s.minio_bucket, "amz", "minio", "x-accel", "signature", s.api_accel_secret.get_secret_value()):
        assert secret.lower() not in leaked, secret

    part = c.get(url, headers=h(t["alice"]) | {"Range": "bytes=11-21"})
    assert part.status_code == 206 and part.content == content[11:22]
    assert part.headers["content-range"] == f"bytes 11-21/{len(content)}"
    assert c.get(url, headers=h(t["alice"]) | {"Range": "bytes=999999-"}).status_code == 416

    # The API decides: another project's file, no token, a bad path: its own answers.
    assert c.get(f"/api/v1/datasets/{d['beta']}/files/notes.txt", headers=h(t["alice"])).status_code == 404
    assert c.get(url).status_code == 401
    assert c.get(f"/api/v1/datasets/{d['alpha']}/files/nope.txt", headers=h(t["alice"])).status_code == 404
    # The internal location cannot be asked for from outside.
    assert c.get(f"/_nps_object/blake3-00/{s.minio_bucket}/x").status_code == 404
    # A client that talks to the API directly, even claiming to be nginx, gets the bytes from
    # the API itself, never a redirect with a signed URL.
    direct = httpx.get(web["direct"] + url, headers=h(t["alice"]) | {"X-NPS-Accel": "guess"})
    assert direct.status_code == 200 and direct.content == content and "x-accel-redirect" not in direct.headers

    # A file the manifest lists but the store lost: a clear 409, not MinIO's error document.
    store.delete_object(store.key(d["alpha"], "notes.txt"))
    lost = c.get(url, headers=h(t["alice"]))
    assert lost.status_code == 409 and "missing" in lost.json()["detail"]


def test_the_client_verifies_what_nginx_streams_and_keeps_nothing_corrupt(web: dict[str, Any], tmp_path: Any) -> None:

    from nps.client import Client
    from nps.errors import CorruptDataset

    t, d, store, s = web["tokens"], web["data"], web["store"], web["settings"]
    with Client(s.web_url, t["alice"]) as client:
        good = client.download(d["alpha"], "notes.txt", tmp_path / "good.txt")
        assert good.read_bytes() == b"alpha data\n" * 1000
        tampered = b"ALPHA DATA\n" * 1000  # same size, other bytes: only a checksum tells
        store.put_object(store.key(d["alpha"], "notes.txt"), tampered)
        with pytest.raises(CorruptDataset, match="do not match"):
            client.download(d["alpha"], "notes.txt", tmp_path / "bad.txt")
    assert not (tmp_path / "bad.txt").exists() and list(tmp_path.glob(".bad.txt*")) == []
