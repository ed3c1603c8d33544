"""Confirmed publishing: a long-lived connection that reconnects on the next publish after a drop.

``Publisher`` is one connection for one thread at a time; ``PublisherPool`` lends publishers
to any number of threads (a publisher per concurrent caller, reused by the next one), which is
what servers use: no connection per message and no process-wide lock.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pika.exceptions

from nps.broker.rabbitmq import CONNECT_ATTEMPTS, PIKA_ERRORS, close_quietly, connect, describe, persistent
from nps.broker.topology import Topology
from nps.errors import BrokerUnavailable
from schemas.messages import Message, encode_message

log = logging.getLogger("nps.broker")


class Publisher:
    """Confirmed publishing on one connection (not thread-safe: one per thread, or borrow from a
    ``PublisherPool``). The connection opens on the first publish and stays open."""

    def __init__(self, topology: Topology, connect_attempts: int = CONNECT_ATTEMPTS) -> None:
        self.topology = topology
        self.connect_attempts = connect_attempts
        self._conn: Any = None
        self._channel: Any = None

    def _ensure(self) -> Any:
        if self._conn is None or self._conn.is_closed or self._channel is None or self._channel.is_closed:
            self.close()
            self._conn = connect(self.topology.url, self.connect_attempts)
            self._channel = self._conn.channel()
            self._channel.confirm_delivery()
            self.topology.declare(self._channel)
        return self._channel

    def publish_raw(self, exchange: str, routing_key: str, body: bytes, headers: dict[str, Any] | None = None,
                    message_id: str | None = None, mandatory: bool = True) -> None:
        """Publish persistently and wait for the broker's confirm; one reconnect on failure.

        ``mandatory`` makes an unroutable message an error (right for queues, wrong for events
        nobody subscribes to yet). Raises BrokerUnavailable.
        """
        props = persistent(headers, message_id)
        for attempt in range(2):
            try:
                self._ensure().basic_publish(exchange, routing_key, body, props, mandatory=mandatory)
                return
            except pika.exceptions.UnroutableError as exc:
                raise BrokerUnavailable(f"RabbitMQ could not route to {routing_key!r}") from exc
            except pika.exceptions.NackError as exc:
                raise BrokerUnavailable(f"RabbitMQ refused the message for {routing_key!r}") from exc
            except PIKA_ERRORS as exc:
                self.close()
                if attempt:
                    raise BrokerUnavailable(f"publishing to RabbitMQ failed: {exc!r}") from exc
                # Expected now and then: the broker drops a connection left idle past its heartbeat.
                log.info("RabbitMQ connection lost (%s); reconnecting to publish", describe(exc))

    def submit(self, message: Message) -> None:
        """Queue a job request (confirmed)."""
        self.publish_raw("", self.topology.jobs, encode_message(message), message_id=str(message.id))

    def analysis(self, message: Message) -> None:
        """Queue an analysis request (or its next step) for the analysts (confirmed)."""
        self.publish_raw("", self.topology.queue("analyses"), encode_message(message), message_id=str(message.id))

    def event(self, message: Message) -> None:
        """Announce an event on the topic exchange (confirmed; routing key = message type)."""
        self.publish_raw(self.topology.events, message.type, encode_message(message), message_id=str(message.id),
                         mandatory=False)

    def close(self) -> None:
        """Close the connection if open."""
        close_quietly(self._conn)
        self._conn = self._channel = None


class PublisherPool:
    """Publishers lent to threads: as many connections as callers publish at the same moment.

    Thread-safe. ``connect_attempts=1`` suits a caller that must answer at once when the broker
    is down (the DICOM receiver); the default waits out a short outage."""

    def __init__(self, topology: Topology, connect_attempts: int = CONNECT_ATTEMPTS) -> None:
        self.topology = topology
        self.connect_attempts = connect_attempts
        self._idle: queue.SimpleQueue[Publisher] = queue.SimpleQueue()
        self._all: list[Publisher] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def borrow(self) -> Iterator[Publisher]:
        """A publisher for this thread until the block ends."""
        try:
            publisher = self._idle.get_nowait()
        except queue.Empty:
            publisher = Publisher(self.topology, self.connect_attempts)
            with self._lock:
                self._all.append(publisher)
        try:
            yield publisher
        finally:
            self._idle.put(publisher)

    def publish_raw(self, exchange: str, routing_key: str, body: bytes, headers: dict[str, Any] | None = None,
                    message_id: str | None = None, mandatory: bool = True) -> None:
        """``Publisher.publish_raw`` on a borrowed publisher."""
        with self.borrow() as publisher:
            publisher.publish_raw(exchange, routing_key, body, headers, message_id, mandatory)

    def submit(self, message: Message) -> None:
        """``Publisher.submit`` on a borrowed publisher."""
        with self.borrow() as publisher:
            publisher.submit(message)

    def event(self, message: Message) -> None:
        """``Publisher.event`` on a borrowed publisher."""
        with self.borrow() as publisher:
            publisher.event(message)

    def close(self) -> None:
        """Close every connection (publishers lent out at this moment reconnect on their next use)."""
        with self._lock:
            publishers = list(self._all)
        for publisher in publishers:
            publisher.close()
