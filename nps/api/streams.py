"""Streamed answers: byte ranges, tar and zip archives, CSV and JSON-lines tables.

Nothing here holds a whole file or a whole table in memory: archives are written entry by
entry as the store's verified chunks arrive, tables a page at a time.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from typing import Any

from nps.api.errors import RangeNotSatisfiable
from nps.errors import InvalidQuery
from schemas.manifest import Manifest


def byte_range(header: str, size: int) -> tuple[int, int]:
    """``bytes=START-END`` or ``bytes=START-`` or ``bytes=-SUFFIX`` as [start, end)."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise InvalidQuery("Range: only one 'bytes=START-END' range is supported")
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            start, end = max(0, size - int(last)), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
    except ValueError as exc:
        raise InvalidQuery(f"Range: {header!r} is not bytes=START-END") from exc
    if start < 0 or start >= max(size, 1) or end <= start:
        raise RangeNotSatisfiable(f"Range: {header!r} is outside the file ({size} bytes)")
    return start, end


def tar_stream(store: Any, dataset_id: str, manifest: Manifest) -> Iterator[bytes]:
    """A POSIX tar stream: header, verified bytes, padding, for each file."""
    for entry in manifest.files:
        info = tarfile.TarInfo(f"{dataset_id}/{entry.path}")
        info.size, info.mode, info.mtime = entry.size, 0o444, 0
        yield info.tobuf(tarfile.PAX_FORMAT)
        yield from store.read(dataset_id, entry.path, manifest=manifest)
        if entry.size % tarfile.BLOCKSIZE:
            yield tarfile.NUL * (tarfile.BLOCKSIZE - entry.size % tarfile.BLOCKSIZE)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)


class _Sink(io.RawIOBase):
    """An unseekable file that keeps what is written until it is drained (zipfile then writes
    data descriptors after each file instead of seeking back)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def zip_stream(store: Any, dataset_id: str, manifest: Manifest) -> Iterator[bytes]:
    """A zip stream (stored, not compressed: images are mostly incompressible; ZIP64 for large
    files and archives), readable by every unzip."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for entry in manifest.files:
            info = zipfile.ZipInfo(f"{dataset_id}/{entry.path}", date_time=(1980, 1, 1, 0, 0, 0))
            info.file_size = entry.size
            info.external_attr = 0o100444 << 16
            with archive.open(info, "w", force_zip64=entry.size >= zipfile.ZIP64_LIMIT) as out:
                for chunk in store.read(dataset_id, entry.path, manifest=manifest):
                    out.write(chunk)
                    if sink.chunks:
                        yield sink.drain()
            yield sink.drain()
    yield sink.drain()


def dotted(doc: dict[str, Any], path: str) -> Any:
    """``doc["a"]["b"]`` for ``a.b`` (None when missing)."""
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def json_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """One JSON object per line."""
    for row in rows:
        yield json.dumps(row, default=str) + "\n"


def csv_stream(columns: list[str], rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """A CSV table, header first, lists joined by ``;``, sent in 64 KiB pieces."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else (";".join(map(str, row[c])) if isinstance(row[c], list)
                         else row[c]) for c in columns])
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
