"""One kept-alive HTTP/1.1 connection for small requests whose answers are read whole.

``http.client`` spends about 0.45 ms of CPU per request on its own here: the request line and
each header are separate writes, and the answer's headers go through the ``email`` package's
parser. For a 10 KiB object that is half of everything the client does per file. A ``Wire``
sends the request head and a small body in one ``send`` and parses the answer with httptools
(llhttp, the C parser uvicorn uses), which cuts the client's CPU per small PUT about in half.

Large answers that are streamed into the caller's buffer stay on ``http.client`` (``lean.py``):
there the per-request cost does not matter and its ``readinto`` never copies.
"""

from __future__ import annotations

import select
import socket
import ssl
from dataclasses import dataclass, field
from typing import BinaryIO

import httptools

ONE_SEND = 256 * 1024  # a body up to this size goes out in the same send as the head
RECV = 256 * 1024
BLOCK = 1024 * 1024  # a file body is sent in blocks of this size


class WireError(OSError):
    """The connection failed or the answer was not HTTP; the connection is closed."""


class BodyShort(ValueError):
    """A file body ended before the size the request announced (the file shrank)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-case; a repeated header's values joined with ", "
    body: bytes
    keep_alive: bool


@dataclass
class _Parsed:
    """httptools' callbacks land here."""

    headers: dict[str, str] = field(default_factory=dict)
    body: list[bytes] = field(default_factory=list)
    head_done: bool = False
    done: bool = False
    keep_alive: bool = False
    framed: bool = False  # the answer says where its body ends (length or chunks)
    parser: httptools.HttpResponseParser | None = None

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip()
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()
        self.framed = "content-length" in self.headers or "transfer-encoding" in self.headers

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done = True


def quiet(sock: socket.socket | None) -> bool:
    """True if an idle connection (any kind; None: not connected yet) has nothing to read: no
    bytes of an answer nobody asked for, and no close by the server (which reusing it would
    find out the hard way, costing an attempt)."""
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


def request_head(method: str, target: str, headers: dict[str, str]) -> bytes:
    """The request line and headers, ready to send; refuses anything that would split them."""
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers.items():
        text = str(value)
        if any(c in name or c in text for c in "\r\n\0") or ":" in name:
            raise ValueError(f"invalid HTTP header {name!r}: {text[:80]!r}")
        lines.append(f"{name}: {text}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("latin-1")


class Wire:
    """A connection to ``host:port`` (TLS with ``tls``), opened on first use."""

    def __init__(self, host: str, port: int, timeout: float, tls: bool = False) -> None:
        self.host, self.port, self.timeout, self.tls = host, port, timeout, tls
        self.sock: socket.socket | None = None

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self.sock = sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, head: bytes, body: bytes | memoryview | BinaryIO | None, size: int) -> None:
        """The request: ``head`` and then ``size`` bytes of ``body`` (in memory, or a file read
        from where it stands)."""
        if self.sock is None:
            self.connect()
        assert self.sock is not None
        if body is None or (isinstance(body, (bytes, memoryview)) and len(body) <= ONE_SEND):
            self.sock.sendall(head + body if body else head)
            return
        self.sock.sendall(head)
        if isinstance(body, (bytes, memoryview)):
            self.sock.sendall(body)
            return
        block = memoryview(bytearray(min(BLOCK, max(size, 1))))
        left = size
        while left:
            got = body.readinto(block[:min(left, len(block))])  # type: ignore[attr-defined]
            if not got:
                self.close()  # the server still waits for the rest: this connection is done
                raise BodyShort(f"the request body ended {left} bytes before its stated size")
            self.sock.sendall(block[:got])
            left -= got

    def answer(self) -> Answer:
        """Read one whole answer. A connection the server will close, or that broke, is
        closed; WireError when there is no complete answer."""
        if self.sock is None:
            raise WireError("not connected")
        parsed = _Parsed()
        parser = parsed.parser = httptools.HttpResponseParser(parsed)  # it looks its callbacks up now
        try:
            while not parsed.done:
                data = self.sock.recv(RECV)
                if not data:
                    if parsed.head_done and not parsed.framed:  # the body ends where the connection does
                        break
                    raise WireError("the server closed the connection before the end of its answer")
                parser.feed_data(data)
            status = parser.get_status_code()
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.close()
            raise WireError(f"the server's answer is not valid HTTP ({exc!r})") from exc
        except OSError:
            self.close()
            raise
        if status < 200:  # an interim answer (100 Continue): never asked for, so out of step
            self.close()
            raise WireError(f"the server sent an interim answer ({status}) nobody asked for")
        keep = parsed.keep_alive and parsed.done
        if not keep:
            self.close()
        return Answer(status, parsed.headers, b"".join(parsed.body), keep)
