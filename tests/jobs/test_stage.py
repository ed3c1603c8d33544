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
    minio_store.client.remove_object(minio_store.bucket, minio_store.key(inp.dataset, "data.bin"))
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
    with pytest.raises(InputUnavailable, match="revision 1, the job pinned revision 2"), \
            cache.staged(minio_store, (inp.model_copy(update={"revision": 2}),)):
        pass
    minio_store.delete(inp.dataset)
    with pytest.raises(InputUnavailable, match="no longer exists"), cache.staged(minio_store, (inp,)):
        pass
