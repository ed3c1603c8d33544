"""Message transport. RabbitMQ is the one implementation; the rest of NPS imports only this package.

- ``Consumer``: the runner every consumer uses with a plain handler (``nps.broker.consumer``);
- ``Publisher`` / ``PublisherPool``: long-lived confirmed publishing (``nps.broker.publisher``);
- ``Topology``: queue names, declared idempotently (``nps.broker.topology``);
- dead letters: ``browse_dlq``, ``replay_dlq`` (``nps.broker.dead_letters``).
"""

from __future__ import annotations

from nps.broker.consumer import (
    ACK,
    HOLD,
    Ack,
    Consumer,
    Delivery,
    Handler,
    Hold,
    Outcome,
    Reject,
    Requeue,
    stop_on_signals,
)
from nps.broker.dead_letters import REASON_HEADER, DeadLetter, browse_dlq, replay_dlq
from nps.broker.publisher import Publisher, PublisherPool
from nps.broker.rabbitmq import RECONNECT_BACKOFF_S, backoff_delay, probe
from nps.broker.topology import QueueState, Topology, queue_state
from nps.config import Settings

__all__ = ["ACK", "HOLD", "REASON_HEADER", "RECONNECT_BACKOFF_S", "Ack", "Consumer", "DeadLetter", "Delivery",
           "Handler", "Hold", "Outcome", "Publisher", "PublisherPool", "QueueState", "Reject", "Requeue", "Topology",
           "backoff_delay", "browse_dlq", "probe", "queue_state", "replay_dlq", "stop_on_signals", "topology"]


def topology(settings: Settings) -> Topology:
    """The broker, queue names and delivery limit these settings describe."""
    url = settings.amqp_url.get_secret_value() if settings.amqp_url else None
    return Topology(url=url, prefix=settings.queue_prefix, delivery_limit=settings.job_delivery_limit)
