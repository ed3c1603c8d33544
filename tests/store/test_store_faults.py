"""Writers killed mid-put, writers racing on one id, readers watching a put: real processes, real MinIO."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from nps.errors import DatasetNotFound
from nps.store import DatasetStore, LocalStore
from tests.conftest import REPO, store_env
from tests.store.helpers import make_tree, record, stored_keys

WRITER = [sys.executable, str(REPO / "tests" / "store" / "writer.py")]
DATASET = "c0ffee00" * 5


def many_files(root: Path, n: int, size: int, tag: bytes = b"") -> Path:
    return make_tree(root, {f"f{i:04d}.bin": tag + os.urandom(size) for i in range(n)})


def start_writer(store: DatasetStore, source: Path, dataset_id: str = DATASET) -> subprocess.Popen[str]:
    env = store_env(store) | {"NPS_TRANSFER_WORKERS": "2"}
    return subprocess.Popen([*WRITER, dataset_id, str(source)], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_partial_write(store: DatasetStore, minimum: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if isinstance(store, LocalStore):
            staged = list(store.tmp.glob(f"put-{DATASET}-*/*")) if store.tmp.exists() else []
            if len(staged) >= minimum:
                return
        elif len(stored_keys(store, DATASET)) >= minimum:
            return
        assert proc.poll() is None, f"writer finished before it could be killed: {proc.communicate()}"
        time.sleep(0.01)
    pytest.fail("writer never started writing")


@pytest.mark.parametrize("progress", [1, 40, 150])
def test_a_writer_killed_mid_put_leaves_nothing_visible_and_gc_cleans_up(
    store: DatasetStore, tmp_path: Path, progress: int
) -> None:
    src = many_files(tmp_path / "src", 200, 20_000)
    proc = start_writer(store, src)
    wait_for_partial_write(store, progress, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert not store.exists(DATASET)
    assert DATASET not in list(store.ids())
    with pytest.raises(DatasetNotFound):
        store.manifest(DATASET)
    assert stored_keys(store, DATASET), "the killed writer should have left something for gc"

    if not isinstance(store, LocalStore):
        time.sleep(store.lease + 0.5)  # type: ignore[attr-defined]  # the dead writer's claim must expire first
    report = store.gc()
    assert DATASET in " ".join(report.removed_partial)
    assert stored_keys(store, DATASET) == []

    # The redelivered job puts the same dataset again and it completes once.
    store.put(DATASET, src, record(DATASET, src))
    assert store.verify(DATASET).dataset_id == DATASET


def test_a_new_writer_takes_over_from_a_dead_one_without_waiting_for_gc(store: DatasetStore, tmp_path: Path) -> None:
    src = many_files(tmp_path / "src", 200, 20_000)
    proc = start_writer(store, src)
    wait_for_partial_write(store, 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    other = many_files(tmp_path / "other", 3, 1000)
    manifest = store.put(DATASET, other, record(DATASET, other))
    assert sorted(f.path for f in manifest.files) == [".nps/dataset.json", "f0000.bin", "f0001.bin", "f0002.bin"]
    if not isinstance(store, LocalStore):
        assert len(stored_keys(store, DATASET)) == 5, "the dead writer's stray objects were not removed"
    store.verify(DATASET)


def test_two_writers_racing_on_one_id_end_with_one_consistent_dataset(store: DatasetStore, tmp_path: Path) -> None:
    # Two runs of one job may write different bytes (timestamps...); exactly one version must win whole.
    a = many_files(tmp_path / "a", 60, 5_000, b"A")
    b = many_files(tmp_path / "b", 60, 5_000, b"B")
    procs = [start_writer(store, a), start_writer(store, b)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs

    manifest = store.verify(DATASET)
    winner = {b"".join(store.read(DATASET, f"f{i:04d}.bin", 0, 1)) for i in range(60)}
    assert winner in ({b"A"}, {b"B"}), "files from both writers were mixed in one dataset"
    source = a if winner == {b"A"} else b
    for f in manifest.files:
        if not f.path.startswith(".nps/"):
            assert b"".join(store.read(DATASET, f.path)) == (source / f.path).read_bytes()
    if not isinstance(store, LocalStore):
        assert len(stored_keys(store, DATASET)) == 62  # 60 files, dataset.json, manifest: no strays, no claim


def test_readers_never_see_a_dataset_before_it_is_complete(store: DatasetStore, tmp_path: Path) -> None:
    src = many_files(tmp_path / "src", 150, 10_000)
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        # Poll until the dataset appears (one last look after the writer returned).
        while True:
            finished = done.is_set()
            if store.exists(DATASET):
                seen.append(len(store.verify(DATASET).files))
                return
            if finished:
                return
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    store.put(DATASET, src, record(DATASET, src))
    done.set()
    watcher.join()
    assert seen == [151], f"a reader saw an incomplete dataset: {seen}"
    assert len(store.verify(DATASET).files) == 151


def test_a_holder_whose_lock_was_taken_over_never_removes_the_successors_lock(minio_settings: object) -> None:
    """A holder paused past its lease (a long GC pause, a frozen VM) is taken over; when it wakes
    and releases, the successor's lock must survive, and the old holder learns it lost it."""
    import json

    from nps.store.minio import MinioStore

    store = MinioStore(minio_settings)  # type: ignore[arg-type]
    key = "locks/job-x.json"
    with store.exclusive("job-x") as held:
        assert held
        # The successor's takeover, as _take_over_if_stale writes it (a real conditional write).
        store.put_object(key, json.dumps({"writer": "successor"}).encode())
        time.sleep(store.lease)  # the old holder's heartbeat runs, finds someone else there
    found = store.get_object(key)
    assert found is not None and json.loads(found.data)["writer"] == "successor"  # the release left it alone
