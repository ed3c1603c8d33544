"""Fixtures for broker outages: the ingest tests' private queues and process starter, and a
loopback proxy in front of the real RabbitMQ that a test cuts and restores."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from nps.config import Settings
from tests.faults import Proxy
from tests.ingest.conftest import ingest_settings, processes  # noqa: F401 (fixtures used here too)


@pytest.fixture
def broker_proxy(ingest_settings: Settings) -> Iterator[Proxy]:  # noqa: F811
    """A proxy to the real broker; ``proxied_url`` gives the AMQP URL through it."""
    assert ingest_settings.amqp_url is not None
    url = urlsplit(ingest_settings.amqp_url.get_secret_value())
    proxy = Proxy(url.hostname or "127.0.0.1", url.port or 5672)
    yield proxy
    proxy.close()


def proxied_url(settings: Settings, proxy: Proxy) -> str:
    """The settings' AMQP URL with the proxy's port in place of the broker's."""
    assert settings.amqp_url is not None
    url = urlsplit(settings.amqp_url.get_secret_value())
    return urlunsplit(url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}"))
