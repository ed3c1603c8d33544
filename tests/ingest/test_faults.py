"""Outages while instances arrive, produced for real: a loopback proxy in front of MinIO or
RabbitMQ is cut (connection refused, open connections reset) and restored. The sender sees a
failure status (and retries); while the service is known down that answer comes at once; once
it is back the receiver resumes by itself and nothing is lost or duplicated."""

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


def _proxied(service: str, s: Settings, proxies: list[Proxy]) -> tuple[Proxy, dict[str, str]]:
    """A proxy in front of ``service`` and the environment that sends the receiver through it."""
    if service == "minio":
        host, port = s.minio_endpoint.rsplit(":", 1)
        proxy = Proxy(host, int(port))
        env = {"NPS_MINIO_ENDPOINT": f"127.0.0.1:{proxy.port}"}
    else:
        assert s.amqp_url is not None
        url = urlsplit(s.amqp_url.get_secret_value())
        proxy = Proxy(url.hostname or "127.0.0.1", url.port or 5672)
        netloc = f"{url.username}:{url.password}@127.0.0.1:{proxy.port}"
        env = {"NPS_AMQP_URL": urlunsplit(url._replace(netloc=netloc))}
    proxies.append(proxy)
    return proxy, env


def _send_until_stored(port: int, files: list[Path], timeout: float = 30) -> float:
    """Send ``files`` as a sender retrying after 0xA700 would, until all are stored; the seconds it took."""
    started = time.monotonic()
    while (statuses := send(port, files)) != [0] * len(files):
        assert set(statuses) <= {0, OUT_OF_RESOURCES}, statuses
        assert time.monotonic() - started < timeout, f"still {statuses} after {timeout} s"
        time.sleep(0.1)
    return time.monotonic() - started


def _all_committed(s: Settings, uid: str, sops: list[str]) -> None:
    dataset_id = series_dataset_id(uid)
    doc = wait_indexed(s, dataset_id)
    if doc["number_of_instances"] < len(sops):  # the first ones may have been committed on their own
        doc = wait_indexed(s, dataset_id, doc["revision"] + 1)
    assert doc["number_of_instances"] == len(sops)
    store = MinioStore(s)
    expected = {f"dicom/{sop}.dcm" for sop in sops}
    assert {f.path for f in store.manifest(dataset_id).files if f.path.startswith("dicom/")} == expected
    assert set(series_store.stored_sizes(store, dataset_id)) == expected


@pytest.mark.parametrize("service", ["minio", "rabbitmq"])
def test_an_outage_gives_a_retryable_failure_and_loses_nothing(
        service: str, pipeline: Settings, processes: Callable[..., subprocess.Popen[str]], proxies: list[Proxy],
        tmp_path: Path) -> None:
    proxy, env = _proxied(service, pipeline, proxies)
    _start_receiver(pipeline, processes, **env)
    uid, sops = make_series(tmp_path / "s", 5)
    files = sorted((tmp_path / "s").iterdir())
    assert send(pipeline.dicom_port, files[:3]) == [0, 0, 0]
    proxy.cut()
    assert send(pipeline.dicom_port, files[3:]) == [OUT_OF_RESOURCES] * 2
    proxy.restore()
    _send_until_stored(pipeline.dicom_port, files[3:])  # the sender's retries
    _all_committed(pipeline, uid, sops)


@pytest.mark.parametrize("service", ["minio", "rabbitmq"])
def test_while_a_service_is_down_the_receiver_answers_at_once_and_resumes_by_itself(
        service: str, pipeline: Settings, processes: Callable[..., subprocess.Popen[str]], proxies: list[Proxy],
        tmp_path: Path) -> None:
    proxy, env = _proxied(service, pipeline, proxies)
    _start_receiver(pipeline, processes, **env)
    uid, sops = make_series(tmp_path / "s", 12)
    files = sorted((tmp_path / "s").iterdir())
    assert send(pipeline.dicom_port, files[:2]) == [0, 0]
    proxy.cut()
    assert send(pipeline.dicom_port, files[2:3]) == [OUT_OF_RESOURCES]  # this one finds the outage
    started = time.monotonic()  # trying costs each one 0.3 s (MinIO's retries) to seconds (RabbitMQ's)
    assert send(pipeline.dicom_port, files[3:10]) == [OUT_OF_RESOURCES] * 7
    answered = time.monotonic() - started
    assert answered < 1.5, f"7 instances took {answered:.1f} s to be refused while {service} is known down"
    proxy.restore()
    resumed = _send_until_stored(pipeline.dicom_port, files[2:3])
    assert resumed < 3.0, f"the receiver took {resumed:.1f} s to resume after {service} came back"
    assert send(pipeline.dicom_port, files[3:]) == [0] * 9
    _all_committed(pipeline, uid, sops)
