"""Blobs (job records, users, groups...) on both stores: the local folder and the real MinIO."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from nps.blobs import Blobs, LocalBlobs
from nps.errors import InvalidPath
from nps.store import DatasetStore, LocalStore
from nps.store.objects import ObjectStore

PROCESSES = 4
INCREMENTS = 100


@pytest.fixture
def blobs(store: DatasetStore) -> Blobs:
    assert isinstance(store, ObjectStore)
    return Blobs(store)


def test_blobs_put_get_create_list_and_delete(blobs: Blobs, tmp_path: Path) -> None:
    blobs.put("jobs/j1/request.json", b"{}")
    blobs.put("jobs/j2/request.json", b"{}")
    assert blobs.get("jobs/j1/request.json") == b"{}"
    assert blobs.get("jobs/j3/request.json") is None
    assert sorted(blobs.children("jobs")) == ["j1", "j2"]
    assert blobs.create("layers/d/000001.json", b"first")
    assert not blobs.create("layers/d/000001.json", b"second")
    assert blobs.get("layers/d/000001.json") == b"first"
    log = tmp_path / "run.log"
    log.write_bytes(b"line\n" * 1000)
    blobs.put_file("jobs/j1/run.log", log)
    assert blobs.get("jobs/j1/run.log") == log.read_bytes()
    blobs.delete("jobs/j2/request.json")
    blobs.delete("jobs/j2/request.json")  # already gone: no error
    assert list(blobs.children("jobs")) == ["j1"]
    with pytest.raises(InvalidPath):
        blobs.get("jobs/../../etc/passwd")


def test_replace_if_refuses_a_version_someone_else_replaced(blobs: Blobs) -> None:
    blobs.put("jobs/j1/status.json", b"QUEUED")
    mine, theirs = blobs.get_versioned("jobs/j1/status.json"), blobs.get_versioned("jobs/j1/status.json")
    assert mine is not None and theirs is not None
    assert blobs.replace_if("jobs/j1/status.json", b"QUEUED,RUNNING", theirs.etag)
    assert not blobs.replace_if("jobs/j1/status.json", b"QUEUED,FAILED", mine.etag)  # would erase RUNNING
    assert blobs.get("jobs/j1/status.json") == b"QUEUED,RUNNING"
    assert not blobs.replace_if("jobs/j9/status.json", b"x", mine.etag)  # no such object


def _count(where: dict[str, str], increments: int, go: Any) -> None:
    """Add one to the counter ``increments`` times, reading then replacing only the version read."""
    from nps.config import load_settings
    from nps.store.minio import MinioStore

    if "home" in where:
        blobs: Blobs = LocalBlobs(Path(where["home"]))
    else:
        blobs = Blobs(MinioStore(load_settings().model_copy(update={"minio_bucket": where["bucket"]})))
    go.wait(60)  # every process starts counting at the same moment
    done = 0
    while done < increments:
        found = blobs.get_versioned("counter")
        assert found is not None
        if blobs.replace_if("counter", str(int(found.data) + 1).encode(), found.etag):
            done += 1


def test_racing_processes_that_read_then_replace_if_lose_no_update(blobs: Blobs, store: DatasetStore) -> None:
    blobs.put("counter", b"0")
    where = {"home": str(store.home)} if isinstance(store, LocalStore) else {"bucket": store.bucket}  # type: ignore[attr-defined]
    spawn = multiprocessing.get_context("spawn")
    go = spawn.Barrier(PROCESSES)
    workers = [spawn.Process(target=_count, args=(where, INCREMENTS, go)) for _ in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    assert blobs.get("counter") == str(PROCESSES * INCREMENTS).encode()
