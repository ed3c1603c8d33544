"""Files above 1 MiB to MinIO through the lean client: one PUT, or a multipart upload.

minio-py signs every part of an upload over plain HTTP with the SHA-256 of its bytes, so a
1 GiB file cost the client a SHA-256 pass and MinIO a second one to check it, on top of
NPS's own BLAKE3, and each part was read into a freshly allocated buffer. Here every byte is
checksummed (BLAKE3, for the manifest) and sent ``UNSIGNED-PAYLOAD`` with a CRC32 that MinIO
checks on arrival (zlib.crc32: 0.47 s per GiB here, SHA-256 0.84 s); every later read
checks the BLAKE3.

* Up to the part size (``NPS_PART_SIZE_MB``), one PUT streamed from the file after a first
  pass that checksums it.
* Above it, a multipart upload: the file is read in order into part buffers, each sent by one
  of a few upload threads while the next is read. At most ``parallel + 1`` part buffers
  exist per store, shared by all the files a ``put`` uploads at once, reused from part to
  part and released when no upload needs them. An upload that fails is aborted, so MinIO
  drops its parts (and a killed writer's parts expire on MinIO's own schedule).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import BinaryIO

from nps import checksum
from nps.errors import InvalidSource
from nps.store.lean import CRC32, LeanError, LeanResponse, LeanS3, checksum_refused, crc32_header
from nps.store.wire import BodyShort

MiB = 1024 * 1024
BLOCK = MiB  # a file sent in one PUT is checksummed in blocks of this size first
MAX_PARTS = 10_000  # S3's limit per upload
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def part_size_for(size: int, preferred: int) -> int:
    """``preferred``, or the smallest whole number of MiB that keeps ``size`` within 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    return max(preferred, -(-needed // MiB) * MiB)


def multipart_etag(etags: list[str]) -> str:
    """The ETag S3 gives the object completed from parts with these ETags: the MD5 of their
    MD5s, a dash, their count. Says whether an object is that upload's result."""
    joined = b"".join(bytes.fromhex(etag.strip('"')) for etag in etags)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(etags)}"


def complete_body(parts: list[tuple[str, str]]) -> bytes:
    """The CompleteMultipartUpload document for parts 1..n with these (ETag, base64 CRC32)."""
    root = ET.Element("CompleteMultipartUpload")
    for number, (etag, crc) in enumerate(parts, 1):
        part = ET.SubElement(root, "Part")
        ET.SubElement(part, "PartNumber").text = str(number)
        ET.SubElement(part, "ETag").text = etag
        ET.SubElement(part, "ChecksumCRC32").text = crc
    return ET.tostring(root)


def xml_field(body: bytes, name: str) -> str | None:
    """Text of the first element ``name`` (with or without S3's namespace) in an S3 answer."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag in (name, S3_NS + name):
            return element.text or ""
    return None


def s3_error(body: bytes) -> str | None:
    """``Code: Message`` if ``body`` is an S3 error document (a 200 answer may carry one)."""
    if xml_field(body, "Code") is None or b"<Error" not in body[:200]:
        return None
    return f"{xml_field(body, 'Code')}: {xml_field(body, 'Message') or ''}"


def _why(answer: LeanResponse) -> str:
    return s3_error(answer.body) or answer.detail()


class _Buffers:
    """At most ``count`` part buffers in use at once; ones of the usual size are reused."""

    def __init__(self, size: int, count: int) -> None:
        self.size, self.count = size, count
        self.in_use = 0
        self._free: list[bytearray] = []
        self._changed = threading.Condition()

    def take(self, size: int) -> bytearray:
        with self._changed:
            self._changed.wait_for(lambda: self.in_use < self.count)
            self.in_use += 1
            if size == self.size and self._free:
                return self._free.pop()
        try:
            return bytearray(size)
        except BaseException:
            self.give(bytearray())
            raise

    def give(self, buffer: bytearray) -> None:
        """Back to the pool; when none is in use any more, the spare ones are released too (a
        long-lived worker does not keep hundreds of MiB between puts)."""
        with self._changed:
            if len(buffer) == self.size:
                self._free.append(buffer)
            self.in_use -= 1
            if not self.in_use:
                self._free.clear()
            self._changed.notify()


def _file_crc32(fh: BinaryIO, size: int, name: str, digest: checksum.Digest) -> int:
    """CRC32 of the next ``size`` bytes of ``fh``, feeding them to ``digest`` too."""
    block = memoryview(bytearray(min(BLOCK, size)))
    crc, left = 0, size
    while left:
        got = fh.readinto(block[:min(left, len(block))])  # type: ignore[attr-defined]
        if not got:
            raise InvalidSource(f"{name}: file shrank while being stored")
        digest.update(block[:got])
        crc = zlib.crc32(block[:got], crc)
        left -= got
    return crc


def _read_full(fh: BinaryIO, view: memoryview) -> int:
    filled = 0
    while filled < len(view):
        got = fh.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            break
        filled += got
    return filled


class Uploader:
    """Uploads of files above 1 MiB for one bucket; thread-safe, shared by a store's puts."""

    def __init__(self, lean: LeanS3, part_size: int, parallel: int = 4) -> None:
        self.lean = lean
        self.part_size = part_size
        self._buffers = _Buffers(part_size, parallel + 1)  # one being read while the rest are sent
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="nps-part")

    def upload(self, key: str, fh: BinaryIO, size: int, name: str,
               progress: Callable[[int], None] | None = None) -> str:
        """Store ``size`` bytes of ``fh`` (from where it stands) under ``key``; the BLAKE3 of
        what was sent. InvalidSource (naming ``name``) if the file ends early; LeanError if
        MinIO refuses."""
        part = part_size_for(size, self.part_size)
        if size > part:
            return self._multipart(key, fh, size, part, name, progress)
        return self._single(key, fh, size, name, progress)

    def _single(self, key: str, fh: BinaryIO, size: int, name: str,
                progress: Callable[[int], None] | None) -> str:
        """One PUT streamed from the file, after a first pass for its BLAKE3 and CRC32 (no
        part buffer: 16 such files go at once). MinIO checks the CRC32 against what it
        receives, so bytes that changed between the two passes are refused, not stored."""
        start = fh.tell()
        digest = checksum.new()
        crc = _file_crc32(fh, size, name, digest)
        fh.seek(start)
        try:
            answer = self.lean.put(key, fh, size, crc32_header(crc))
        except BodyShort as exc:
            raise InvalidSource(f"{name}: file shrank while being stored") from exc
        if checksum_refused(answer):
            fh.seek(start)
            if _file_crc32(fh, size, name, checksum.new()) != crc:
                raise InvalidSource(f"{name}: file changed while being stored (MinIO received other bytes)")
            raise LeanError(answer.status, f"{key}: the bytes were damaged on their way to MinIO, which refused them")
        if answer.status != 200:
            raise LeanError(answer.status, f"could not store {key}: {_why(answer)}")
        if progress:
            progress(size)
        return digest.hexdigest()

    def _fill(self, fh: BinaryIO, buffer: bytearray, want: int, name: str) -> memoryview:
        view = memoryview(buffer)[:want]
        if _read_full(fh, view) != want:
            raise InvalidSource(f"{name}: file shrank while being stored")
        return view

    def _multipart(self, key: str, fh: BinaryIO, size: int, part: int, name: str,
                   progress: Callable[[int], None] | None) -> str:
        upload_id = self._start(key)
        digest = checksum.new()
        # Each part's future and buffer: the future gives the buffer back, unless cancelled.
        sent: list[tuple[Future[tuple[str, str]], bytearray]] = []
        failed = threading.Event()
        try:
            done = 0
            while done < size and not failed.is_set():
                want = min(part, size - done)
                buffer = self._buffers.take(part)
                try:
                    view = self._fill(fh, buffer, want, name)
                    digest.update(view)
                    future = self._pool.submit(self._part, key, upload_id, len(sent) + 1, buffer, want, progress)
                except BaseException:
                    self._buffers.give(buffer)
                    raise
                sent.append((future, buffer))
                future.add_done_callback(lambda f: failed.set() if f.cancelled() or f.exception() else None)
                done += want
            parts = [future.result() for future, _ in sent]  # raises the first failure
            self._complete(key, upload_id, parts)
        except BaseException:
            for future, buffer in sent:
                if future.cancel():
                    self._buffers.give(buffer)
            wait([future for future, _ in sent])  # every buffer is back before the caller goes on
            self._abort(key, upload_id)
            raise
        return digest.hexdigest()

    def _part(self, key: str, upload_id: str, number: int, buffer: bytearray, length: int,
              progress: Callable[[int], None] | None) -> tuple[str, str]:
        """Send one part (and give its buffer back); its ETag and base64 CRC32."""
        try:
            body = memoryview(buffer)[:length]
            crc = crc32_header(zlib.crc32(body))
            answer = self.lean.request("PUT", key, body, crc,
                                       query={"partNumber": str(number), "uploadId": upload_id})
        finally:
            self._buffers.give(buffer)
        if answer.status != 200 or "etag" not in answer.headers:
            raise LeanError(answer.status, f"part {number} of {key}: {_why(answer)}")
        if progress:
            progress(length)
        return answer.headers["etag"], crc[CRC32]

    def _start(self, key: str) -> str:
        # Parts carry CRC32s; AWS refuses them unless the upload says so when it starts.
        answer = self.lean.request("POST", key, headers={"x-amz-checksum-algorithm": "CRC32"}, query={"uploads": ""})
        upload_id = xml_field(answer.body, "UploadId") if answer.status == 200 else None
        if not upload_id:
            raise LeanError(answer.status, f"could not start an upload of {key}: {_why(answer)}")
        return upload_id

    def _complete(self, key: str, upload_id: str, parts: list[tuple[str, str]]) -> None:
        answer = self.lean.request("POST", key, complete_body(parts), {"Content-Type": "application/xml"},
                                   query={"uploadId": upload_id})
        if answer.status == 404 and answer.retried:
            stored = self._stored_etag(key)
            with contextlib.suppress(ValueError):  # an ETag that is not an MD5: not ours to recognise
                if stored is not None and stored == multipart_etag([etag for etag, _ in parts]):
                    return  # the first attempt completed it and its answer was lost
        error = s3_error(answer.body)
        if answer.status != 200 or error:
            raise LeanError(answer.status, f"could not complete the upload of {key}: {_why(answer)}")

    def _stored_etag(self, key: str) -> str | None:
        answer = self.lean.request("GET", key, headers={"Range": "bytes=0-0"})
        if answer.status not in (200, 206):
            return None
        return answer.headers.get("etag", "").strip('"') or None

    def _abort(self, key: str, upload_id: str) -> None:
        """Best effort: MinIO expires what is left on its own."""
        with contextlib.suppress(LeanError):
            self.lean.request("DELETE", key, query={"uploadId": upload_id})

