"""`nps import` through a real MinIO outage: the importer reaches MinIO through a loopback
proxy that is cut in the middle of the import and restored (tests/faults.py), while the
assembler uses MinIO directly.

The import runs in this process with one worker, so its files go one after the other and the
proxy can be cut after a chosen file and restored after the next one fails: a partial outage
at a known place, which a separate `nps import` process could not give deterministically.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nps.broker import topology
from nps.config import Settings
from nps.hashing import series_dataset_id
from nps.ingest import Ingestor
from nps.store.minio import MinioStore
from producers.importer import ImportReport, run_import
from schemas.messages import DatasetCreated
from tests.dicom.factory import make_series
from tests.faults import Proxy
from tests.ingest.conftest import env_for
from tests.ingest.waits import events, wait_committed


@pytest.fixture
def minio_proxy(ingest_settings: Settings) -> Iterator[Proxy]:
    host, port = ingest_settings.minio_endpoint.rsplit(":", 1)
    proxy = Proxy(host, int(port))
    yield proxy
    proxy.close()


def _ingestor(s: Settings, proxy: Proxy) -> Ingestor:
    return Ingestor(MinioStore(s.model_copy(update={"minio_endpoint": f"127.0.0.1:{proxy.port}"})), topology(s))


def _import(ingestor: Ingestor, folder: Path, tick: Callable[[str], None] | None = None) -> ImportReport:
    try:
        return run_import(ingestor, [folder], workers=1, tick=tick)
    finally:
        ingestor.close()


def _wait_until_seen_up(ingestor: Ingestor, name: str, timeout: float = 30) -> None:
    """Files fail at once while the ingestor knows a service is down; it finds it back by probing."""
    deadline = time.monotonic() + timeout
    while ingestor.outages.state(name).is_down:
        assert time.monotonic() < deadline, f"the ingestor never saw {name} come back"
        time.sleep(0.05)


def test_a_series_with_files_lost_to_a_minio_outage_is_not_closed_and_running_the_import_again_completes_it(
        ingest_settings: Settings, processes: Callable[..., subprocess.Popen[str]], minio_proxy: Proxy,
        tmp_path: Path) -> None:
    s = ingest_settings.model_copy(update={"series_stable_seconds": 600.0})  # only a closed batch commits
    processes("worker", "assemble", env=env_for(s))
    data = tmp_path / "cd"
    a, _ = make_series(data / "a", 3)
    b, b_sops = make_series(data / "b", 4)
    c, _ = make_series(data / "c", 2)
    ids = {name: series_dataset_id(uid) for name, uid in (("a", a), ("b", b), ("c", c))}

    ingestor = _ingestor(s, minio_proxy)

    def outage(label: str) -> None:  # MinIO goes away after b's second file, is back after the third
        if label.endswith("b/i0001.dcm"):
            minio_proxy.cut()
        elif label.endswith("b/i0002.dcm"):
            minio_proxy.restore()
            _wait_until_seen_up(ingestor, "MinIO")

    first = _import(ingestor, data, outage)
    assert (first.stored, first.failed) == (8, 1) and not first.ok
    assert dict(first.incomplete) == {ids["b"]: 1} and first.closed == {ids["a"], ids["c"]}
    assert any("b/i0002.dcm: not imported, try again" in p for p in first.problems)
    store = MinioStore(s)
    wait_committed(store, ids["a"])
    wait_committed(store, ids["c"])
    # Had the close named b, the assembler would have committed it before c (oldest first).
    assert not store.exists(ids["b"])

    with events(s) as announced:
        again = _import(_ingestor(s, minio_proxy), data)
        assert again.ok and (again.stored, again.duplicates) == (1, 8) and again.closed == set(ids.values())
        handled = announced.wait(3)
    assert all(isinstance(e, DatasetCreated) for e in handled)
    assert sorted((e.dataset_id, e.revision) for e in handled) == sorted((i, 1) for i in ids.values())  # type: ignore[union-attr]
    manifest = store.manifest(ids["b"])
    assert manifest.revision == 1  # complete in its first revision: never shown half-full
    assert {f.path for f in manifest.files if f.path.startswith("dicom/")} == {f"dicom/{x}.dcm" for x in b_sops}
