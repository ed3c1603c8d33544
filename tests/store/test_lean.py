"""Small reads and writes through LeanS3 against the real MinIO: ranges, missing objects, and a kept-alive
connection that the server closed in the meantime (what MinIO's idle timeout does)."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable

import pytest

from nps.config import Settings
from nps.store.lean import CRC32, MAX_IDLE, LeanError, LeanS3, checksum_refused, crc32_header
from nps.store.minio import MinioStore


@pytest.fixture
def lean(minio_settings: Settings) -> tuple[LeanS3, MinioStore, bytes]:
    store = MinioStore(minio_settings)
    store.ensure_bucket()
    data = os.urandom(10_000)
    store._client.put_object(store.bucket, "obj", io.BytesIO(data), len(data))
    return LeanS3(store._client, store.bucket), store, data


def test_ranges_and_a_missing_object(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    client, _, data = lean
    assert client.get("obj", 0, len(data)) == data
    assert client.get("obj", 100, 50) == data[100:150]
    assert client.get("obj", 9_990, 100) == data[9_990:]  # past the end: what there is
    assert client.get("nothing-here", 0, 10) is None
    with pytest.raises(LeanError) as refused:
        client.get("obj", 20_000, 10)  # starts past the end
    assert refused.value.status == 416


def test_streamed_reads(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    client, _, data = lean
    chunks = list(client.stream("obj", 0, None, 4096))
    assert [len(c) for c in chunks] == [4096, 4096, len(data) - 8192] and b"".join(chunks) == data
    assert b"".join(client.stream("obj", 10, 5000, 1024)) == data[10:5010]
    with pytest.raises(LeanError) as missing:
        list(client.stream("nothing-here", 0, None, 4096))
    assert missing.value.status == 404
    abandoned = client.stream("obj", 0, None, 1024)
    next(abandoned)
    abandoned.close()  # a reader that stops early: its half-read connection is not pooled
    assert client.get("obj") == data


def test_a_connection_closed_by_the_server_is_replaced(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    client, _, data = lean
    assert client.get("obj", 0, 10) == data[:10]
    pooled, since = client._idle.get_nowait()  # the kept-alive connection the next request would reuse
    assert pooled.sock is not None
    pooled.sock.shutdown(socket.SHUT_RDWR)  # as if the server had closed it while idle
    client._idle.put((pooled, since))
    assert client.get("obj", 0, len(data)) == data


def test_many_pooled_connections_dropped_by_the_server_cost_one_retry(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    """After a pause MinIO has closed every idle connection; a request must not fail by
    drawing dead ones from the pool on each of its attempts."""
    client, _, data = lean
    conns = [client._wire() for _ in range(5)]
    for conn in conns:
        conn.connect()
        assert conn.sock is not None
        conn.sock.shutdown(socket.SHUT_RDWR)
        client._idle.put((conn, time.monotonic()))
    assert client.get("obj") == data
    assert client.put("obj", data, len(data), {}).status == 200


def test_connections_idle_too_long_are_not_reused(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    client, _, data = lean
    assert client.get("obj") == data
    stale, _ = client._idle.get_nowait()
    client._idle.put((stale, time.monotonic() - MAX_IDLE - 1))
    assert client.get("obj") == data
    fresh, _ = client._idle.get_nowait()
    assert fresh is not stale and stale.sock is None  # closed, not reused


def test_minio_unreachable_is_an_error_not_a_hang(minio_settings: Settings) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    store = MinioStore(minio_settings.model_copy(update={"minio_endpoint": f"127.0.0.1:{port}"}))
    client = LeanS3(store._client, "bucket")
    client._region = "us-east-1"  # asking the (absent) server for its region would fail first
    with pytest.raises(LeanError) as failed:
        client.get("obj", 0, 10)
    assert failed.value.status == 0 and "not reachable" in str(failed.value)


def test_put_conditions_and_a_streamed_body(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    client, store, data = lean
    created = client.put("new", data, len(data), {"If-None-Match": "*"})
    assert created.status == 200 and created.etag
    again = client.put("new", b"other bytes", 11, {"If-None-Match": "*"})
    assert again.status == 412  # never replaced
    assert client.get("new") == data
    # A file body is streamed, and rewound when a retry has to send it again.
    body = io.BytesIO(b"x" * 100 + data)
    body.seek(100)
    pooled, since = client._idle.get_nowait()
    assert pooled.sock is not None
    pooled.sock.shutdown(socket.SHUT_RDWR)  # the first attempt fails on a dead connection
    client._idle.put((pooled, since))
    replaced = client.put("new", body, len(data), {"If-Match": f'"{created.etag}"', "X-Amz-Meta-Nps-Test": "1"})
    assert replaced.status == 200
    assert store._client.get_object(store.bucket, "new").read() == data
    assert store._client.stat_object(store.bucket, "new").metadata["X-Amz-Meta-Nps-Test"] == "1"


def test_a_large_body_refused_early_still_gets_its_answer(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    """A failed condition on a big body: MinIO answers 412 without reading it all."""
    client, _, data = lean
    big = os.urandom(64 * 1024 * 1024)
    assert client.put("obj", big, len(big), {"If-None-Match": "*"}).status == 412
    assert client.get("obj") == data


# ---- faults MinIO cannot be made to produce on demand: a loopback stand-in or a proxy --------

def _serve_once(handler: Callable[[socket.socket], None]) -> int:
    """A loopback listener that hands each accepted connection to ``handler``; returns its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def loop() -> None:
        with listener:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                with conn:
                    handler(conn)

    threading.Thread(target=loop, daemon=True).start()
    return int(listener.getsockname()[1])


def _client_at(minio_settings: Settings, port: int) -> LeanS3:
    store = MinioStore(minio_settings.model_copy(update={"minio_endpoint": f"127.0.0.1:{port}"}))
    client = LeanS3(store._client, "bucket")
    client._region = "us-east-1"
    return client


def test_a_body_cut_short_by_a_clean_close_is_an_error_not_a_short_file(minio_settings: Settings) -> None:
    """A server that stops (restart, crash) after part of a large body: http.client reports a
    clean close as the end; the stream must say the bytes are missing (a retryable failure),
    not end quietly (which the store would report as a corrupt object)."""
    def half(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n" + b"x" * 1000)

    client = _client_at(minio_settings, _serve_once(half))
    with pytest.raises(LeanError) as cut:
        b"".join(client.stream("obj", 0, None, 512))
    assert cut.value.status == 0 and "2000 bytes before the end" in str(cut.value)
    assert client._idle.qsize() == 0  # the dead connection was not pooled


def test_a_conditional_write_whose_answer_was_lost_still_counts_as_ours(minio_settings: Settings) -> None:
    """The first attempt reaches MinIO and is stored, but the connection drops before the
    answer; the retry then fails its condition. ``_put_bytes`` must recognise its own bytes."""
    store = MinioStore(minio_settings)
    store.ensure_bucket()
    upstream = ("127.0.0.1", int(minio_settings.minio_endpoint.rsplit(":", 1)[1]))
    seen = {"connections": 0}

    def proxy(conn: socket.socket) -> None:
        seen["connections"] += 1
        with socket.create_connection(upstream) as up:
            def pump() -> None:
                with contextlib.suppress(OSError):
                    while data := conn.recv(65536):
                        up.sendall(data)
            threading.Thread(target=pump, daemon=True).start()
            answer = up.recv(65536)  # MinIO's answer to the first request...
            if seen["connections"] == 1:
                conn.shutdown(socket.SHUT_RDWR)  # ...never reaches the client: the connection drops
                return
            while answer:
                conn.sendall(answer)
                answer = up.recv(65536)

    port = _serve_once(proxy)
    proxied = MinioStore(minio_settings.model_copy(update={"minio_endpoint": f"127.0.0.1:{port}"}))
    proxied._lean._region = "us-east-1"
    key = f"lost-answer/{os.urandom(4).hex()}"
    etag = proxied._put_bytes(key, b"mine", if_none_match=True)
    assert seen["connections"] >= 2 and etag  # retried, and recognised as its own write
    assert store._get_bytes(key) == b"mine"
    assert proxied._put_bytes(key, b"someone else's", if_none_match=True) is None  # a real conflict


def test_answers_framed_by_chunks_or_by_the_close_are_read_whole(minio_settings: Settings) -> None:
    """MinIO frames its answers by length; a proxy in front of it may use chunks, or no framing
    at all (the body ends where the connection does), and neither may lose a byte."""
    answers = [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
               b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end"]

    def reply(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(answers.pop(0))

    client = _client_at(minio_settings, _serve_once(reply))
    assert client.get("obj") == b"hello world"
    assert client.get("obj") == b"until the end"
    assert client._idle.qsize() == 0  # a connection the server closes is not pooled


def test_an_answer_that_is_not_http_or_is_cut_short_is_an_error_after_retries(minio_settings: Settings) -> None:
    attempts: list[bytes] = []

    def garbage(conn: socket.socket) -> None:
        attempts.append(conn.recv(65536))
        conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n" if len(attempts) % 2 else
                     b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")

    client = _client_at(minio_settings, _serve_once(garbage))
    with pytest.raises(LeanError) as failed:
        client.put("obj", b"data", 4, {})
    assert failed.value.status == 0 and len(attempts) == 3  # every attempt on a fresh connection
    assert "not valid HTTP" in str(failed.value)
    with pytest.raises(LeanError) as cut:
        client.get("obj")  # attempts 4-6: the last one is cut short
    assert len(attempts) == 6 and "closed the connection before the end of its answer" in str(cut.value)


def test_header_values_that_would_split_the_request_are_refused(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    client, _, _ = lean
    with pytest.raises(ValueError, match="invalid HTTP header"):
        client.put("smuggled", b"x", 1, {"X-Amz-Meta-Note": "a\r\nX-Amz-Meta-Evil: 1"})
    assert client.get("smuggled") is None


def test_a_file_body_shorter_than_its_size_is_refused(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    client, _, data = lean
    with pytest.raises(ValueError, match="ended 7 bytes before"):
        client.put("short", io.BytesIO(b"abc"), 10, {})
    assert client.get("short") is None
    assert client.get("obj") == data  # the client is still usable


def test_keys_with_characters_that_need_encoding(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    """The request target is encoded and signed by NPS itself: MinIO must accept it and file the
    object under the very key minio-py sees."""
    client, store, _ = lean
    for key in ("dir with spaces/IM 0001.dcm", "plus+and~tilde/100%.txt", "unicode/Müller_ß_日本.nii.gz",
                "reserved/a=b&c;d,e@f$g!h'i(j)k*l"):
        body = key.encode()
        assert client.put(key, body, len(body), {}).status == 200
        assert store._client.get_object(store.bucket, key).read() == body
        assert client.get(key) == body


def test_content_length_is_always_the_clients_own(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    """A body sent without (or with a wrong) Content-Length would be read by MinIO as the next
    request on the connection, and every later answer would belong to the request before."""
    client, _, data = lean
    smuggled = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
    assert client.request("PUT", "framed", smuggled).status == 200
    assert client.request("PUT", "framed2", b"abc", {"content-length": "1"}).status == 200
    assert client.get("framed") == smuggled and client.get("framed2") == b"abc"
    assert client.get("obj") == data


def test_a_pooled_connection_the_server_closed_is_not_tried(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    """Found closed when borrowed, so a conditional PUT is not sent twice (which would make it
    look retried and cost a read-back)."""
    client, _, data = lean
    assert client.get("obj") == data
    pooled, since = client._idle.get_nowait()
    assert pooled.sock is not None
    pooled.sock.shutdown(socket.SHUT_RDWR)
    client._idle.put((pooled, since))
    answer = client.put("cond", b"x", 1, {"If-None-Match": "*"})
    assert answer.status == 200 and not answer.retried and pooled.sock is None


def test_interim_and_upgrade_answers_are_errors_not_answers(minio_settings: Settings) -> None:
    def reply(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        time.sleep(0.05)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    client = _client_at(minio_settings, _serve_once(reply))
    with pytest.raises(LeanError, match="interim answer"):
        client.get("obj")
    assert client._idle.qsize() == 0

    def upgrade(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")

    client = _client_at(minio_settings, _serve_once(upgrade))
    with pytest.raises(LeanError, match="not valid HTTP"):
        client.get("obj")


def test_header_values_with_tabs_and_runs_of_spaces_are_signed_as_minio_checks_them(
        lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    client, store, _ = lean
    note = "a\tb  c \t d"
    assert client.put("meta", b"x", 1, {"X-Amz-Meta-Note": note}).status == 200
    assert store._client.stat_object(store.bucket, "meta").metadata["X-Amz-Meta-Note"]


def test_endpoints_with_ipv6_addresses_or_without_a_port(minio_settings: Settings) -> None:
    for endpoint, host, port in (("[::1]:9100", "::1", 9100), ("[::1]", "::1", 80), ("localhost", "localhost", 80)):
        store = MinioStore(minio_settings.model_copy(update={"minio_endpoint": endpoint}))
        wire = store._lean._wire()
        assert (wire.host, wire.port) == (host, port)


def test_bodies_carry_a_crc32_that_minio_checks(lean: tuple[LeanS3, MinioStore, bytes]) -> None:
    """Bodies are unsigned, so the CRC32 is what catches bytes damaged on their way: a body
    in memory gets one, MinIO keeps it, and a body that does not match it is refused."""
    client, _, _ = lean
    data = os.urandom(5000)
    assert client.put("crc/ok", data, len(data), {}).status == 200
    kept = client.request("GET", "crc/ok", headers={"x-amz-checksum-mode": "ENABLED"})
    assert kept.body == data
    assert kept.headers["x-amz-checksum-crc32"] == crc32_header(zlib.crc32(data))[CRC32]
    wrong = crc32_header(zlib.crc32(data) ^ 1)  # what a flipped bit on the way would look like
    refused = client.request("PUT", "crc/bad", data, wrong)
    assert checksum_refused(refused)
    assert client.get("crc/bad") is None
    assert client.put("crc/mem", data, len(data), {"X-Amz-Checksum-Crc32": wrong[CRC32]}).status == 200  # ours wins
    stream = io.BytesIO(data)  # a file body with the caller's CRC32
    assert checksum_refused(client.put("crc/file", stream, len(data), wrong))
    stream.seek(0)
    assert client.put("crc/file", stream, len(data), crc32_header(zlib.crc32(data))).status == 200
