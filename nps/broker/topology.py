"""The queues and the exchange NPS uses on RabbitMQ, declared idempotently by everyone who connects.

- ``<prefix>.events``: topic exchange for ``dataset.created``, ``dataset.indexed`` and
  ``job.status`` (routing key = message type);
- one durable quorum *work queue* per consumer (``WORK_QUEUES``), each with its dead-letter
  queue ``<queue>.dlq``: a message goes there with its reason when its consumer refuses it, or
  by RabbitMQ after ``x-delivery-limit`` redeliveries. An admin lists and replays them (``nps dlq``):

  - ``jobs``: ``job.requested`` for the job workers;
  - ``index``: ``dataset.created`` and ``job.status`` events for the indexer (bound to the
    exchange from the first connection on, so no event is lost while no indexer runs);
  - ``instances``: ``instance.received`` and ``batch.closed`` from the DICOM receiver and
    ``nps import``, for the series assembler. Single active consumer: one assembler sees every
    instance of a series (others stand by and take over);
  - ``processors``: ``dataset.indexed`` events for the processor engine (indexed, so the
    engine's queries see the dataset).
  - ``analyses``: ``analysis.requested`` from the API, and the next steps the analysts send
    themselves, for the analysts (``nps worker analyses``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions

from nps.broker.rabbitmq import PIKA_ERRORS, close_quietly, connect, unavailable


@dataclass(frozen=True)
class WorkQueue:
    """A consumer's queue: its short name (``jobs``), the events routed to it, and whether only
    one consumer at a time may take from it."""

    key: str
    events: tuple[str, ...] = ()
    single_active: bool = False


WORK_QUEUES = (
    WorkQueue("jobs"),
    WorkQueue("index", events=("dataset.created", "job.status")),
    WorkQueue("instances", single_active=True),
    WorkQueue("processors", events=("dataset.indexed",)),
    WorkQueue("analyses"),
)


@dataclass(frozen=True)
class QueueState:
    """What RabbitMQ reports of a queue now."""

    messages: int  # ready, not counting those delivered and not yet acked
    consumers: int


@dataclass(frozen=True)
class Topology:
    """Names and limits of the queues; ``prefix`` separates installations (and test runs) on one broker."""

    url: str | None = field(repr=False)  # it holds the broker's credentials
    prefix: str = "nps"
    delivery_limit: int = 5

    def queue(self, key: str) -> str:
        """The name of work queue ``key`` (``jobs``, ``index``, ``instances``, ``processors``, ``analyses``)."""
        return f"{self.prefix}.{_work_queue(key).key}"

    def dead_letters(self, key: str) -> str:
        """The dead-letter queue of work queue ``key``."""
        return f"{self.queue(key)}.dlq"

    @property
    def events(self) -> str:
        """The topic exchange for events."""
        return f"{self.prefix}.events"

    @property
    def jobs(self) -> str:
        """The job request queue."""
        return self.queue("jobs")

    @property
    def dlq(self) -> str:
        """The jobs' dead-letter queue."""
        return self.dead_letters("jobs")

    @property
    def index(self) -> str:
        """The indexer's queue of dataset events."""
        return self.queue("index")

    @property
    def index_dlq(self) -> str:
        """The indexer's dead-letter queue."""
        return self.dead_letters("index")

    @property
    def instances(self) -> str:
        """The series assembler's queue of received instances."""
        return self.queue("instances")

    @property
    def instances_dlq(self) -> str:
        """The assembler's dead-letter queue."""
        return self.dead_letters("instances")

    @property
    def processors(self) -> str:
        """The processor engine's queue of indexed-dataset events."""
        return self.queue("processors")

    @property
    def processors_dlq(self) -> str:
        """The processor engine's dead-letter queue."""
        return self.dead_letters("processors")

    def declare(self, channel: Any) -> None:
        """Create the queues and exchange if missing (same arguments every time, or RabbitMQ refuses)."""
        channel.exchange_declare(self.events, exchange_type="topic", durable=True)
        for work in WORK_QUEUES:
            name = self.queue(work.key)
            channel.queue_declare(self.dead_letters(work.key), durable=True, arguments={"x-queue-type": "quorum"})
            channel.queue_declare(name, durable=True, arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.dead_letters(work.key),
                **({"x-single-active-consumer": True} if work.single_active else {}),
            })
            for routing_key in work.events:
                channel.queue_bind(name, self.events, routing_key=routing_key)

    def delete(self) -> None:
        """Remove every queue and the exchange of this prefix (tests and benchmarks clean up with it)."""
        conn = self.connect()
        try:
            channel = conn.channel()
            for work in WORK_QUEUES:
                channel.queue_delete(self.queue(work.key))
                channel.queue_delete(self.dead_letters(work.key))
            channel.exchange_delete(self.events)
        except PIKA_ERRORS as exc:
            raise unavailable("deleting the queues", exc) from exc
        finally:
            close_quietly(conn)

    def connect(self) -> pika.BlockingConnection:
        """A connection to the broker (see ``nps.broker.rabbitmq.connect``)."""
        return connect(self.url)


def queue_state(topology: Topology, queue: str) -> QueueState | None:
    """Messages ready in ``queue`` and consumers attached to it; None if it does not exist."""
    conn = topology.connect()
    try:
        ok = conn.channel().queue_declare(queue, passive=True)
        return QueueState(int(ok.method.message_count), int(ok.method.consumer_count))
    except pika.exceptions.ChannelClosedByBroker:
        return None
    except PIKA_ERRORS as exc:
        raise unavailable(f"asking for queue {queue}", exc) from exc
    finally:
        close_quietly(conn)


def _work_queue(key: str) -> WorkQueue:
    for work in WORK_QUEUES:
        if work.key == key:
            return work
    raise KeyError(f"no work queue {key!r}; known: {', '.join(w.key for w in WORK_QUEUES)}")
