"""The DICOM receiver over loopback with real senders (dcmtk's storescu, pynetdicom), real
RabbitMQ, MinIO and Elasticsearch, and the assembler and indexer as real processes."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, _config

from nps.config import Settings
from nps.hashing import series_dataset_id
from nps.ingest import Quarantine
from nps.store.minio import MinioStore
from tests.conftest import REPO, dcmtk
from tests.dicom.factory import make_instance, make_series
from tests.ingest.conftest import echo, env_for, send, wait_indexed
from tests.ingest.waits import events
from tests.jobs.conftest import run_nps


def storescu(port: int, *paths: Path, calling: str = "STORESCU",
             options: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("storescu"), "-aet", calling, "-aec", "NPS", "+sd", *options, "127.0.0.1",
                           str(port), *map(str, paths)], env=dict(os.environ, TCP_NODELAY="1"), capture_output=True,
                          text=True, timeout=120)


def test_a_series_sent_with_storescu_becomes_a_searchable_dataset(receiver: Settings, tmp_path: Path) -> None:
    series, sops = make_series(tmp_path / "s", 12, SeriesDescription="T1_MPRAGE sag", PatientName="Doe^Jane")
    sent = storescu(receiver.dicom_port, tmp_path / "s")
    assert sent.returncode == 0, sent.stderr
    dataset_id = series_dataset_id(series)
    doc = wait_indexed(receiver, dataset_id)
    assert doc["kind"] == "series" and doc["revision"] == 1 and doc["number_of_instances"] == 12
    assert doc["series_instance_uid"] == series and doc["classification"] == "T1w"
    assert doc["patient_name"] == "Doe Jane" and doc["study_datetime"] == "2025-01-02T10:15:00"

    store = MinioStore(receiver)
    manifest = store.manifest(dataset_id)
    assert sorted(f.path for f in manifest.files if f.path.startswith("dicom/")) == sorted(
        f"dicom/{s}.dcm" for s in sops)
    store.verify(dataset_id)  # every instance byte-identical to what the manifest promises
    record = store.record(dataset_id)
    assert record.origin.kind == "series" and record.origin.series_instance_uid == series  # type: ignore[union-attr]

    env = env_for(receiver)
    found = run_nps("find", "modality:MR AND series_description:*mprage*", "--format", "csv",
                    "--fields", "id,patient_name,number_of_instances", env=env).stdout.splitlines()
    assert found == ["id,patient_name,number_of_instances", f"{dataset_id},Doe Jane,12"]
    assert run_nps("find", "patient_name:doe*", "-f", "json", env=env).stdout.count(dataset_id) >= 1


def test_echo_and_every_status_a_sender_can_get(receiver: Settings, tmp_path: Path) -> None:
    port = receiver.dicom_port
    assert echo(port) == 0
    series, sop = make_instance(tmp_path / "good.dcm")
    make_instance(tmp_path / "differs.dcm", series, sop, SeriesDescription="other bytes, same SOP")
    make_instance(tmp_path / "noseries.dcm", SeriesInstanceUID=None)
    make_instance(tmp_path / "badseries.dcm", series_uid="1.2.3/../../etc")
    make_instance(tmp_path / "DICOMDIR", SOPClassUID="1.2.840.10008.1.3.10")
    statuses = send(port, [tmp_path / n for n in ("good.dcm", "good.dcm", "differs.dcm", "noseries.dcm",
                                                   "badseries.dcm")])
    assert statuses == [0x0000, 0x0000, 0x0000, 0xA900, 0xA901]

    reasons = sorted(q.reason for q in Quarantine(MinioStore(receiver)).ls())
    assert reasons == ["duplicate_differs", "invalid_uid", "missing_uid"]
    doc = wait_indexed(receiver, series_dataset_id(series))
    assert doc["number_of_instances"] == 1  # the duplicate and the differing copy counted once


@pytest.fixture
def chunked_send() -> Iterator[None]:
    """Let pynetdicom send a file's bytes as they are (so a broken file reaches the receiver)."""
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = False


def broken_file(path: Path, body: bytes) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with path.open("wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, meta)
        fh.write(body)


def test_garbage_and_truncated_datasets_get_error_statuses_and_are_quarantined(
        receiver: Settings, tmp_path: Path, chunked_send: None) -> None:
    make_instance(tmp_path / "whole.dcm", size=64)
    data = (tmp_path / "whole.dcm").read_bytes()
    broken_file(tmp_path / "garbage.dcm", b"\xff\xff\x00\x00not a dataset at all" * 3)
    broken_file(tmp_path / "random.dcm", random.Random(5).randbytes(3000))
    broken_file(tmp_path / "text.dcm", b"Dear PACS admin, this is not an image.\n" * 20)
    (tmp_path / "truncated.dcm").write_bytes(data[:-200])
    statuses = send(receiver.dicom_port, [tmp_path / n for n in ("garbage.dcm", "random.dcm", "text.dcm",
                                                                   "truncated.dcm", "whole.dcm")], as_is=True)
    assert statuses == [0xC000, 0xC000, 0xC000, 0xC001, 0x0000]  # docs/dicom.md: 0xC000 for what is not DICOM
    assert sorted(q.reason for q in Quarantine(MinioStore(receiver)).ls()) == ["not_dicom"] * 3 + ["truncated"]


def dataset_bytes(data: bytes) -> bytes:
    """A DICOM file's data set as it travels on the wire: everything after the file meta group
    (preamble, DICM, then (0002,0000) holding the length of the rest of the group)."""
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    return data[144 + int.from_bytes(data[140:144], "little"):]


def stored_object(s: Settings, dataset_id: str, sop: str) -> bytes:
    store = MinioStore(s)
    found = store.get_object(store.key(dataset_id, f"dicom/{sop}.dcm"))
    assert found is not None, f"no object for {sop}"
    return found.data


def test_a_deflated_instance_sent_with_storescu_is_stored_deflated(receiver: Settings, tmp_path: Path) -> None:
    sample = Path(get_testdata_file("image_dfl.dcm"))  # Deflated Explicit VR Little Endian
    sent = storescu(receiver.dicom_port, sample, options=("-xd",))  # deflated proposed first, and accepted
    assert sent.returncode == 0, sent.stderr
    ds = pydicom.dcmread(sample)
    dataset_id = series_dataset_id(ds.SeriesInstanceUID)
    doc = wait_indexed(receiver, dataset_id)
    assert doc["number_of_instances"] == 1 and doc["modality"] == "OT"
    assert list(Quarantine(MinioStore(receiver)).ls()) == []
    stored = pydicom.dcmread(io.BytesIO(stored_object(receiver, dataset_id, ds.SOPInstanceUID)))
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian  # dcmtk deflated it again
    assert stored.PixelData == ds.PixelData and stored.SOPInstanceUID == ds.SOPInstanceUID


def test_a_deflated_instance_is_stored_byte_for_byte_as_received(receiver: Settings, tmp_path: Path,
                                                                 chunked_send: None) -> None:
    sample = Path(get_testdata_file("image_dfl.dcm"))
    ds = pydicom.dcmread(sample)
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID, [DeflatedExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", receiver.dicom_port, ae_title="NPS")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(sample).Status == 0  # the file's own deflated bytes go on the wire
    finally:
        assoc.release()
    dataset_id = series_dataset_id(ds.SeriesInstanceUID)
    wait_indexed(receiver, dataset_id)
    stored = stored_object(receiver, dataset_id, ds.SOPInstanceUID)
    assert dataset_bytes(stored) == dataset_bytes(sample.read_bytes())


def test_four_parallel_associations_lose_nothing(receiver: Settings, tmp_path: Path) -> None:
    series = [make_series(tmp_path / f"s{n}", 15, SeriesNumber=n) for n in range(2)]
    files = sorted((tmp_path / "s0").iterdir()) + sorted((tmp_path / "s1").iterdir())
    shares = [files[n::4] for n in range(4)]  # each association carries instances of both series
    results: list[list[int | None]] = []
    threads = [threading.Thread(target=lambda part=part: results.append(send(receiver.dicom_port, part)))
               for part in shares]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(s for r in results for s in r) == [0] * 30
    for uid, sops in series:
        doc = wait_indexed(receiver, series_dataset_id(uid))
        assert doc["number_of_instances"] == 15
        manifest = MinioStore(receiver).manifest(series_dataset_id(uid))
        assert {f.path for f in manifest.files if f.path.startswith("dicom/")} == {f"dicom/{s}.dcm" for s in sops}


def test_a_late_instance_amends_the_series_and_earlier_revisions_stay_readable(
        receiver: Settings, tmp_path: Path) -> None:
    uid, sops = make_series(tmp_path / "s", 5)
    assert send(receiver.dicom_port, sorted((tmp_path / "s").iterdir())) == [0] * 5
    dataset_id = series_dataset_id(uid)
    wait_indexed(receiver, dataset_id, 1)
    _, late = make_instance(tmp_path / "late.dcm", uid, number=6)
    assert send(receiver.dicom_port, [tmp_path / "late.dcm"]) == [0]
    doc = wait_indexed(receiver, dataset_id, 2)
    assert doc["number_of_instances"] == 6

    store = MinioStore(receiver)
    first, second = store.manifest(dataset_id, 1), store.manifest(dataset_id)
    assert second.revision == 2
    assert {f.path for f in first.files if f.path.startswith("dicom/")} == {f"dicom/{s}.dcm" for s in sops}
    assert second.file(f"dicom/{late}.dcm") is not None and first.file(f"dicom/{late}.dcm") is None
    assert first.file(".nps/series/r1.json") is not None and second.file(".nps/series/r2.json") is not None
    got = store.get(dataset_id, tmp_path / "rev1", manifest=first)  # what a job pinned to revision 1 sees
    assert len(list((tmp_path / "rev1" / "dicom").iterdir())) == 5 and got.revision == 1
    with pytest.raises(Exception, match="no revision 3"):
        store.manifest(dataset_id, 3)

    # Sending everything again changes nothing: the assembler handles the series (and says so)
    # without a revision 3.
    with events(receiver) as announced:
        assert send(receiver.dicom_port, [*sorted((tmp_path / "s").iterdir()), tmp_path / "late.dcm"]) == [0] * 6
        handled = announced.wait(1)
    assert [(e.dataset_id, e.revision) for e in handled] == [(dataset_id, 2)]  # type: ignore[attr-defined]
    assert store.manifest(dataset_id).revision == 2


def test_a_large_instance_is_streamed_not_held_in_memory(receiver: Settings, tmp_path: Path) -> None:
    side = 4096  # 32 MiB of pixels: above the in-memory threshold, far above the receiver's growth
    uid, _ = make_instance(tmp_path / "big.dcm", size=side, pixels=os.urandom(side * side * 2))
    pid = _receiver_pid(receiver)
    before = _peak_rss_kib(pid)
    assert send(receiver.dicom_port, [tmp_path / "big.dcm"]) == [0]
    grown_mib = (_peak_rss_kib(pid) - before) / 1024
    assert grown_mib < 16, f"receiver peak memory grew {grown_mib:.0f} MiB for a 32 MiB instance"
    doc = wait_indexed(receiver, series_dataset_id(uid))
    assert doc["bytes"] > side * side * 2


def _receiver_pid(s: Settings) -> int:
    found = [int(p) for p in os.listdir("/proc") if p.isdigit() and _is_receiver(int(p), s.dicom_port)]
    assert found, "receiver process not found"
    return found[0]


def _is_receiver(pid: int, port: int) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"receiver" in cmd and f"NPS_DICOM_PORT={port}".encode() in env


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_resent_instance_with_other_bytes_keeps_the_first_copy_and_does_not_stop_storescu(
        receiver: Settings, tmp_path: Path) -> None:
    """storescu halts on the first failure it is answered, so a differing duplicate answered
    with an error lost every instance after it; it is answered success, the first copy stays
    and the differing one waits in the quarantine for an admin."""
    uid, sops = make_series(tmp_path / "s", 4)
    make_instance(tmp_path / "s" / "i0001b.dcm", uid, sops[1], number=2, SeriesDescription="re-encoded elsewhere")
    order = ["i0000.dcm", "i0001.dcm", "i0001b.dcm", "i0002.dcm", "i0003.dcm"]  # the re-send in the middle
    sent = storescu(receiver.dicom_port, *(tmp_path / "s" / n for n in order))
    assert sent.returncode == 0, sent.stderr

    dataset_id = series_dataset_id(uid)
    doc = wait_indexed(receiver, dataset_id)
    if doc["number_of_instances"] < 4:
        doc = wait_indexed(receiver, dataset_id, doc["revision"] + 1)
    assert doc["number_of_instances"] == 4 and doc["series_description"] == "t1_mprage_sag"
    manifest = MinioStore(receiver).manifest(dataset_id)
    assert {f.path for f in manifest.files if f.path.startswith("dicom/")} == {f"dicom/{s}.dcm" for s in sops}
    kept = stored_object(receiver, dataset_id, sops[1])
    assert dataset_bytes(kept) == dataset_bytes((tmp_path / "s" / "i0001.dcm").read_bytes())  # the first copy

    items = json.loads(run_nps("quarantine", "ls", "--json", env=env_for(receiver)).stdout)
    assert [(i["reason"], i["sop_instance_uid"]) for i in items] == [("duplicate_differs", sops[1])]
    assert "duplicate with different bytes; first copy kept" in items[0]["detail"]
    held = tmp_path / "held.dcm"
    Quarantine(MinioStore(receiver)).download(items[0]["id"], held)
    assert dataset_bytes(held.read_bytes()) == dataset_bytes((tmp_path / "s" / "i0001b.dcm").read_bytes())


def test_storescu_dropping_the_padding_of_an_instance_already_stored_is_a_duplicate_not_a_failure(
        receiver: Settings, tmp_path: Path, chunked_send: None) -> None:
    """The case from the field: an instance with trailing padding (FFFC,FFFC) stored as it was
    (here sent byte for byte by pynetdicom), then sent again by storescu, which drops the padding."""
    uid, sops = make_series(tmp_path / "s", 3)
    padded = tmp_path / "s" / "i0000.dcm"
    ds = pydicom.dcmread(padded)
    ds.DataSetTrailingPadding = b"\0" * 64
    ds.save_as(padded, enforce_file_format=True)
    assert send(receiver.dicom_port, [padded], as_is=True) == [0]
    sent = storescu(receiver.dicom_port, tmp_path / "s")
    assert sent.returncode == 0, sent.stderr
    dataset_id = series_dataset_id(uid)
    doc = wait_indexed(receiver, dataset_id)
    if doc["number_of_instances"] < 3:
        doc = wait_indexed(receiver, dataset_id, doc["revision"] + 1)
    assert doc["number_of_instances"] == 3
    assert dataset_bytes(stored_object(receiver, dataset_id, sops[0])) == dataset_bytes(padded.read_bytes())
    reasons = [q.reason for q in Quarantine(MinioStore(receiver)).ls()]
    assert reasons == ["duplicate_differs"]  # storescu sent it without its padding: kept for an admin


def test_the_cli_lists_and_retries_the_quarantine(receiver: Settings, tmp_path: Path) -> None:
    series, sop = make_instance(tmp_path / "a.dcm")
    make_instance(tmp_path / "b.dcm", series, sop, SeriesDescription="different")
    make_instance(tmp_path / "c.dcm", SeriesInstanceUID=None)
    assert send(receiver.dicom_port, [tmp_path / "a.dcm", tmp_path / "b.dcm", tmp_path / "c.dcm"]) == [0, 0, 0xA900]
    env = env_for(receiver)
    items = json.loads(run_nps("quarantine", "ls", "--json", env=env).stdout)
    assert sorted(i["reason"] for i in items) == ["duplicate_differs", "missing_uid"]
    differs = next(i for i in items if i["reason"] == "duplicate_differs")
    assert differs["sop_instance_uid"] == sop
    for item in items:  # neither is taken by a retry: a differing copy never replaces the first
        again = run_nps("quarantine", "retry", item["id"], env=env, ok=False)
        assert again.returncode == 1 and "still refused" in again.stderr
        assert run_nps("quarantine", "show", item["id"], env=env).stdout.count(item["id"]) >= 1
    bad = run_nps("quarantine", "show", "../../etc", env=env, ok=False)
    assert bad.returncode == 1 and "not a quarantine id" in bad.stderr
    run_nps("quarantine", "rm", *(i["id"] for i in items), env=env)
    assert json.loads(run_nps("quarantine", "ls", "--json", env=env).stdout) == []


def test_the_receiver_command_refuses_a_port_in_use(receiver: Settings) -> None:
    result = subprocess.run([sys.executable, "-m", "nps", "receiver", "--processes", "1", "--port",
                             str(receiver.dicom_port)], env=env_for(receiver), cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{receiver.dicom_port}" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_stops_the_receiver_cleanly(pipeline: Settings, tmp_path: Path) -> None:
    log = tmp_path / "receiver.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nps", "receiver", "--processes", "2"], env=env_for(pipeline),
                                cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        from tests.ingest.conftest import wait_for_echo

        wait_for_echo(pipeline.dicom_port, proc)
        make_instance(tmp_path / "a.dcm")
        assert send(pipeline.dicom_port, [tmp_path / "a.dcm"]) == [0]
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in log.read_text(), log.read_text()
    assert echo(pipeline.dicom_port) is None  # the port is closed


def test_the_calling_ae_title_decides_the_project(pipeline: Settings, processes: Any, tmp_path: Path) -> None:
    env = env_for(pipeline) | {"NPS_AE_PROJECTS": '{"MRI3T": "alpha", "PETCT": "beta"}', "NPS_PROJECT": "lab"}
    from tests.ingest.conftest import wait_for_echo

    wait_for_echo(pipeline.dicom_port, processes("receiver", "--processes", "1", env=env))
    sent = {}
    for calling in ("MRI3T", "PETCT", "ELSEWHERE"):
        series, _ = make_series(tmp_path / calling, 2)
        assert send(pipeline.dicom_port, sorted((tmp_path / calling).iterdir()), calling=calling) == [0, 0]
        sent[calling] = series_dataset_id(series)
    projects = {calling: wait_indexed(pipeline, dataset_id)["project"] for calling, dataset_id in sent.items()}
    assert projects == {"MRI3T": "alpha", "PETCT": "beta", "ELSEWHERE": "lab"}
    assert MinioStore(pipeline).record(sent["MRI3T"]).project == "alpha"


def test_the_same_instances_received_then_imported_from_disk_are_duplicates_not_conflicts(
        receiver: Settings, tmp_path: Path) -> None:
    """The receiver writes its own file header in front of what it receives, so its bytes differ
    from the sender's file in group 0002 only; the same data set (same transfer syntax, same
    bytes) is the same instance."""
    uid, _ = make_series(tmp_path / "s", 3)
    assert send(receiver.dicom_port, sorted((tmp_path / "s").iterdir()), as_is=True) == [0, 0, 0]
    dataset_id = series_dataset_id(uid)
    wait_indexed(receiver, dataset_id)
    stored = {f.path: f.blake3 for f in MinioStore(receiver).manifest(dataset_id).files}

    with events(receiver) as announced:  # the import closes its batch: the assembler handles it at once
        result = run_nps("import", "--json", str(tmp_path / "s"), env=env_for(receiver))
        report = json.loads(result.stdout)
        assert report["instances_stored"] == 0 and report["already_stored"] == 3 and report["quarantined"] == 0
        assert list(Quarantine(MinioStore(receiver)).ls()) == []
        handled = announced.wait(1)
    assert [(e.dataset_id, e.revision) for e in handled] == [(dataset_id, 1)]  # type: ignore[attr-defined]
    manifest = MinioStore(receiver).manifest(dataset_id)
    assert manifest.revision == 1 and {f.path: f.blake3 for f in manifest.files} == stored
