"""Small reads through LeanGet against the real MinIO: ranges, missing objects, and a kept-alive
connection that the server closed in the meantime (what MinIO's idle timeout does)."""

from __future__ import annotations

import io
import os
import socket

import pytest

from nps.config import Settings
from nps.store.lean import LeanError, LeanGet
from nps.store.minio import MinioStore


@pytest.fixture
def lean(minio_settings: Settings) -> tuple[LeanGet, MinioStore, bytes]:
    store = MinioStore(minio_settings)
    store.ensure_bucket()
    data = os.urandom(10_000)
    store.client.put_object(store.bucket, "obj", io.BytesIO(data), len(data))
    return LeanGet(store.client, store.bucket), store, data


def test_ranges_and_a_missing_object(lean: tuple[LeanGet, MinioStore, bytes]) -> None:
    client, _, data = lean
    assert client.get("obj", 0, len(data)) == data
    assert client.get("obj", 100, 50) == data[100:150]
    assert client.get("obj", 9_990, 100) == data[9_990:]  # past the end: what there is
    assert client.get("nothing-here", 0, 10) is None
    with pytest.raises(LeanError) as refused:
        client.get("obj", 20_000, 10)  # starts past the end
    assert refused.value.status == 416


def test_a_connection_closed_by_the_server_is_replaced(lean: tuple[LeanGet, MinioStore, bytes]) -> None:
    client, _, data = lean
    assert client.get("obj", 0, 10) == data[:10]
    pooled = client._idle.get_nowait()  # the kept-alive connection the next request would reuse
    assert pooled.sock is not None
    pooled.sock.shutdown(socket.SHUT_RDWR)  # as if the server had closed it while idle
    client._idle.put(pooled)
    assert client.get("obj", 0, len(data)) == data


def test_minio_unreachable_is_an_error_not_a_hang(minio_settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    store = MinioStore(minio_settings.model_copy(update={"minio_endpoint": f"127.0.0.1:{port}"}))
    client = LeanGet(store.client, "bucket")
    client._region = "us-east-1"  # asking the (absent) server for its region would fail first
    with pytest.raises(LeanError) as failed:
        client.get("obj", 0, 10)
    assert failed.value.status == 0 and "not reachable" in str(failed.value)
