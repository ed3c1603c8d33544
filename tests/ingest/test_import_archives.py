"""`nps import` of damaged archives and archive bombs, as a user runs it (the CLI, real MinIO
and RabbitMQ). Each is imported beside a good folder: one clear error line, no traceback, what
could be read is imported, the batch still closes, no spool folder is left behind.

No assembler runs: the instances queue keeps what the import announced, the batch's close
included, for the test to read.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from nps.broker import topology
from nps.config import Settings
from nps.hashing import series_dataset_id
from schemas.messages import BatchClosed, InstanceReceived
from tests.dicom.factory import make_instance, make_series
from tests.ingest.conftest import env_for
from tests.ingest.waits import take_all
from tests.jobs.conftest import run_nps

ZEROS = 64 * 1024 * 1024  # compresses about a thousand times: over the default ratio of 100


def _import(s: Settings, tmp_path: Path, archive: Path, **env: str) -> tuple[str, str]:
    """Import a good folder and ``archive``; the one error line, and the good folder's series."""
    good, _ = make_series(tmp_path / "good", 2)
    spool = tmp_path / "tmp"
    spool.mkdir()
    result = run_nps("import", str(tmp_path / "good"), str(archive), env=env_for(s) | {"TMPDIR": str(spool)} | env,
                     ok=False)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert list(spool.iterdir()) == []  # no spooled member left behind
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(archive) in errors[0], result.stderr
    return errors[0], series_dataset_id(good)


def _announced(s: Settings) -> tuple[Counter[str], set[str]]:
    """Instances announced per series, and the series the batch closed."""
    messages = take_all(s, topology(s).instances)
    counts = Counter(m.dataset_id for m in messages if isinstance(m, InstanceReceived))
    closes = [m for m in messages if isinstance(m, BatchClosed)]
    assert len(closes) == 1, messages
    return counts, set(closes[0].dataset_ids)


def test_a_zip_member_with_a_bad_crc_is_reported_and_the_other_members_are_imported(
        ingest_settings: Settings, tmp_path: Path) -> None:
    uid, _ = make_series(tmp_path / "s", 3)
    files = sorted((tmp_path / "s").iterdir())
    archive = tmp_path / "scans.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        for f in files:
            z.write(f, f"s/{f.name}")
    raw = bytearray(archive.read_bytes())
    raw[raw.find(files[1].read_bytes()) + len(files[1].read_bytes()) - 10] ^= 0xFF  # in the pixel data
    archive.write_bytes(bytes(raw))

    error, good = _import(ingest_settings, tmp_path, archive)
    assert f"scans.zip!s/{files[1].name}: damaged (Bad CRC-32" in error and "not imported" in error
    counts, closed = _announced(ingest_settings)
    series = series_dataset_id(uid)
    assert counts == {good: 2, series: 2}
    assert closed == {good, series}


def test_a_truncated_tar_gz_imports_the_members_before_the_damage(
        ingest_settings: Settings, tmp_path: Path) -> None:
    uid = generate_uid()
    for n in range(3):  # noise does not compress: the cut below falls inside the third member
        make_instance(tmp_path / "s" / f"i{n:04d}.dcm", uid, number=n + 1, size=64, pixels=os.urandom(64 * 64 * 2))
    buffer = io.BytesIO()
    ends = []
    with tarfile.open(fileobj=buffer, mode="w") as t:
        for f in sorted((tmp_path / "s").iterdir()):
            t.add(f, f"s/{f.name}")
            ends.append(buffer.tell())
    tar = buffer.getvalue()
    archive = tmp_path / "scans.tar.gz"
    with archive.open("wb") as out, gzip.GzipFile(fileobj=out, mode="wb") as gz:
        gz.write(tar[:ends[1]])
        gz.flush()  # the first two members decompress from the bytes written so far
        complete = out.tell()
        gz.write(tar[ends[1]:])
    archive.write_bytes(archive.read_bytes()[:complete + 2000])  # cut in the third member

    error, good = _import(ingest_settings, tmp_path, archive)
    assert "damaged in member s/i0002.dcm" in error and "the rest of the archive were not imported" in error
    counts, closed = _announced(ingest_settings)
    series = series_dataset_id(uid)
    assert counts == {good: 2, series: 2}
    assert closed == {good, series}


def _archive(tmp_path: Path, kind: str, zeros: bool) -> tuple[Path, str, int]:
    """Three instances of one series (with a member of zeros after the first): path, series, instance size."""
    uid, _ = make_series(tmp_path / "s", 3)
    files = sorted((tmp_path / "s").iterdir())
    members: list[tuple[str, bytes]] = [(f"s/{f.name}", f.read_bytes()) for f in files]
    if zeros:
        members.insert(1, ("s/zeros.bin", bytes(ZEROS)))
    path = tmp_path / f"scans.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in members:
                z.writestr(name, data)
    else:
        with tarfile.open(path, "w:gz", compresslevel=1) as t:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    return path, series_dataset_id(uid), len(members[0][1])


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
@pytest.mark.parametrize("limit", ["ratio", "members", "size"])
def test_an_archive_over_a_limit_is_refused_with_a_clear_error(
        ingest_settings: Settings, tmp_path: Path, kind: str, limit: str) -> None:
    archive, series, size = _archive(tmp_path, kind, zeros=limit == "ratio")
    env = {"members": {"NPS_ARCHIVE_MAX_MEMBERS": "2"},
           "size": {"NPS_ARCHIVE_MAX_GB": repr(2.5 * size / 1024**3)}}.get(limit, {})
    error, good = _import(ingest_settings, tmp_path, archive, **env)
    setting = {"ratio": "NPS_ARCHIVE_MAX_RATIO", "members": "NPS_ARCHIVE_MAX_MEMBERS", "size": "NPS_ARCHIVE_MAX_GB"}
    assert "refused" in error and setting[limit] in error
    counts, closed = _announced(ingest_settings)
    # A zip is judged by its directory before anything is extracted; a tar member by member,
    # the ones before the limit imported.
    imported = 0 if kind == "zip" else {"ratio": 1, "members": 2, "size": 2}[limit]
    assert counts == {good: 2, **({series: imported} if imported else {})}
    assert closed == set(counts)
