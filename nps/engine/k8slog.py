"""Reading a container's log straight from its ``k8s-file`` log file (Podman's driver here).

Through the engine's API every line of a log is its own HTTP chunk and its own frame: reading
a 10 MiB log that way took 20-33 s here (11-13 s of it the worker's CPU), at the end of every
job. The file holds the same lines, one per line of the file::

    <RFC 3339 time> <stdout|stderr> <F|P> <content>

``F`` ends a line; ``P`` is part of a longer one (or a last line without a newline), continued
by the next. Parsing it costs about a microsecond per line.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

READ_MAX = 4 * 1024 * 1024  # a followed file is read in pieces of at most this
_K8S_LINE = re.compile(rb"\d{4}-\d\d-\d\dT[0-9:.]+(?:Z|[+-]\d\d:\d\d) (?:stdout|stderr) [FP]( |\n|$)")


def log_file(attrs: dict[str, Any]) -> Path | None:
    """The container's log file (``LogPath`` of its inspect data) if this process can read it
    and it is in k8s-file format. The format is recognised from the first line, not from
    ``HostConfig.LogConfig.Type``: Podman's Docker-compatible API reports ``json-file`` there
    whatever its driver (Docker's own json-file logs start with ``{`` and are left alone)."""
    path = attrs.get("LogPath")
    if not path or not os.access(path, os.R_OK):
        return None
    try:
        with open(path, "rb") as fh:
            first = fh.readline(4096)
    except OSError:
        return None
    return Path(path) if not first or _K8S_LINE.match(first) else None


def stream_lines(lines: Iterable[bytes], stream: str) -> Iterator[bytes]:
    """The bytes ``stream`` (stdout or stderr) wrote, from the lines of a k8s-file log.
    A malformed line (a log being written as it is read ends mid-line) is skipped."""
    wanted = stream.encode()
    for line in lines:
        parts = line.rstrip(b"\n").split(b" ", 3)
        if len(parts) < 3 or parts[1] != wanted:
            continue
        content = parts[3] if len(parts) == 4 else b""
        if parts[2] == b"P":
            yield content
        elif parts[2] == b"F":
            yield content + b"\n"


def read_stream(path: Path, stream: str, chunk: int = 1024 * 1024) -> Iterator[bytes]:
    """``stream_lines`` of a log file, in chunks of about ``chunk`` bytes."""
    with path.open("rb") as fh:
        pending: list[bytes] = []
        size = 0
        for piece in stream_lines(fh, stream):
            pending.append(piece)
            size += len(piece)
            if size >= chunk:
                yield b"".join(pending)
                pending, size = [], 0
        if pending:
            yield b"".join(pending)


class NotK8sLog(Exception):
    """A log file followed from its start turned out not to be in k8s-file format."""


def follow(path: Path, stream: str, stopped: Callable[[], bool], interval: float = 0.5) -> Iterator[bytes]:
    """What ``stream`` writes to a log file that is still growing, as it is written: complete
    lines only, read every ``interval`` seconds (in pieces of at most ``READ_MAX``), until
    ``stopped()`` (checked before each round of reading, so what was written before it turned
    true is still read). A file that was empty when ``log_file`` looked is checked at its
    first line: NotK8sLog if it is not in k8s-file format (Docker's json-file)."""
    with path.open("rb") as fh:
        rest, checked = b"", False
        while True:
            done = stopped()
            while data := fh.read(READ_MAX):
                data = rest + data
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                if not cut:
                    continue
                lines = data[:cut].split(b"\n")[:-1]  # on "\n" only: a lone "\r" is content
                if not checked:
                    if not _K8S_LINE.match(lines[0] + b"\n"):
                        raise NotK8sLog(f"{path}: not a k8s-file log")
                    checked = True
                if piece := b"".join(stream_lines(lines, stream)):
                    yield piece
            if done:
                return
            time.sleep(interval)
