"""The DICOM receiver over loopback with real senders (dcmtk's storescu, pynetdicom), real
RabbitMQ, MinIO and Elasticsearch, and the assembler and indexer as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import _config

from nps.config import Settings
from nps.hashing import series_dataset_id
from nps.ingest import Quarantine
from nps.store.minio import MinioStore
from tests.conftest import REPO, dcmtk
from tests.dicom.factory import make_instance, make_series
from tests.ingest.conftest import echo, env_for, send, wait_indexed
from tests.jobs.conftest import run_nps


def storescu(port: int, *paths: Path, calling: str = "STORESCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("storescu"), "-aet", calling, "-aec", "NPS", "+sd", "127.0.0.1", str(port),
                           *map(str, paths)], env=dict(os.environ, TCP_NODELAY="1"), capture_output=True,
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
    make_instance(tmp_path / "conflict.dcm", series, sop, SeriesDescription="other bytes, same SOP")
    make_instance(tmp_path / "noseries.dcm", SeriesInstanceUID=None)
    make_instance(tmp_path / "badseries.dcm", series_uid="1.2.3/../../etc")
    make_instance(tmp_path / "DICOMDIR", SOPClassUID="1.2.840.10008.1.3.10")
    statuses = send(port, [tmp_path / n for n in ("good.dcm", "good.dcm", "conflict.dcm", "noseries.dcm",
                                                   "badseries.dcm")])
    assert statuses == [0x0000, 0x0000, 0xC002, 0xA900, 0xA901]

    reasons = sorted(q.reason for q in Quarantine(MinioStore(receiver)).ls())
    assert reasons == ["conflict", "invalid_uid", "missing_uid"]
    doc = wait_indexed(receiver, series_dataset_id(series))
    assert doc["number_of_instances"] == 1  # the duplicate counted once, the conflict not at all


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
    (tmp_path / "truncated.dcm").write_bytes(data[:-200])
    statuses = send(receiver.dicom_port, [tmp_path / "garbage.dcm", tmp_path / "truncated.dcm",
                                          tmp_path / "whole.dcm"], as_is=True)
    assert statuses[0] in (0xC000, 0xC001, 0xA900)
    assert statuses[1] == 0xC001
    assert statuses[2] == 0x0000
    assert len(list(Quarantine(MinioStore(receiver)).ls())) == 2


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

    # Sending everything again changes nothing: no revision 3.
    assert send(receiver.dicom_port, [*sorted((tmp_path / "s").iterdir()), tmp_path / "late.dcm"]) == [0] * 6
    time.sleep(receiver.series_stable_seconds + 4)
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


def test_the_cli_lists_and_retries_the_quarantine(receiver: Settings, tmp_path: Path) -> None:
    series, sop = make_instance(tmp_path / "a.dcm")
    make_instance(tmp_path / "b.dcm", series, sop, SeriesDescription="different")
    assert send(receiver.dicom_port, [tmp_path / "a.dcm", tmp_path / "b.dcm"]) == [0, 0xC002]
    env = env_for(receiver)
    listed = run_nps("quarantine", "ls", "--json", env=env).stdout
    import json

    items = json.loads(listed)
    assert [i["reason"] for i in items] == ["conflict"] and items[0]["sop_instance_uid"] == sop
    qid = items[0]["id"]
    again = run_nps("quarantine", "retry", qid, env=env, ok=False)
    assert again.returncode == 1 and "still refused" in again.stderr
    assert run_nps("quarantine", "show", qid, env=env).stdout.count(qid) >= 1
    bad = run_nps("quarantine", "show", "../../etc", env=env, ok=False)
    assert bad.returncode == 1 and "not a quarantine id" in bad.stderr
    run_nps("quarantine", "rm", qid, env=env)
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

    result = run_nps("import", "--json", str(tmp_path / "s"), env=env_for(receiver))
    import json

    report = json.loads(result.stdout)
    assert report["instances_stored"] == 0 and report["already_stored"] == 3 and report["quarantined"] == 0
    assert list(Quarantine(MinioStore(receiver)).ls()) == []
    time.sleep(receiver.series_stable_seconds + 3)
    manifest = MinioStore(receiver).manifest(dataset_id)
    assert manifest.revision == 1 and {f.path: f.blake3 for f in manifest.files} == stored
