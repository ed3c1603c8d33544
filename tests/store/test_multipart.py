"""Files above 1 MiB through the lean uploader, against the real MinIO: one PUT or several
parts, what arrives is what was sent, and an upload that fails leaves no parts behind and
gives every buffer back."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import blake3
import pytest

from nps.config import Settings
from nps.errors import InvalidSource
from nps.store.lean import LeanError
from nps.store.minio import MinioStore
from nps.store.multipart import (
    Uploader,
    _Buffers,
    complete_body,
    multipart_etag,
    part_size_for,
    s3_error,
    xml_field,
)
from nps.store.source import SourceFile
from schemas.dataset import DatasetRecord, UploadOrigin

MiB = 1024 * 1024


def test_part_size_grows_only_when_a_file_would_need_more_than_10000_parts() -> None:
    assert part_size_for(1024 * MiB, 64 * MiB) == 64 * MiB
    assert part_size_for(10_000 * 64 * MiB, 64 * MiB) == 64 * MiB
    assert part_size_for(10_000 * 64 * MiB + 1, 64 * MiB) == 65 * MiB  # whole MiB, and enough
    assert -(-(10_000 * 64 * MiB + 1) // (65 * MiB)) <= 10_000


def test_completion_document_and_s3_error_bodies() -> None:
    body = complete_body([('"aa"', "AAAAAQ=="), ('"bb"', "AAAAAg==")])
    assert body == (b'<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"aa"</ETag>'
                    b'<ChecksumCRC32>AAAAAQ==</ChecksumCRC32></Part><Part><PartNumber>2</PartNumber>'
                    b'<ETag>"bb"</ETag><ChecksumCRC32>AAAAAg==</ChecksumCRC32></Part></CompleteMultipartUpload>')
    started = (b'<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult '
               b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key>'
               b'<UploadId>abc-123</UploadId></InitiateMultipartUploadResult>')
    assert xml_field(started, "UploadId") == "abc-123"
    assert xml_field(b"not xml", "UploadId") is None and xml_field(started, "Nope") is None
    # S3 may answer 200 and still fail a completion: the error is in the body.
    failed = b'<?xml version="1.0"?>\n<Error><Code>InternalError</Code><Message>try again</Message></Error>'
    assert s3_error(failed) == "InternalError: try again"
    done = b"<CompleteMultipartUploadResult><Key>k</Key><ETag>x</ETag></CompleteMultipartUploadResult>"
    assert s3_error(done) is None


def test_part_buffers_are_bounded_reused_while_busy_and_released_when_idle() -> None:
    buffers = _Buffers(8, 2)
    first, second = buffers.take(8), buffers.take(8)
    third: list[bytearray] = []
    waiting = threading.Thread(target=lambda: third.append(buffers.take(8)), daemon=True)
    waiting.start()
    waiting.join(0.3)
    assert waiting.is_alive() and not third  # both buffers out: a third take waits
    buffers.give(first)
    waiting.join(5)
    assert third and third[0] is first  # reused, not allocated again
    buffers.give(second)
    larger = buffers.take(100)  # another size (a file that needs larger parts): never pooled
    assert len(larger) == 100
    buffers.give(larger)
    buffers.give(third[0])
    assert buffers.in_use == 0
    assert buffers.take(8) is not first  # nothing kept once idle


@pytest.fixture
def small_parts(minio_settings: Settings) -> MinioStore:
    """A store whose large files go up in 5 MiB parts (S3's smallest), one part at a time."""
    store = MinioStore(minio_settings.model_copy(update={"part_size_mb": 5}))
    store._uploader = Uploader(store._lean, store.part_size, parallel=1)
    return store


@pytest.fixture
def parallel_parts(minio_settings: Settings) -> MinioStore:
    """5 MiB parts, four sent at once (the default): they may finish in any order."""
    return MinioStore(minio_settings.model_copy(update={"part_size_mb": 5}))


def pending_uploads(store: MinioStore, key: str) -> list[str]:
    result = store._client._list_multipart_uploads(store.bucket, prefix=key)
    return [u.upload_id for u in result.uploads]


def test_files_in_parts_and_in_one_put_arrive_whole(parallel_parts: MinioStore, tmp_path: Path) -> None:
    small_parts = parallel_parts
    src = tmp_path / "src"
    src.mkdir()
    files = {"parts.bin": os.urandom(32 * MiB + 7), "one.bin": os.urandom(3 * MiB), "exact.bin": os.urandom(10 * MiB),
             "part.bin": os.urandom(5 * MiB)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    seen: list[int] = []
    dataset = "ab" * 20
    manifest = small_parts.put(dataset, src, DatasetRecord(id=dataset, origin=UploadOrigin(source="t")),
                               progress=seen.append)
    by_path = {f.path: f for f in manifest.files}
    for name, data in files.items():
        assert by_path[name].blake3 == blake3.blake3(data).hexdigest()
        assert by_path[name].size == len(data)
    assert sum(seen) == sum(map(len, files.values()))  # each byte counted once, when sent
    small_parts.get(dataset, tmp_path / "copy")
    for name, data in files.items():
        assert (tmp_path / "copy" / name).read_bytes() == data
    stat = small_parts._client.stat_object(small_parts.bucket, small_parts.key(dataset, "parts.bin"))
    assert stat.etag is not None and stat.etag.endswith("-7")  # 6 x 5 MiB + 2 MiB and 7 bytes
    assert pending_uploads(small_parts, small_parts.key(dataset, "parts.bin")) == []
    assert small_parts._uploader._buffers.in_use == 0


def test_a_file_shorter_than_announced_is_refused_and_its_parts_dropped(small_parts: MinioStore) -> None:
    uploader, key = small_parts._uploader, "short/parts.bin"
    data = os.urandom(11 * MiB)
    with pytest.raises(InvalidSource, match=r"scan\.bin: file shrank"):
        uploader.upload(key, io.BytesIO(data), len(data) + 5 * MiB, "scan.bin")
    assert pending_uploads(small_parts, key) == []
    assert not list(small_parts._client.list_objects(small_parts.bucket, prefix="short/"))
    assert uploader._buffers.in_use == 0
    with pytest.raises(InvalidSource):  # one PUT: nothing is sent at all
        uploader.upload("short/one.bin", io.BytesIO(data[:2 * MiB]), 3 * MiB, "one.bin")
    assert not list(small_parts._client.list_objects(small_parts.bucket, prefix="short/"))


def test_a_failing_part_aborts_the_upload_and_returns_every_buffer(small_parts: MinioStore) -> None:
    uploader, key = small_parts._uploader, "fails/parts.bin"
    data = os.urandom(23 * MiB)  # 5 parts: some still waiting when the first one fails

    def progress(_: int) -> None:
        raise RuntimeError("the progress display went away")

    with pytest.raises(RuntimeError, match="display went away"):
        uploader.upload(key, io.BytesIO(data), len(data), "parts.bin", progress)
    assert pending_uploads(small_parts, key) == []
    assert not list(small_parts._client.list_objects(small_parts.bucket, prefix="fails/"))
    assert uploader._buffers.in_use == 0
    digest = uploader.upload(key, io.BytesIO(data), len(data), "parts.bin")  # the uploader still works
    assert digest == blake3.blake3(data).hexdigest()
    assert small_parts._client.get_object(small_parts.bucket, key).read() == data


def test_a_completion_minio_refuses_is_an_error_naming_the_object(small_parts: MinioStore) -> None:
    uploader = small_parts._uploader
    upload_id = uploader._start("refused/parts.bin")
    with pytest.raises(LeanError, match=r"refused/parts\.bin.*InvalidPart"):
        uploader._complete("refused/parts.bin", upload_id, [('"0123456789abcdef0123456789abcdef"', "AAAAAA==")])
    uploader._abort("refused/parts.bin", upload_id)
    assert pending_uploads(small_parts, "refused/parts.bin") == []


def test_the_etag_of_a_completed_upload_is_known_in_advance(small_parts: MinioStore) -> None:
    """What tells a completion whose answer was lost (and whose retry finds no upload) from
    one that never happened: the stored object's ETag is the one its parts imply."""
    uploader, key = small_parts._uploader, "etag/parts.bin"
    upload_id = uploader._start(key)
    parts = []
    for number, data in enumerate([os.urandom(5 * MiB), os.urandom(1000)], 1):
        buffer = uploader._buffers.take(len(data))  # a part owns its buffer and gives it back
        buffer[:len(data)] = data
        parts.append(uploader._part(key, upload_id, number, buffer, len(data), None))
    assert uploader._buffers.in_use == 0
    uploader._complete(key, upload_id, parts)
    etags = [etag for etag, _ in parts]
    assert uploader._stored_etag(key) == multipart_etag(etags)
    assert multipart_etag(list(reversed(etags))) != multipart_etag(etags)


def test_a_part_for_an_upload_minio_does_not_know_is_refused_clearly(small_parts: MinioStore) -> None:
    uploader = small_parts._uploader
    with pytest.raises(LeanError, match=r"part 1 of nowhere/parts\.bin: NoSuchUpload"):
        uploader._part("nowhere/parts.bin", "not-an-upload", 1, uploader._buffers.take(10), 10, None)
    assert uploader._buffers.in_use == 0


def test_a_file_that_grew_while_being_stored_is_refused(small_parts: MinioStore, tmp_path: Path) -> None:
    path = tmp_path / "growing.bin"
    path.write_bytes(os.urandom(12 * MiB))
    scanned = SourceFile(path="growing.bin", abspath=path, size=11 * MiB)  # as the scan saw it
    claim = small_parts._claim("cd" * 20)
    assert claim is not None
    try:
        with pytest.raises(InvalidSource, match=r"growing\.bin: file changed"):
            small_parts._upload("cd" * 20, scanned, claim, None)
    finally:
        small_parts._leases.release(claim)


class _FlipsWhenRewound(io.BytesIO):
    """A file whose middle byte flips on its first ``flips`` rewinds: another process writing
    to it between the checksum pass and the send (one flip), or bytes that only the send saw
    differently, as damage on the way would (two flips: the file is as it was when checked
    again). A test double: neither moment can be hit reliably from outside."""

    def __init__(self, data: bytes, flips: int) -> None:
        super().__init__(data)
        self.flips = flips

    def seek(self, position: int, whence: int = 0) -> int:
        if self.flips:
            self.flips -= 1
            view = self.getbuffer()
            view[len(view) // 2] ^= 0xFF
            del view
        return super().seek(position, whence)


def test_a_file_that_changes_between_checksum_and_send_is_refused_not_stored(small_parts: MinioStore) -> None:
    data = os.urandom(3 * MiB)
    with pytest.raises(InvalidSource, match=r"scan\.bin: file changed while being stored"):
        small_parts._uploader.upload("changing/one.bin", _FlipsWhenRewound(data, 1), len(data), "scan.bin")
    assert not list(small_parts._client.list_objects(small_parts.bucket, prefix="changing/"))


def test_bytes_damaged_on_the_way_are_a_store_error_not_a_changed_file(small_parts: MinioStore) -> None:
    """Damage in transit is worth retrying (a job's StoreUnavailable), a changed input is not."""
    data = os.urandom(3 * MiB)
    with pytest.raises(LeanError, match="damaged on their way to MinIO"):
        small_parts._uploader.upload("damaged/one.bin", _FlipsWhenRewound(data, 2), len(data), "scan.bin")
    assert not list(small_parts._client.list_objects(small_parts.bucket, prefix="damaged/"))
