"""Signed S3 requests for small objects without minio-py's per-request machinery.

For a 10 KiB object minio-py spends 0.7-1 ms of CPU per GET here (urllib3's pool and retry
layers, response wrappers, header parsing twice) and more per PUT (it hashes the body to sign
it), about as much as MinIO itself, which makes small files the slow case of ``get``, ``put``,
job staging and DICOM receiving (a series is hundreds of them). This client signs each
request itself (``sigv4.py``, the key derived once a day) and sends it over a kept-alive
connection borrowed from a small pool: a ``Wire`` (``wire.py``: one send, httptools parses
the answer) for requests whose answer is read whole, ``http.client`` for large reads streamed
into the caller's buffer. PUT bodies are sent unsigned (``UNSIGNED-PAYLOAD``): NPS checksums
every file itself (BLAKE3 in the manifest or the object's metadata) and verifies it on read,
and a CRC32 header (about half of SHA-256's cost here) has MinIO check each body as it arrives.

Idle connections are reused for a few seconds only (the server drops them soon after), and
only if nothing is waiting on them (a close by the server, or bytes nobody asked for).
Connection failures are retried on a fresh connection (3 attempts with a short backoff), as
are 5xx answers; every other status is the caller's to interpret (``LeanResponse``), except
that ``get`` reports 404 as None and raises for the rest.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import queue
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal, TypeVar
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.error import S3Error
from minio.helpers import quote

from nps.store.sigv4 import amz_date, authorization
from nps.store.wire import Wire, quiet, request_head

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
CRC32 = "x-amz-checksum-crc32"
ATTEMPTS = 3
KEEP = 32  # idle connections kept
MAX_IDLE = 10.0  # seconds; idle longer, the server may have dropped it (MinIO here: after 12-31 s)
BLOCK = 1024 * 1024  # a streamed answer is read in blocks of this size
Conn = TypeVar("Conn", Wire, http.client.HTTPConnection)
Body = bytes | memoryview | BinaryIO  # in memory, or a file sent from where it stands


class LeanError(Exception):
    """A request that failed for good; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else detail)
        self.status = status


def crc32_header(crc: int) -> dict[str, str]:
    """The header that makes MinIO check a body's CRC32 (``zlib.crc32``) before storing it: the
    bodies are unsigned, so this is what catches bytes damaged on their way."""
    return {CRC32: base64.b64encode(crc.to_bytes(4, "big")).decode()}


def checksum_refused(response: LeanResponse) -> bool:
    """True if the server refused a body because it did not match the checksum sent with it
    (MinIO: ``XAmzContentChecksumMismatch``, AWS: ``BadDigest``)."""
    head = response.body[:300]
    return response.status == 400 and (b"XAmzContentChecksumMismatch" in head or b"<Code>BadDigest<" in head)


def _range(offset: int, length: int | None) -> dict[str, str]:
    if length is not None:
        return {"Range": f"bytes={offset}-{offset + length - 1}"}
    return {"Range": f"bytes={offset}-"} if offset else {}


@dataclass(frozen=True)
class LeanResponse:
    status: int
    headers: dict[str, str]  # names lower-case
    body: bytes
    retried: bool = False

    @property
    def etag(self) -> str:
        return self.headers.get("etag", "").strip('"')

    def detail(self) -> str:
        return self.body[:300].decode("utf-8", "replace")


def _fill(response: http.client.HTTPResponse, buffer: memoryview) -> int:
    """Read into ``buffer`` until it is full or the body ends; the bytes read."""
    filled = 0
    while filled < len(buffer):
        got = response.readinto(buffer[filled:])
        if not got:
            break
        filled += got
    return filled


class LeanS3:
    """GET (whole, or streamed) and PUT of one object each; thread-safe."""

    def __init__(self, client: Minio, bucket: str, timeout: float = 120.0) -> None:
        self.client = client
        self.bucket = bucket
        self.timeout = timeout
        self._idle: queue.SimpleQueue[tuple[Wire, float]] = queue.SimpleQueue()
        self._streams: queue.SimpleQueue[tuple[http.client.HTTPConnection, float]] = queue.SimpleQueue()
        self._region: str | None = None
        self._path_style: tuple[str, str] | Literal[False] | None = None  # (host, "/bucket/"), once known

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes | None:
        """``length`` bytes from ``offset`` (fewer if the object is shorter; the whole object
        without a length); None if there is no such object. Raises LeanError for a range past
        the end (416) or a failure."""
        response = self.request("GET", key, headers=_range(offset, length))
        if response.status in (200, 206):
            return response.body
        if response.status == 404:
            return None
        raise LeanError(response.status, response.detail())

    def put(self, key: str, body: Body, size: int, headers: dict[str, str]) -> LeanResponse:
        """PUT ``size`` bytes (in memory, or a file positioned at their start, which a retry
        rewinds) with extra ``headers`` (conditions, metadata); the caller reads the status.
        A body in memory carries its CRC32, which MinIO checks (400 ``XAmzContentChecksumMismatch``
        if what arrived differs); for a file the caller may pass one (``crc32_header``)."""
        if isinstance(body, (bytes, memoryview)):
            if len(body) != size:
                raise ValueError(f"a body of {len(body)} bytes sent as {size}")
            own = {k: v for k, v in headers.items() if k.lower() != CRC32}  # ours is the right one
            headers = {**own, **crc32_header(zlib.crc32(body))}
        return self.request("PUT", key, body, headers, size)

    def stream(self, key: str, offset: int, length: int | None, chunk: int) -> Iterator[bytes]:
        """Like ``get``, but the bytes arrive in chunks of ``chunk`` as they are read (a large
        object is never held whole); LeanError(404) if there is no such object. A connection
        that fails mid-stream raises LeanError(0): the caller knows how far it got."""
        for view in self.stream_into(key, offset, length, memoryview(bytearray(chunk))):
            yield bytes(view)

    def stream_into(self, key: str, offset: int, length: int | None, buffer: memoryview) -> Iterator[memoryview]:
        """``stream`` into the caller's ``buffer``, filled and yielded (as a view of its filled
        part) again and again: each view is valid only until the next one is asked for. No
        allocation per chunk: fresh memory is slow to touch on this kind of VM (the host takes
        back freed pages), and a 1 GiB download would otherwise allocate and copy 2 GiB."""
        conn, response = self._open_stream(key, _range(offset, length))
        if response.status not in (200, 206):
            answer = self._read_all(conn, response)
            raise LeanError(response.status, answer[:300].decode("utf-8", "replace"))
        try:
            while filled := _fill(response, buffer):
                yield buffer[:filled]
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise LeanError(0, f"MinIO stopped sending ({exc})") from exc
        except BaseException:
            conn.close()  # abandoned mid-body: the connection cannot be reused
            raise
        if response.length:  # http.client ends a body cut short by a clean close without a word
            conn.close()
            raise LeanError(0, f"MinIO closed the connection {response.length} bytes before the end")
        self._finish(conn, response)

    def request(self, method: str, key: str, body: Body | None = None,
                headers: dict[str, str] | None = None, size: int | None = None,
                query: dict[str, str] | None = None) -> LeanResponse:
        """One request, its answer read whole, retrying connection failures (on a fresh
        connection) and 5xx answers. A file ``body`` needs its ``size``; it is sent from where
        it stands and rewound for a retry. ``query`` is the subresource (``uploadId``...),
        encoded and signed here. Content-Length is always this client's own.
        ``retried`` in the answer says whether it took more than one attempt (a conditional
        write may then have succeeded before failing)."""
        if method == "HEAD":
            raise ValueError("HEAD has an answer without a body: not supported here")
        sent = {k: v for k, v in (headers or {}).items() if k.lower() not in ("content-length", "expect")}
        if body is not None:
            if isinstance(body, (bytes, memoryview)):
                size = len(body)
            elif size is None:
                raise ValueError("a file body needs its size")
            sent["Content-Length"] = str(size)
        elif method in ("POST", "PUT"):
            sent["Content-Length"] = "0"  # some proxies refuse these without one (411)
        in_file = body is not None and not isinstance(body, (bytes, memoryview))
        start = body.tell() if in_file else 0  # type: ignore[union-attr]
        for attempt in range(ATTEMPTS):
            if attempt and in_file:
                body.seek(start)  # type: ignore[union-attr]
            target, signed = self._signed(method, key, sent, query)
            head = request_head(method, target, signed)
            wire = self._borrow(self._idle, self._wire) if attempt == 0 else self._wire()
            try:
                try:
                    wire.send(head, body, size or 0)
                except (BrokenPipeError, ConnectionResetError):
                    if body is None:
                        raise
                    # The server may have answered before reading the whole body (a failed
                    # condition) and stopped reading: its answer is still there to read.
                answer = wire.answer()
            except OSError as exc:
                wire.close()
                if attempt == ATTEMPTS - 1:
                    raise LeanError(0, f"MinIO is not reachable ({exc})") from exc
                time.sleep(0.1 * (attempt + 1))
                continue
            except BaseException:
                wire.close()  # mid-exchange: never reused
                raise
            if answer.keep_alive:
                self._return(self._idle, wire)
            if answer.status >= 500 and attempt < ATTEMPTS - 1:
                time.sleep(0.1 * (attempt + 1))
                continue
            return LeanResponse(answer.status, answer.headers, answer.body, attempt > 0)
        raise AssertionError("unreachable")

    def _read_all(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> bytes:
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise LeanError(0, f"MinIO stopped sending ({exc})") from exc
        self._finish(conn, response)
        return data

    def _open_stream(self, key: str, headers: dict[str, str]) -> tuple[http.client.HTTPConnection,
                                                                       http.client.HTTPResponse]:
        """Send a GET over ``http.client`` and read the answer's status and headers, retrying
        connection failures (on a fresh connection) and 5xx answers."""
        for attempt in range(ATTEMPTS):
            target, signed = self._signed("GET", key, headers)
            conn = self._borrow(self._streams, self._connect) if attempt == 0 else self._connect()
            try:
                conn.request("GET", target, headers=signed)
                response = conn.getresponse()
                if response.status >= 500 and attempt < ATTEMPTS - 1:
                    self._read_all(conn, response)
                    time.sleep(0.1 * (attempt + 1))
                    continue
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if attempt == ATTEMPTS - 1:
                    raise LeanError(0, f"MinIO is not reachable ({exc})") from exc
                time.sleep(0.1 * (attempt + 1))
                continue
            return conn, response
        raise AssertionError("unreachable")

    def _finish(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        """A streaming connection whose answer was read to the end goes back to the pool."""
        if response.will_close or not response.isclosed():
            conn.close()
        else:
            self._return(self._streams, conn)

    def _signed(self, method: str, key: str, extra: dict[str, str],
                query: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
        region = self._bucket_region()
        host, target = self._address(method, region, key)
        encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in (query or {}).items())
        payload = EMPTY_SHA256 if method == "GET" else UNSIGNED
        date = amz_date()
        headers = {**extra, "Host": host, "x-amz-content-sha256": payload, "x-amz-date": date}
        creds = self.client._provider.retrieve() if self.client._provider else None
        if creds is not None:
            if creds.session_token:
                headers["X-Amz-Security-Token"] = creds.session_token
            headers["Authorization"] = authorization(
                method=method, path=target, query=encoded, headers=headers, payload_sha256=payload,
                access_key=creds.access_key, secret_key=creds.secret_key, region=region, date=date)
        return (f"{target}?{encoded}" if encoded else target), headers

    def _address(self, method: str, region: str, key: str) -> tuple[str, str]:
        """Host header and request target of ``key``: built as minio-py builds them, through
        its (slow) URL builder only when the endpoint is not addressed by path (AWS)."""
        if self._path_style is None:
            url = self.client._base_url.build(method="GET", region=region, bucket_name=self.bucket,
                                              object_name="k")
            self._path_style = (url.netloc, url.path[:-1]) if url.path == f"/{self.bucket}/k" else False
        if self._path_style:
            host, prefix = self._path_style
            return host, prefix + quote(key)
        url = self.client._base_url.build(method=method, region=region, bucket_name=self.bucket, object_name=key)
        return url.netloc, url.path

    def _bucket_region(self) -> str:
        """The bucket's region, asked once (through minio-py) and remembered."""
        if self._region is None:
            try:
                self._region = self.client._get_region(self.bucket)
            except S3Error as exc:
                if exc.code == "NoSuchBucket":
                    return "us-east-1"  # not remembered; the request itself will say the bucket is missing
                raise LeanError(exc.response.status if exc.response else 0, f"{exc.code}: {exc.message}") from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise LeanError(0, f"MinIO is not reachable ({exc})") from exc
        return self._region

    @staticmethod
    def _borrow(pool: queue.SimpleQueue[tuple[Conn, float]], new: Callable[[], Conn]) -> Conn:
        """A pooled connection that has not idled long enough for the server to drop it and
        has nothing waiting on it (``quiet``), else ``new()``."""
        while True:
            try:
                conn, since = pool.get_nowait()
            except queue.Empty:
                return new()
            if time.monotonic() - since < MAX_IDLE and quiet(conn.sock):
                return conn
            conn.close()

    def _wire(self) -> Wire:
        base = self.client._base_url
        where = urlsplit(f"//{base.host}")
        port = where.port or (443 if base.is_https else 80)
        return Wire(where.hostname or base.host, port, self.timeout, tls=base.is_https)

    def _connect(self) -> http.client.HTTPConnection:
        host = self.client._base_url.host
        if self.client._base_url.is_https:
            return http.client.HTTPSConnection(host, timeout=self.timeout, blocksize=BLOCK)
        return http.client.HTTPConnection(host, timeout=self.timeout, blocksize=BLOCK)

    def _return(self, pool: queue.SimpleQueue[tuple[Conn, float]], conn: Conn) -> None:
        if pool.qsize() < KEEP:
            pool.put((conn, time.monotonic()))
        else:
            conn.close()
