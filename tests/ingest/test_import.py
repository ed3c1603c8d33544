"""`nps import` on folders, archives and single files, as a user runs it (the CLI, real services)."""

from __future__ import annotations

import json
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from nps.config import Settings
from nps.hashing import series_dataset_id
from nps.store.minio import MinioStore
from schemas.messages import DatasetCreated
from tests.dicom.factory import make_instance, make_series
from tests.ingest.conftest import env_for, wait_indexed
from tests.ingest.waits import events
from tests.jobs.conftest import run_nps


@pytest.fixture
def slow_pipeline(ingest_settings: Settings, processes: Callable[..., subprocess.Popen[str]]) -> Settings:
    """Assembler and indexer with a stable age far beyond the test: only a closed batch commits."""
    s = ingest_settings.model_copy(update={"series_stable_seconds": 600.0})
    processes("worker", "assemble", env=env_for(s))
    processes("worker", "index", env=env_for(s))
    return s


def import_json(s: Settings, *paths: Path, ok: bool = True) -> dict[str, object]:
    result = run_nps("import", "--json", *map(str, paths), env=env_for(s), ok=ok)
    return dict(json.loads(result.stdout))


def test_folders_archives_and_files_import_into_series_and_reimport_changes_nothing(
        slow_pipeline: Settings, tmp_path: Path) -> None:
    data = tmp_path / "cd"
    a, _ = make_series(data / "patient" / "seriesA", 4)
    b, _ = make_series(data / "patient" / "nested" / "seriesB", 3)
    (data / "README.txt").write_text("burned by the scanner console\n")
    make_instance(data / "DICOMDIR", SOPClassUID="1.2.840.10008.1.3.10")
    c, _ = make_series(tmp_path / "forzip", 2)
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as z:
        for f in sorted((tmp_path / "forzip").iterdir()):
            z.write(f, f"dir/{f.name}")
    d, _ = make_series(tmp_path / "fortar", 2)
    with tarfile.open(tmp_path / "d.tar.gz", "w:gz") as t:
        t.add(tmp_path / "fortar", arcname="d")
    e, _ = make_instance(tmp_path / "single.dcm")

    report = import_json(slow_pipeline, data, tmp_path / "c.zip", tmp_path / "d.tar.gz", tmp_path / "single.dcm")
    assert report["instances_stored"] == 12 and report["already_stored"] == 0
    assert report["skipped"] == {"not_dicom": 1, "not_an_instance": 1} and report["quarantined"] == 0
    ids = {series_dataset_id(u): n for u, n in ((a, 4), (b, 3), (c, 2), (d, 2), (e, 1))}
    assert sorted(report["series"]) == sorted(ids)  # type: ignore[arg-type]
    for dataset_id, count in ids.items():  # committed at once: the batch was closed
        assert wait_indexed(slow_pipeline, dataset_id, timeout=60)["number_of_instances"] == count

    with events(slow_pipeline) as announced:  # the assembler announces each series it handled
        again = import_json(slow_pipeline, data, tmp_path / "c.zip", tmp_path / "d.tar.gz",
                            tmp_path / "single.dcm")
        assert again["instances_stored"] == 0 and again["already_stored"] == 12
        handled = announced.wait(len(ids))
    assert all(isinstance(e, DatasetCreated) for e in handled)
    assert sorted((e.dataset_id, e.revision) for e in handled) == sorted((i, 1) for i in ids)  # type: ignore[union-attr]
    store = MinioStore(slow_pipeline)
    assert {store.manifest(i).revision for i in ids} == {1}


def test_refused_dicom_is_quarantined_and_reported(slow_pipeline: Settings, tmp_path: Path) -> None:
    uid, _ = make_instance(tmp_path / "in" / "good.dcm", size=64)
    whole = (tmp_path / "in" / "good.dcm").read_bytes()
    (tmp_path / "in" / "truncated.dcm").write_bytes(whole[:-300])
    make_instance(tmp_path / "in" / "nouid.dcm", SOPInstanceUID=None)
    result = run_nps("import", str(tmp_path / "in"), env=env_for(slow_pipeline))
    assert "1 instance(s) stored" in result.stderr and "2 skipped (2 quarantined)" in result.stderr
    assert "skipped as truncated: 1" in result.stderr and "skipped as missing_uid: 1" in result.stderr
    assert result.stdout.split() == [series_dataset_id(uid)]
    listed = json.loads(run_nps("quarantine", "ls", "--json", env=env_for(slow_pipeline)).stdout)
    assert sorted(i["reason"] for i in listed) == ["missing_uid", "truncated"]


def test_a_reimported_instance_with_other_bytes_keeps_the_first_copy_and_reports_the_other(
        slow_pipeline: Settings, tmp_path: Path) -> None:
    uid, sop = make_instance(tmp_path / "cd" / "a.dcm", size=64)
    first = (tmp_path / "cd" / "a.dcm").read_bytes()
    make_instance(tmp_path / "pacs" / "a.dcm", series_uid=uid, sop_uid=sop, size=64, PatientName="Re^Encoded")
    assert import_json(slow_pipeline, tmp_path / "cd")["instances_stored"] == 1
    result = run_nps("import", str(tmp_path / "pacs"), env=env_for(slow_pipeline))  # exit 0: nothing failed
    assert "duplicate with different bytes; first copy kept" in result.stderr
    assert "1 quarantined" in result.stderr
    listed = json.loads(run_nps("quarantine", "ls", "--json", env=env_for(slow_pipeline)).stdout)
    assert [(i["reason"], i["sop_instance_uid"]) for i in listed] == [("duplicate_differs", sop)]
    dataset_id = series_dataset_id(uid)
    wait_indexed(slow_pipeline, dataset_id, timeout=60)
    kept = b"".join(MinioStore(slow_pipeline).read(dataset_id, f"dicom/{sop}.dcm"))
    assert kept[kept.index(b"DICM") + 4:] == first[first.index(b"DICM") + 4:]


@pytest.mark.parametrize("make_bad", ["missing", "bad_zip", "bad_tar"])
def test_unreadable_paths_fail_clearly_and_import_nothing(slow_pipeline: Settings, tmp_path: Path,
                                                          make_bad: str) -> None:
    path = tmp_path / {"missing": "nope", "bad_zip": "x.zip", "bad_tar": "x.tar.gz"}[make_bad]
    if make_bad != "missing":
        path.write_bytes(b"this is not an archive" * 10)
    result = run_nps("import", str(path), env=env_for(slow_pipeline), ok=False)
    assert result.returncode == 1
    assert "error:" in result.stderr and str(path) in result.stderr and "Traceback" not in result.stderr


def test_import_without_a_broker_fails_and_says_to_run_it_again(slow_pipeline: Settings, tmp_path: Path) -> None:
    uid, _ = make_instance(tmp_path / "a.dcm")
    env = env_for(slow_pipeline) | {"NPS_AMQP_URL": "amqp://nps:wrong@127.0.0.1:1/%2F"}
    result = run_nps("import", str(tmp_path / "a.dcm"), env=env, ok=False)
    assert result.returncode == 1 and "1 failed" in result.stderr and "run the same import again" in result.stderr
    # The series the failed file belongs to is named, and not presented as complete.
    assert f"series {series_dataset_id(uid)}: 1 file(s) failed, so this import did not close it" in result.stderr
