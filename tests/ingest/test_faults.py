"""Outages while instances arrive, produced for real: a loopback proxy in front of MinIO or
RabbitMQ is cut (connection refused, open connections reset) and restored. The sender sees a
failure status (and retries); once the service is back nothing is lost or duplicated."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from nps.config import Settings
from nps.hashing import series_dataset_id
from nps.store import series as series_store
from nps.store.minio import MinioStore
from tests.dicom.factory import make_series
from tests.faults import Proxy
from tests.ingest.conftest import env_for, send, wait_for_echo, wait_indexed

OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def proxies() -> Iterator[list[Proxy]]:
    made: list[Proxy] = []
    yield made
    for p in made:
        p.close()


def _start_receiver(s: Settings, processes: Callable[..., subprocess.Popen[str]], **env: str) -> None:
    proc = processes("receiver", "--processes", "1", env=env_for(s) | env)
    wait_for_echo(s.dicom_port, proc)


def test_minio_down_gives_a_retryable_failure_and_loses_nothing(
        pipeline: Settings, processes: Callable[..., subprocess.Popen[str]], proxies: list[Proxy],
        tmp_path: Path) -> None:
    host, port = pipeline.minio_endpoint.rsplit(":", 1)
    proxy = Proxy(host, int(port))
    proxies.append(proxy)
    _start_receiver(pipeline, processes, NPS_MINIO_ENDPOINT=f"127.0.0.1:{proxy.port}")
    uid, sops = make_series(tmp_path / "s", 5)
    files = sorted((tmp_path / "s").iterdir())
    assert send(pipeline.dicom_port, files[:3]) == [0, 0, 0]
    proxy.cut()
    assert send(pipeline.dicom_port, files[3:]) == [OUT_OF_RESOURCES] * 2
    proxy.restore()
    assert send(pipeline.dicom_port, files[3:]) == [0, 0]  # the sender's retry
    dataset_id = series_dataset_id(uid)
    doc = wait_indexed(pipeline, dataset_id)
    if doc["number_of_instances"] < 5:  # the first three may have been committed on their own
        doc = wait_indexed(pipeline, dataset_id, 2)
    store = MinioStore(pipeline)
    assert {f.path for f in store.manifest(dataset_id).files if f.path.startswith("dicom/")} == {
        f"dicom/{s}.dcm" for s in sops}
    assert set(series_store.stored_sizes(store, dataset_id)) == {f"dicom/{s}.dcm" for s in sops}


def test_broker_down_gives_a_retryable_failure_and_loses_nothing(
        pipeline: Settings, processes: Callable[..., subprocess.Popen[str]], proxies: list[Proxy],
        tmp_path: Path) -> None:
    assert pipeline.amqp_url is not None
    url = urlsplit(pipeline.amqp_url.get_secret_value())
    proxy = Proxy(url.hostname or "127.0.0.1", url.port or 5672)
    proxies.append(proxy)
    proxied = urlunsplit(url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}"))
    _start_receiver(pipeline, processes, NPS_AMQP_URL=proxied)
    uid, sops = make_series(tmp_path / "s", 4)
    files = sorted((tmp_path / "s").iterdir())
    assert send(pipeline.dicom_port, files[:2]) == [0, 0]
    proxy.cut()
    assert send(pipeline.dicom_port, files[2:]) == [OUT_OF_RESOURCES] * 2
    proxy.restore()
    time.sleep(1)
    assert send(pipeline.dicom_port, files[2:]) == [0, 0]
    dataset_id = series_dataset_id(uid)
    doc = wait_indexed(pipeline, dataset_id)
    if doc["number_of_instances"] < 4:
        doc = wait_indexed(pipeline, dataset_id, 2)
    assert doc["number_of_instances"] == 4
    manifest = MinioStore(pipeline).manifest(dataset_id)
    assert {f.path for f in manifest.files if f.path.startswith("dicom/")} == {f"dicom/{s}.dcm" for s in sops}
