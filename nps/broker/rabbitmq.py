"""RabbitMQ through pika: durable quorum queues, publisher confirms, a dead-letter queue.

Topology (declared idempotently by everyone who connects):

- ``nps.jobs``: quorum queue of ``job.requested`` messages, ``x-delivery-limit`` redeliveries,
  then dead-lettered to ``nps.jobs.dlq``;
- ``nps.jobs.dlq``: quorum queue an admin lists and replays (``nps dlq``);
- ``nps.events``: topic exchange for ``dataset.created`` and ``job.status`` (routing key = type);
- ``nps.index`` (+ ``nps.index.dlq``): ``dataset.created`` events for the indexer;
- ``nps.instances`` (+ ``nps.instances.dlq``): ``instance.received`` and ``batch.closed`` from
  the DICOM receiver and ``nps import``, for the series assembler. Single active consumer:
  one assembler sees every instance of a series (others stand by and take over);
- ``nps.processors`` (+ ``nps.processors.dlq``): ``dataset.indexed`` events for the processor
  engine (indexed, so the engine's queries see the dataset).

pika's exceptions are translated to ``BrokerUnavailable`` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from nps.errors import BrokerUnavailable, ConfigError, NPSError
from schemas.messages import Message, encode_message

REASON_HEADER = "x-nps-reason"
CONNECT_ATTEMPTS = 3
PIKA_ERRORS = (pika.exceptions.AMQPError, OSError)
# Waits between reconnect attempts, in seconds: they grow, then stay at the last one. An attempt
# against a broker (or store, or index) that is down costs one refused TCP connection, so long
# waits save nothing and only delay recovery: with this cap a consumer is back within about 2 s
# of its service. Every consumer reconnects on this schedule.
RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0)

log = logging.getLogger("nps.broker")


def backoff_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed attempts in a row (the first wait: ``failures=0``)."""
    return RECONNECT_BACKOFF_S[min(max(failures, 0), len(RECONNECT_BACKOFF_S) - 1)]


def connect(url: str | None, attempts: int = CONNECT_ATTEMPTS) -> pika.BlockingConnection:
    """A blocking connection, retried on the reconnect schedule; BrokerUnavailable after ``attempts``."""
    if not url:
        raise ConfigError("RabbitMQ is not configured: run `make up` or set NPS_AMQP_URL")
    params = pika.URLParameters(url)
    params.heartbeat = 30
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


@dataclass(frozen=True)
class Topology:
    """Names and limits of the queues; ``prefix`` separates installations (and test runs) on one broker."""

    url: str | None
    prefix: str = "nps"
    delivery_limit: int = 5

    @property
    def jobs(self) -> str:
        """The job request queue."""
        return f"{self.prefix}.jobs"

    @property
    def dlq(self) -> str:
        """The jobs' dead-letter queue."""
        return f"{self.prefix}.jobs.dlq"

    @property
    def events(self) -> str:
        """The topic exchange for events."""
        return f"{self.prefix}.events"

    @property
    def index(self) -> str:
        """The indexer's queue of dataset events."""
        return f"{self.prefix}.index"

    @property
    def index_dlq(self) -> str:
        """The indexer's dead-letter queue."""
        return f"{self.prefix}.index.dlq"

    @property
    def instances(self) -> str:
        """The series assembler's queue of received instances."""
        return f"{self.prefix}.instances"

    @property
    def instances_dlq(self) -> str:
        """The assembler's dead-letter queue."""
        return f"{self.prefix}.instances.dlq"

    @property
    def processors(self) -> str:
        """The processor engine's queue of indexed-dataset events."""
        return f"{self.prefix}.processors"

    @property
    def processors_dlq(self) -> str:
        """The processor engine's dead-letter queue."""
        return f"{self.prefix}.processors.dlq"

    @property
    def analyses(self) -> str:
        """The analysts' queue of analysis requests."""
        return f"{self.prefix}.analyses"

    @property
    def analyses_dlq(self) -> str:
        """The analysts' dead-letter queue."""
        return f"{self.prefix}.analyses.dlq"

    def declare(self, channel: Any) -> None:
        """Create the queues and exchange if missing (same arguments every time, or RabbitMQ refuses)."""
        self._work_queue(channel, self.jobs, self.dlq)
        channel.exchange_declare(self.events, exchange_type="topic", durable=True)
        # The indexer's queue exists from the first connection on, so no dataset event is lost
        # while no indexer runs.
        self._work_queue(channel, self.index, self.index_dlq)
        channel.queue_bind(self.index, self.events, routing_key="dataset.created")
        self._work_queue(channel, self.instances, self.instances_dlq, {"x-single-active-consumer": True})
        self._work_queue(channel, self.processors, self.processors_dlq)
        channel.queue_bind(self.processors, self.events, routing_key="dataset.indexed")
        self._work_queue(channel, self.analyses, self.analyses_dlq)

    def _work_queue(self, channel: Any, name: str, dead_letters: str, extra: dict[str, Any] | None = None) -> None:
        """A quorum queue whose messages go to ``dead_letters`` after the delivery limit."""
        channel.queue_declare(dead_letters, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_declare(name, durable=True, arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_letters,
            **(extra or {}),
        })

    def delete(self) -> None:
        """Remove every queue and the exchange of this prefix (tests and benchmarks clean up with it)."""
        conn = self.connect()
        try:
            channel = conn.channel()
            for queue in (self.jobs, self.dlq, self.index, self.index_dlq, self.instances, self.instances_dlq,
                          self.processors, self.processors_dlq, self.analyses, self.analyses_dlq):
                channel.queue_delete(queue)
            channel.exchange_delete(self.events)
        finally:
            conn.close()

    def connect(self) -> pika.BlockingConnection:
        """A connection to the broker (see ``connect``)."""
        return connect(self.url)


def run_reconnecting(consume: Callable[[], None], stop: threading.Event, name: str,
                     logger: logging.Logger) -> None:
    """Call ``consume`` (one connection's worth of consuming) until ``stop``; after it fails,
    wait ``backoff_delay`` between attempts. Unacked deliveries go back to their queue."""
    failures = 0
    while not stop.is_set():
        try:
            consume()
            failures = 0
        except Exception as exc:
            delay = backoff_delay(failures)
            failures += 1
            logger.warning("%s: %s; reconnecting in %ss", name, exc, delay,
                           exc_info=not isinstance(exc, (NPSError, *PIKA_ERRORS)))
            stop.wait(delay)


def _describe(exc: BaseException) -> str:
    """A pika error in one line (several of them print as an empty string or a bare tuple)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Publisher:
    """Confirmed publishing on one connection (not thread-safe: one per thread)."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._conn: pika.BlockingConnection | None = None
        self._channel: Any = None

    def _ensure(self) -> Any:
        if self._conn is None or self._conn.is_closed or self._channel is None or self._channel.is_closed:
            self.close()
            self._conn = self.topology.connect()
            self._channel = self._conn.channel()
            self._channel.confirm_delivery()
            self.topology.declare(self._channel)
        return self._channel

    def publish_raw(self, exchange: str, routing_key: str, body: bytes, headers: dict[str, Any] | None = None,
                    message_id: str | None = None, mandatory: bool = True) -> None:
        """Publish persistently and wait for the broker's confirm; one reconnect on failure.

        ``mandatory`` makes an unroutable message an error (right for queues, wrong for events
        nobody subscribes to yet).
        """
        props = pika.BasicProperties(delivery_mode=2, content_type="application/json", headers=headers or {},
                                     message_id=message_id)
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
                log.info("RabbitMQ connection lost (%s); reconnecting to publish", _describe(exc))

    def submit(self, message: Message) -> None:
        """Queue a job request (confirmed)."""
        self.publish_raw("", self.topology.jobs, encode_message(message), message_id=str(message.id))

    def analysis(self, message: Message) -> None:
        """Queue an analysis request for the analysts (confirmed)."""
        self.publish_raw("", self.topology.analyses, encode_message(message), message_id=str(message.id))

    def event(self, message: Message) -> None:
        """Announce an event on the topic exchange (confirmed; routing key = message type)."""
        self.publish_raw(self.topology.events, message.type, encode_message(message), message_id=str(message.id),
                         mandatory=False)

    def close(self) -> None:
        """Close the connection if open."""
        if self._conn is not None and self._conn.is_open:
            with contextlib.suppress(*PIKA_ERRORS):
                self._conn.close()
        self._conn = self._channel = None


@dataclass(frozen=True)
class DeadLetter:
    """A message in the dead-letter queue, with why it is there."""

    body: bytes
    reason: str
    deaths: int
    message_id: str | None

    def summary(self) -> dict[str, Any]:
        """For `nps dlq ls`."""
        try:
            parsed = json.loads(self.body)
            job = parsed.get("job_id") if isinstance(parsed, dict) else None
        except ValueError:
            job = None
        return {"message_id": self.message_id, "job_id": job, "reason": self.reason, "deaths": self.deaths,
                "bytes": len(self.body), "preview": self.body[:120].decode("utf-8", "replace")}


def dead_letter_reason(headers: dict[str, Any]) -> tuple[str, int]:
    """Why RabbitMQ (x-death) or a worker (x-nps-reason) dead-lettered a message."""
    if REASON_HEADER in headers:
        return str(headers[REASON_HEADER]), 1
    deaths = headers.get("x-death") or []
    if deaths:
        first = deaths[0]
        reason = first.get("reason", b"")
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        if reason == "delivery_limit":
            reason = "failed on every delivery up to the delivery limit (see the job's status for the last error)"
        return reason, int(first.get("count", 1))
    return "unknown", 0


def work_queues(topology: Topology) -> dict[str, tuple[str, str]]:
    """Name -> (queue, its dead-letter queue) for every queue that has one."""
    return {"jobs": (topology.jobs, topology.dlq), "index": (topology.index, topology.index_dlq),
            "instances": (topology.instances, topology.instances_dlq),
            "processors": (topology.processors, topology.processors_dlq),
            "analyses": (topology.analyses, topology.analyses_dlq)}


def browse_dlq(topology: Topology, limit: int = 1000, queue: str = "jobs") -> Iterator[DeadLetter]:
    """Read up to ``limit`` dead letters of work queue ``queue`` (jobs, index or instances)
    without removing them (they are requeued on close)."""
    dlq = work_queues(topology)[queue][1]
    conn = topology.connect()
    try:
        channel = conn.channel()
        topology.declare(channel)
        for _ in range(limit):
            method, props, body = channel.basic_get(dlq, auto_ack=False)
            if method is None:
                break
            reason, deaths = dead_letter_reason(props.headers or {})
            yield DeadLetter(body, reason, deaths, props.message_id)
    except PIKA_ERRORS as exc:
        raise BrokerUnavailable(f"reading the dead-letter queue failed: {exc!r}") from exc
    finally:
        with contextlib.suppress(*PIKA_ERRORS):
            conn.close()


def replay_dlq(topology: Topology, message_ids: set[str] | None = None, queue: str = "jobs") -> list[bytes]:
    """Move dead letters (all, or those with the given message ids) back to work queue ``queue``.

    Returns the bodies moved, so the caller can mark their jobs queued again.
    """
    target, dlq = work_queues(topology)[queue]
    conn = topology.connect()
    moved: list[bytes] = []
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        topology.declare(channel)
        keep = []
        while True:
            method, props, body = channel.basic_get(dlq, auto_ack=False)
            if method is None:
                break
            if message_ids is not None and props.message_id not in message_ids:
                keep.append(method.delivery_tag)
                continue
            headers = {k: v for k, v in (props.headers or {}).items() if k not in (REASON_HEADER, "x-death")}
            channel.basic_publish("", target, body, pika.BasicProperties(
                delivery_mode=2, content_type="application/json", headers=headers, message_id=props.message_id),
                mandatory=True)
            channel.basic_ack(method.delivery_tag)
            moved.append(body)
        for tag in keep:
            channel.basic_nack(tag, requeue=True)
    except PIKA_ERRORS as exc:
        raise BrokerUnavailable(f"replaying the dead-letter queue failed: {exc!r}") from exc
    finally:
        with contextlib.suppress(*PIKA_ERRORS):
            conn.close()
    return moved
