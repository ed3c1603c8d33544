"""What the object interface promises, run against the local folder store and the real MinIO."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from nps.config import Settings
from nps.errors import InvalidPath, NPSError, PreconditionFailed, StoreUnavailable
from nps.store import DatasetStore
from nps.store.objects import ObjectStore


@pytest.fixture
def objects(store: DatasetStore) -> ObjectStore:
    assert isinstance(store, ObjectStore)
    return store


def test_an_object_reads_back_with_the_etag_its_write_returned(objects: ObjectStore) -> None:
    etag = objects.put_object("jobs/a/status.json", b'{"state": "QUEUED"}')
    found = objects.get_object("jobs/a/status.json")
    assert found is not None and (found.data, found.etag) == (b'{"state": "QUEUED"}', etag)
    info = objects.stat_object("jobs/a/status.json")
    assert info is not None and (info.key, info.size, info.etag) == ("jobs/a/status.json", 19, etag)
    assert info.modified is not None
    assert objects.put_object("jobs/a/status.json", b"{}") != etag  # another version, another ETag


def test_a_missing_object_is_none_not_an_error(objects: ObjectStore, tmp_path: Path) -> None:
    assert objects.get_object("no/such/object") is None
    assert objects.stat_object("no/such/object") is None
    assert objects.get_object_file("no/such/object", tmp_path / "out") is False
    assert not (tmp_path / "out").exists()
    objects.delete_object("no/such/object")  # nothing to remove: no error
    assert list(objects.list_objects("no/such/")) == []


def test_a_write_for_an_absent_object_never_replaces_one(objects: ObjectStore) -> None:
    etag = objects.put_object("layers/x/000001.json", b"first", if_absent=True)
    with pytest.raises(PreconditionFailed):
        objects.put_object("layers/x/000001.json", b"second", if_absent=True)
    found = objects.get_object("layers/x/000001.json")
    assert found is not None and (found.data, found.etag) == (b"first", etag)


def test_a_write_for_a_known_version_fails_once_someone_else_wrote(objects: ObjectStore) -> None:
    read = objects.put_object("auth/users/ann.json", b"v1")
    mine = objects.put_object("auth/users/ann.json", b"v2 (mine)", if_match=read)
    with pytest.raises(PreconditionFailed):  # a second writer that read v1 too
        objects.put_object("auth/users/ann.json", b"v2 (theirs)", if_match=read)
    found = objects.get_object("auth/users/ann.json")
    assert found is not None and (found.data, found.etag) == (b"v2 (mine)", mine)
    objects.delete_object("auth/users/ann.json")
    with pytest.raises(PreconditionFailed):  # gone: no version of it matches
        objects.put_object("auth/users/ann.json", b"v3", if_match=mine)
    assert objects.get_object("auth/users/ann.json") is None


def test_asking_for_an_absent_object_and_a_version_at_once_is_refused(objects: ObjectStore) -> None:
    with pytest.raises(ValueError, match="not both"):
        objects.put_object("a.json", b"x", if_absent=True, if_match="abc")


def _race(writers: int, write: Callable[[int], Any]) -> list[int]:
    """Run ``write(n)`` in ``writers`` threads released at once; the numbers of those that won."""
    start, won, lock = threading.Barrier(writers), [], threading.Lock()

    def run(n: int) -> None:
        start.wait()
        try:
            write(n)
        except PreconditionFailed:
            return
        with lock:
            won.append(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_of_many_concurrent_writers_of_one_version_exactly_one_wins(objects: ObjectStore) -> None:
    for round_ in range(5):
        read = objects.put_object("jobs/b/status.json", f"round {round_}".encode())
        won = _race(8, lambda n, etag=read: objects.put_object("jobs/b/status.json", f"writer {n}".encode(),
                                                                if_match=etag))
        assert len(won) == 1
        found = objects.get_object("jobs/b/status.json")
        assert found is not None and found.data == f"writer {won[0]}".encode()


def test_of_many_concurrent_creators_exactly_one_wins(objects: ObjectStore) -> None:
    for round_ in range(5):
        key = f"locks/race-{round_}.json"
        won = _race(8, lambda n, key=key: objects.put_object(key, f"writer {n}".encode(), if_absent=True))
        assert len(won) == 1
        found = objects.get_object(key)
        assert found is not None and found.data == f"writer {won[0]}".encode()


def test_listings_give_objects_in_key_order_and_folders_one_level_down(objects: ObjectStore) -> None:
    for key in ["q/b/reason.json", "q/b/instance", "q/a/instance", "q/a/reason.json", "q/top.json", "qq/x"]:
        objects.put_object(key, key.encode())
    assert [(o.key, o.size) for o in objects.list_objects("q/")] == [
        ("q/a/instance", 12), ("q/a/reason.json", 15), ("q/b/instance", 12), ("q/b/reason.json", 15),
        ("q/top.json", 10)]
    level = sorted(objects.list_objects("q/", recursive=False), key=lambda o: o.key)  # one level: any order
    assert [(o.key, o.is_folder) for o in level] == [("q/a/", True), ("q/b/", True), ("q/top.json", False)]
    assert [o.key for o in objects.list_objects("q")] == [  # a prefix, not a folder: qq/ too
        "q/a/instance", "q/a/reason.json", "q/b/instance", "q/b/reason.json", "q/top.json", "qq/x"]
    assert [o.key for o in objects.list_objects("q/a/r")] == ["q/a/reason.json"]


def test_a_folder_vanishes_with_its_last_object(objects: ObjectStore) -> None:
    objects.put_object("groups/g1/group.json", b"{}")
    objects.put_object("groups/g2/group.json", b"{}")
    objects.delete_object("groups/g1/group.json")
    assert [o.key for o in objects.list_objects("groups/", recursive=False)] == ["groups/g2/"]


def test_files_go_in_and_come_out_whole(objects: ObjectStore, tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    sizes = (0, 1000, 3 * 1024 * 1024 + 17)  # empty, one request, and above the lean client's 1 MiB
    for size in sizes:
        data = os.urandom(size)
        (files / f"in-{size}").write_bytes(data)
        objects.put_object_file(f"quarantine/x{size}/instance", files / f"in-{size}")
        info = objects.stat_object(f"quarantine/x{size}/instance")
        assert info is not None and info.size == size
        assert objects.get_object_file(f"quarantine/x{size}/instance", files / f"out-{size}")
        assert (files / f"out-{size}").read_bytes() == data
    expected = [f"{way}-{size}" for way in ("in", "out") for size in sizes]
    assert sorted(p.name for p in files.iterdir()) == sorted(expected)  # no partial files left


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/etc/passwd", "a//b", "a\\b", "a\x00b", ""])
def test_keys_that_could_escape_the_store_are_refused(objects: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidPath):
        objects.put_object(key, b"x")
    with pytest.raises(InvalidPath):
        objects.get_object(key)
    with pytest.raises(InvalidPath):
        objects.delete_object(key)


def test_minio_failures_are_nps_errors(minio_settings: Settings, tmp_path: Path) -> None:
    """No minio-py or urllib3 error leaves the store: MinIO refusing a request (here: a wrong
    secret key) is StoreUnavailable from every method."""
    from nps.store.minio import MinioStore

    MinioStore(minio_settings).put_object("x.json", b"{}")
    wrong = MinioStore(minio_settings.model_copy(update={"minio_secret_key": SecretStr("not-the-secret")}))
    src = tmp_path / "f"
    src.write_bytes(b"data")
    calls: list[Callable[[], object]] = [
        lambda: wrong.put_object("x.json", b"{}"), lambda: wrong.put_object_file("y", src),
        lambda: wrong.get_object("x.json"), lambda: wrong.get_object_file("x.json", tmp_path / "out"),
        lambda: wrong.stat_object("x.json"), lambda: list(wrong.list_objects("")),
        lambda: wrong.delete_object("x.json")]
    for call in calls:
        with pytest.raises(NPSError) as failed:
            call()
        assert isinstance(failed.value, StoreUnavailable), failed.value


def test_an_unreachable_minio_is_store_unavailable(minio_settings: Settings) -> None:
    import socket

    from nps.store.minio import MinioStore

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    store = MinioStore(minio_settings.model_copy(update={"minio_endpoint": f"127.0.0.1:{port}"}))
    with pytest.raises(StoreUnavailable, match="not reachable"):
        store.get_object("x.json")


def test_a_bucket_is_created_once_emptied_in_batches_and_removed(minio_settings: Settings) -> None:
    from nps.store.minio import MinioStore

    own = minio_settings.model_copy(update={"minio_bucket": minio_settings.minio_bucket + "-b"})
    store = MinioStore(own)
    assert store.ensure_bucket() is True
    assert MinioStore(own).ensure_bucket() is False  # there already
    for n in range(5):
        store.put_object(f"batch/{n}", b"x")
    assert store.delete_objects([f"batch/{n}" for n in range(3)]) == 3
    assert [o.key for o in store.list_objects("batch/")] == ["batch/3", "batch/4"]
    store.remove_bucket()
    assert MinioStore(own).ensure_bucket() is True  # it was gone
    MinioStore(own).remove_bucket()
