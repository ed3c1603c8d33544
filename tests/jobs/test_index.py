"""Results feed the index: metadata.json fields and provenance become searchable in Elasticsearch;
data written by `nps put`/`nps push` is announced like any other, and deleted data leaves the index."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nps.config import Settings
from nps.errors import InvalidQuery
from nps.index import DatasetIndex
from nps.jobs import JobRecords
from nps.store.minio import MinioStore
from tests.conftest import service_missing
from tests.jobs.conftest import BUSYBOX, run_nps, wait_for_state
from tests.store.helpers import make_tree

Workers = Callable[..., Any]


@pytest.fixture
def index(server_env: dict[str, str], settings: Settings) -> Iterator[DatasetIndex]:
    idx = DatasetIndex(settings.es_url, server_env["NPS_QUEUE_PREFIX"])
    try:
        idx.ensure()
    except Exception as exc:
        service_missing(f"Elasticsearch at {settings.es_url} unusable: {exc}")
    yield idx
    idx.drop()


def search_until(index: DatasetIndex, query: str, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        hits = index.search(query)
        if hits:
            return hits
        time.sleep(0.3)
    pytest.fail(f"nothing found for {query!r}")


METADATA_JOB = ("sh", "-c", 'mkdir /output/.nps; echo \'{"mean": 42.5, "subject": "Sub-01", "ok": true}\''
                ' > /output/.nps/metadata.json; echo data > /output/stats.txt')


def test_a_results_metadata_and_provenance_are_searchable(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords, index: DatasetIndex, tmp_path: Path
) -> None:
    workers(concurrency=1)
    workers(kind="index")
    src = make_tree(tmp_path / "in", {"t1.nii": b"\x00" * 100})
    dataset = run_nps("--store", "minio", "put", str(src), env=server_env).stdout.strip()
    job = run_nps("submit", "-d", f"{dataset}:/in", BUSYBOX, *METADATA_JOB, env=server_env).stdout.strip()
    wait_for_state(server_records, job, {"COMPLETE"})
    hits = search_until(index, "metadata.mean:42.5")
    assert [h["id"] for h in hits] == [job]
    assert hits[0]["kind"] == "result" and hits[0]["inputs"] == [dataset]
    assert hits[0]["job"]["exit_code"] == 0
    assert [h["id"] for h in index.search("metadata.subject:sub-01")] == [job]  # case-insensitive
    assert [h["id"] for h in index.search(f"inputs:{dataset}")] == [job]  # what was derived from it
    assert index.search("metadata.mean:[40 TO 45] AND metadata.ok:true")[0]["id"] == job
    cli = json.loads(run_nps("search", "metadata.mean:>40", "--json", env=server_env).stdout)
    assert [h["id"] for h in cli] == [job]


def test_invalid_metadata_is_recorded_not_fatal_and_reindex_rebuilds_the_index(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords, index: DatasetIndex
) -> None:
    workers(concurrency=1)
    workers(kind="index")
    job = run_nps("submit", BUSYBOX, "sh", "-c", "mkdir /output/.nps; echo '{broken' > /output/.nps/metadata.json",
                  env=server_env).stdout.strip()
    wait_for_state(server_records, job, {"COMPLETE"})
    hit = search_until(index, f"id:{job}")[0]
    assert "not valid JSON" in hit["metadata_error"] and "metadata" not in hit
    index.drop()
    run_nps("reindex", env=server_env)
    assert [h["id"] for h in index.search(f"id:{job}")] == [job]


@pytest.mark.parametrize(
    ("query", "message"),
    [("id:*abc", "not allowed as first character"), ("metadata.mean:[1 TO", "Failed to parse query"),
     ("x" * 3000, "longer than")],
)
def test_expensive_or_malformed_queries_get_a_clear_error(index: DatasetIndex, query: str, message: str) -> None:
    with pytest.raises(InvalidQuery) as info:
        index.search(query)
    assert message in str(info.value)


def closed_port() -> int:
    """A loopback port nothing listens on: a service there is down (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def minio_ids(env: dict[str, str]) -> list[str]:
    return list(json.loads(run_nps("--store", "minio", "datasets", "--json", env=env).stdout))


def test_a_dataset_put_into_minio_is_announced_and_becomes_searchable(
    server_env: dict[str, str], workers: Workers, index: DatasetIndex, tmp_path: Path
) -> None:
    workers(kind="index")
    src = make_tree(tmp_path / "in", {"a.txt": b"put\n"})
    dataset = run_nps("--store", "minio", "put", "--project", "alpha", str(src), env=server_env).stdout.strip()
    hit = search_until(index, f"id:{dataset}", timeout=30)[0]
    assert hit["kind"] == "upload" and hit["project"] == "alpha"


def test_a_pushed_result_is_announced_and_searchable_with_its_provenance(
    server_env: dict[str, str], workers: Workers, index: DatasetIndex, tmp_path: Path
) -> None:
    workers(kind="index")
    data = run_nps("put", str(make_tree(tmp_path / "in", {"a.txt": b"hpc\n"})), env=server_env).stdout.strip()
    job = run_nps("run", "-d", f"{data}:/in", BUSYBOX, "cp", "/in/a.txt", "/output/b.txt",
                  env=server_env).stdout.strip()
    run_nps("push", data, env=server_env)
    run_nps("push", job, env=server_env)
    hits = search_until(index, f"inputs:{data}", timeout=30)
    assert [h["id"] for h in hits] == [job] and hits[0]["kind"] == "result"
    assert search_until(index, f"id:{data}", timeout=30)[0]["kind"] == "upload"


@pytest.mark.parametrize("command", ["push", "put"])
def test_with_rabbitmq_down_data_is_stored_but_said_not_announced_and_sending_it_again_announces_it(
    server_env: dict[str, str], workers: Workers, index: DatasetIndex, tmp_path: Path, command: str
) -> None:
    src = make_tree(tmp_path / "in", {"a.txt": b"announce me\n"})
    data = run_nps("put", str(src), env=server_env).stdout.strip()
    argv = ["push", data] if command == "push" else ["--store", "minio", "put", str(src)]
    broker_down = server_env | {"NPS_AMQP_URL": f"amqp://nobody:nothing@127.0.0.1:{closed_port()}/%2F"}
    first = run_nps(*argv, env=broker_down, ok=False)
    assert first.returncode == 3, first.stderr
    assert first.stdout.strip() == data and "Traceback" not in first.stderr
    assert "not announced" in first.stderr and "not searchable" in first.stderr
    assert (f"nps push {data}" if command == "push" else "nps --store minio put") in first.stderr
    assert minio_ids(server_env) == [data]  # stored all the same
    workers(kind="index")
    again = run_nps(*argv, env=server_env)  # the data is there already: announced anyway
    assert again.stdout.strip() == data
    assert search_until(index, f"id:{data}", timeout=30)[0]["kind"] == "upload"


def put_indexed(env: dict[str, str], index: DatasetIndex, src: Path) -> str:
    """A dataset in MinIO, in the index (reindex: no indexer needed)."""
    dataset = run_nps("--store", "minio", "put", str(src), env=env).stdout.strip()
    run_nps("reindex", env=env)
    assert index.get(dataset) is not None
    return dataset


def test_admin_rm_removes_the_index_entry_too(server_env: dict[str, str], index: DatasetIndex, tmp_path: Path) -> None:
    dataset = put_indexed(server_env, index, make_tree(tmp_path / "in", {"a.txt": b"rm me\n"}))
    done = run_nps("--store", "minio", "admin", "rm", dataset, "--yes", env=server_env)
    assert "search index entry" in done.stderr
    assert index.get(dataset) is None and index.search(f"id:{dataset}") == []
    assert minio_ids(server_env) == []


def test_admin_rm_with_elasticsearch_down_deletes_says_so_and_running_it_again_repairs_the_index(
    server_env: dict[str, str], index: DatasetIndex, tmp_path: Path
) -> None:
    dataset = put_indexed(server_env, index, make_tree(tmp_path / "in", {"a.txt": b"rm me\n"}))
    es_down = server_env | {"NPS_ES_URL": f"http://127.0.0.1:{closed_port()}"}
    first = run_nps("--store", "minio", "admin", "rm", dataset, "--yes", env=es_down, ok=False)
    assert first.returncode == 3 and "Traceback" not in first.stderr
    assert "deleted from MinIO" in first.stderr and "nps reindex" in first.stderr
    assert minio_ids(server_env) == []
    assert index.get(dataset) is not None  # left behind, as the message said
    again = run_nps("--store", "minio", "admin", "rm", dataset, "--yes", env=server_env)
    assert "removed its search index entry" in again.stderr
    assert index.get(dataset) is None
    gone = run_nps("--store", "minio", "admin", "rm", dataset, "--yes", env=server_env, ok=False)
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_reindex_removes_the_entries_of_datasets_no_longer_in_minio(
    server_env: dict[str, str], index: DatasetIndex, minio_settings: Settings, tmp_path: Path
) -> None:
    kept = put_indexed(server_env, index, make_tree(tmp_path / "kept", {"a.txt": b"kept\n"}))
    gone = put_indexed(server_env, index, make_tree(tmp_path / "gone", {"a.txt": b"gone\n"}))
    MinioStore(minio_settings).delete(gone)  # behind the index's back (e.g. `admin rm` while it was down)
    done = run_nps("reindex", env=server_env)
    assert "removed 1 entry" in done.stderr
    assert index.get(gone) is None and index.get(kept) is not None


def test_a_damaged_dataset_is_reported_by_reindex_and_does_not_stop_it(
    server_env: dict[str, str], index: DatasetIndex, minio_settings: Settings, tmp_path: Path
) -> None:
    good = run_nps("--store", "minio", "put", str(make_tree(tmp_path / "good", {"a.txt": b"good\n"})),
                   env=server_env).stdout.strip()
    bad = run_nps("--store", "minio", "put", str(make_tree(tmp_path / "bad", {"a.txt": b"bad\n"})),
                  env=server_env).stdout.strip()
    store = MinioStore(minio_settings)
    damaged = b'{"not": "the record"}'
    store.put_object(store.key(bad, ".nps/dataset.json"), damaged)
    done = run_nps("reindex", env=server_env, ok=False)
    assert done.returncode == 1 and f"not indexed: {bad}" in done.stderr and "Traceback" not in done.stderr
    assert index.get(good) is not None and index.get(bad) is None
