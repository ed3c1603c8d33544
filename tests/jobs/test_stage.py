"""The staging cache: content addressed, shared, LRU-evicted, never evicting what a job uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nps.config import Settings
from nps.jobs.stage import InputUnavailable, StageCache
from nps.store.minio import MinioStore
from schemas.job import JobInput
from tests.store.helpers import make_tree, put_dir


@pytest.fixture
def minio_store(minio_settings: Settings) -> MinioStore:
    return MinioStore(minio_settings)


def dataset(store: MinioStore, tmp_path: Path, name: str, size: int) -> JobInput:
    ds = put_dir(store, make_tree(tmp_path / name, {"data.bin": os.urandom(size)}))
    return JobInput(dataset=ds, revision=1, mount=f"/in/{name}")


def test_a_second_job_on_the_same_input_downloads_nothing(minio_store: MinioStore, tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "stage", limit_bytes=10**9)
    inp = dataset(minio_store, tmp_path, "a", 100_000)
    with cache.staged(minio_store, (inp,)) as mounts:
        staged = mounts["/in/a"]
        first_inode = (staged / "data.bin").stat().st_ino
    # Take the bytes out of MinIO: a second job can only succeed from the cache.
    minio_store.delete_object(minio_store.key(inp.dataset, "data.bin"))
    with cache.staged(minio_store, (inp,)) as mounts:
        assert (mounts["/in/a"] / "data.bin").stat().st_ino == first_inode
        assert (mounts["/in/a"] / "data.bin").stat().st_size == 100_000


def test_least_recently_used_entries_are_evicted_but_never_one_in_use(
    minio_store: MinioStore, tmp_path: Path
) -> None:
    cache = StageCache(tmp_path / "stage", limit_bytes=250_000)
    a, b, c = (dataset(minio_store, tmp_path, n, 100_000) for n in "abc")
    with cache.staged(minio_store, (a,)):
        pass
    with cache.staged(minio_store, (b,)):
        pass
    with cache.staged(minio_store, (a,)):  # a is now more recent than b
        pass
    with cache.staged(minio_store, (c,)) as mounts:
        # Over the limit: b (least recently used) goes, even while c is in use.
        assert cache.evict() == [f"{b.dataset}.r1"]
        cache.limit_bytes = 0
        evicted = cache.evict()
        assert f"{c.dataset}.r1" not in evicted  # in use
        assert (mounts["/in/c"] / "data.bin").is_file()
    assert cache.size() == 0  # released: the block's end evicted it down to the (now zero) limit


def test_an_input_that_vanished_or_changed_revision_is_reported(minio_store: MinioStore, tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "stage", limit_bytes=10**9)
    inp = dataset(minio_store, tmp_path, "a", 1000)
    with pytest.raises(InputUnavailable, match=r"revision 2 .* has no revision 2 \(latest is 1\)"), \
            cache.staged(minio_store, (inp.model_copy(update={"revision": 2}),)):
        pass
    minio_store.delete(inp.dataset)
    with pytest.raises(InputUnavailable, match="no longer exists"), cache.staged(minio_store, (inp,)):
        pass


def test_leftovers_of_dead_processes_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from nps.jobs.sweep import sweep
    from nps.locks import held

    cache = StageCache(tmp_path / "stage", limit_bytes=10**9)
    cache.root.mkdir()
    dead_tmp = cache.root / ".tmp-abc.r1-1234abcd"
    dead_tmp.mkdir()
    work = tmp_path / "work"
    (work / "job-dead-1").mkdir(parents=True)
    (work / "job-live-1").mkdir()
    # A real second process holds the live folder's lock (and the live download's fill lock).
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, time, sys\n"
        f"a = os.open({str(work / 'job-live-1.lock')!r}, os.O_CREAT | os.O_RDWR)\n"
        f"b = os.open({str(cache.root / 'xyz.r1.fill')!r}, os.O_CREAT | os.O_RDWR)\n"
        "fcntl.flock(a, fcntl.LOCK_EX); fcntl.flock(b, fcntl.LOCK_EX)\n"
        "print('locked', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
    live_tmp = cache.root / ".tmp-xyz.r1-5678abcd"
    live_tmp.mkdir()
    try:
        assert sweep(work, "job-*") == ["job-dead-1"]
        assert cache.sweep() == [dead_tmp.name]
        assert (work / "job-live-1").is_dir() and live_tmp.is_dir()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert sweep(work, "job-*") == ["job-live-1"]  # its process died: now it is garbage
    assert cache.sweep() == [live_tmp.name]
    with held(work / "job-x.lock"):
        (work / "job-x").mkdir()
        assert sweep(work, "job-*") == []
