"""The assembler as a real process: killed with instances in hand, fed garbage, and gc beside it.

Tests wait for what they can observe on the broker (the queue's consumers, its ready
messages) or in the store, never for a fixed time."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from nps.broker import Publisher, browse_dlq, topology
from nps.config import Settings
from nps.hashing import series_dataset_id
from nps.ingest import Ingestor
from nps.store.minio import MinioStore
from tests.dicom.factory import make_series
from tests.ingest.conftest import env_for
from tests.ingest.waits import wait_committed, wait_queue


def _ingest(s: Settings, folder: Path) -> None:
    ingestor = Ingestor(MinioStore(s), topology(s))
    try:
        for f in sorted(folder.iterdir()):
            assert ingestor.ingest(f, "test").status == "stored"
    finally:
        ingestor.close()


def test_an_assembler_killed_before_committing_loses_nothing(
        ingest_settings: Settings, processes: Callable[..., subprocess.Popen[str]], tmp_path: Path) -> None:
    # The first assembler would wait ten minutes for the series to be stable: it holds the
    # instances, uncommitted, until it is killed.
    holding = ingest_settings.model_copy(update={"series_stable_seconds": 600.0})
    instances = topology(holding).instances
    first = processes("worker", "assemble", env=env_for(holding))
    wait_queue(holding, instances, lambda q: q.consumers == 1, "the assembler subscribed")
    uid, sops = make_series(tmp_path / "s", 8)
    _ingest(holding, tmp_path / "s")
    wait_queue(holding, instances, lambda q: q.ready == 0, "all 8 instances delivered to the assembler")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    store = MinioStore(holding)
    dataset_id = series_dataset_id(uid)
    assert not store.exists(dataset_id)
    assert store.gc().kept_in_progress == [dataset_id]  # announced instances are not litter
    wait_queue(holding, instances, lambda q: q.consumers == 0 and q.ready == 8, "the held instances back in the queue")
    processes("worker", "assemble", env=env_for(ingest_settings))  # stable after 1 s
    wait_committed(store, dataset_id)
    manifest = store.manifest(dataset_id)
    assert manifest.revision == 1
    assert {f.path for f in manifest.files if f.path.startswith("dicom/")} == {f"dicom/{x}.dcm" for x in sops}


def test_a_closed_import_batch_commits_without_waiting_for_the_stable_age(
        ingest_settings: Settings, processes: Callable[..., subprocess.Popen[str]], tmp_path: Path) -> None:
    s = ingest_settings.model_copy(update={"series_stable_seconds": 600.0})
    processes("worker", "assemble", env=env_for(s))
    uid, _ = make_series(tmp_path / "s", 3)
    ingestor = Ingestor(MinioStore(s), topology(s))
    batch = uuid.uuid4()
    try:
        for f in sorted((tmp_path / "s").iterdir()):
            ingestor.ingest(f, "test", batch_id=batch)
        ingestor.close_batch(batch, {series_dataset_id(uid)})
    finally:
        ingestor.close()
    wait_committed(MinioStore(s), series_dataset_id(uid), timeout=30)


@pytest.mark.parametrize("body", [b"not json", b'{"type": "instance.received", "version": 1}',
                                  b'{"type": "job.status", "version": 1, "job_id": "' + b"a" * 40
                                  + b'", "state": "QUEUED"}'])
def test_malformed_messages_are_dead_lettered_with_their_reason(
        ingest_settings: Settings, processes: Callable[..., subprocess.Popen[str]], tmp_path: Path,
        body: bytes) -> None:
    processes("worker", "assemble", env=env_for(ingest_settings))
    topo = topology(ingest_settings)
    publisher = Publisher(topo)
    try:
        publisher.publish_raw("", topo.instances, body, message_id="bad-1")
    finally:
        publisher.close()
    # And a good series behind it still gets through.
    uid, _ = make_series(tmp_path / "s", 2)
    _ingest(ingest_settings.model_copy(update={"series_stable_seconds": 1.0}), tmp_path / "s")
    wait_committed(MinioStore(ingest_settings), series_dataset_id(uid))
    letters = list(browse_dlq(topo, queue="instances"))
    assert [d.message_id for d in letters] == ["bad-1"]
    assert "malformed" in letters[0].reason and letters[0].body == body
