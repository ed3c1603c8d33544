"""RabbitMQ connections through pika: connecting, the reconnect back-off, error translation.

pika is imported in ``nps.broker`` and nowhere else; its exceptions become ``BrokerUnavailable``
at this border (``unavailable``), so the rest of NPS sees only its own errors.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pika
import pika.exceptions

from nps.errors import BrokerUnavailable, ConfigError

CONNECT_ATTEMPTS = 3
HEARTBEAT_S = 30
PIKA_ERRORS = (pika.exceptions.AMQPError, OSError)
# Waits between reconnect attempts, in seconds: they grow, then stay at the last one. An attempt
# against a broker (or store, or index) that is down costs one refused TCP connection, so long
# waits save nothing and only delay recovery: with this cap a consumer is back within about 2 s
# of its service. Every consumer reconnects on this schedule.
RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0)


def backoff_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row (the first wait: ``failures=0``)."""
    return RECONNECT_BACKOFF_S[min(max(failures, 0), len(RECONNECT_BACKOFF_S) - 1)]


def describe(exc: BaseException) -> str:
    """An error in one line (several pika errors print as an empty string or a bare tuple)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def unavailable(what: str, exc: BaseException) -> BrokerUnavailable:
    """The NPS error for a pika (or socket) error met while doing ``what``."""
    return BrokerUnavailable(f"{what}: RabbitMQ connection lost ({describe(exc)})")


def connect(url: str | None, attempts: int = CONNECT_ATTEMPTS) -> pika.BlockingConnection:
    """A blocking connection, retried on the reconnect schedule; BrokerUnavailable after ``attempts``."""
    if not url:
        raise ConfigError("RabbitMQ is not configured: run `make up` or set NPS_AMQP_URL")
    params = pika.URLParameters(url)
    params.heartbeat = HEARTBEAT_S
    params.blocked_connection_timeout = 60
    params.socket_timeout = 10
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            return pika.BlockingConnection(params)
        except PIKA_ERRORS as exc:
            last = exc
            if attempt + 1 < attempts:  # no wait after the last one: the caller decides what follows
                time.sleep(backoff_delay(attempt))
    raise BrokerUnavailable(f"RabbitMQ at {params.host}:{params.port} is not reachable ({last!r})")


def probe(url: str | None) -> None:
    """Raise BrokerUnavailable unless the broker accepts a connection now (one attempt)."""
    close_quietly(connect(url, attempts=1))


def close_quietly(conn: Any) -> None:
    """Close ``conn`` if it is open; a connection already broken closes without complaint."""
    if conn is not None and conn.is_open:
        with contextlib.suppress(*PIKA_ERRORS):
            conn.close()


def persistent(headers: dict[str, Any] | None = None, message_id: str | None = None) -> pika.BasicProperties:
    """Properties of every NPS message: persistent JSON, with headers and an id."""
    return pika.BasicProperties(delivery_mode=2, content_type="application/json", headers=headers or {},
                                message_id=message_id)
