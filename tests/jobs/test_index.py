"""Results feed the index: metadata.json fields and provenance become searchable in Elasticsearch."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nps.config import Settings
from nps.errors import InvalidQuery
from nps.index import DatasetIndex
from nps.jobs import JobRecords
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
