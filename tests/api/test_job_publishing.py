"""The API publishes job requests on long-lived confirmed connections, lent to one request
thread at a time: not a new RabbitMQ connection per submit under a process-wide lock. Real
MinIO and RabbitMQ; the connections are counted by a loopback proxy in front of the broker."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import SecretStr

from nps.api.app import create_app
from nps.api.deps import Services, publish
from nps.broker import Topology, queue_state, topology
from nps.config import Settings
from nps.jobs.plan import build_spec
from schemas.messages import JobRequested
from tests.conftest import service_missing
from tests.faults import Proxy

IMAGE = "sha256:" + "0" * 64  # never run: the jobs are only queued


@pytest.fixture
def proxied(minio_settings: Settings) -> Iterator[tuple[Settings, Proxy]]:
    """Settings on a private queue prefix whose broker URL goes through a proxy."""
    if minio_settings.amqp_url is None:
        service_missing("RabbitMQ not configured: run `make up`")
    assert minio_settings.amqp_url is not None
    url = urlsplit(minio_settings.amqp_url.get_secret_value())
    proxy = Proxy(url.hostname or "127.0.0.1", url.port or 5672)
    proxied_url = urlunsplit(url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}"))
    s = minio_settings.model_copy(update={"queue_prefix": f"t{uuid.uuid4().hex[:10]}",
                                          "amqp_url": SecretStr(proxied_url)})
    yield s, proxy
    proxy.close()
    Topology(url=minio_settings.amqp_url.get_secret_value(), prefix=s.queue_prefix).delete()


def a_request() -> JobRequested:
    spec = build_spec(IMAGE, ["true", uuid.uuid4().hex], [], [], [])
    return JobRequested(job_id=spec.job_id, spec=spec)


def queued(topo: Topology) -> int:
    state = queue_state(topo, topo.jobs)
    return state.messages if state else 0


def test_submits_reuse_one_confirmed_connection_instead_of_opening_one_each(
        proxied: tuple[Settings, Proxy]) -> None:
    settings, proxy = proxied
    svc: Services = create_app(settings).state.services
    for _ in range(5):
        assert publish(svc, [a_request()]) == [True]
    assert proxy.accepted == 1
    assert queued(topology(settings)) == 5


def test_concurrent_submits_each_borrow_a_connection_and_none_waits_for_a_process_wide_lock(
        proxied: tuple[Settings, Proxy]) -> None:
    settings, proxy = proxied
    svc: Services = create_app(settings).state.services
    barrier = threading.Barrier(4)

    def submit_together() -> list[bool]:
        barrier.wait(timeout=30)
        return publish(svc, [a_request()])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: submit_together(), range(4)))
    assert results == [[True]] * 4
    assert 1 <= proxy.accepted <= 4
    with ThreadPoolExecutor(4) as pool:  # the same connections serve the next round
        assert list(pool.map(lambda _: publish(svc, [a_request()]), range(8))) == [[True]] * 8
    assert proxy.accepted <= 4
    assert queued(topology(settings)) == 12


def test_a_submit_after_the_broker_dropped_the_connection_reconnects_by_itself(
        proxied: tuple[Settings, Proxy]) -> None:
    settings, proxy = proxied
    svc: Services = create_app(settings).state.services
    assert publish(svc, [a_request()]) == [True]
    proxy.cut()
    proxy.restore()
    assert publish(svc, [a_request()]) == [True]
    assert proxy.accepted == 2
    assert queued(topology(settings)) == 2
