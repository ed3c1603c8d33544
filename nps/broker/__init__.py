"""Message transport. RabbitMQ is the one implementation; the rest of NPS imports only this package."""

from __future__ import annotations

from nps.broker.rabbitmq import (
    RECONNECT_BACKOFF_S,
    DeadLetter,
    Publisher,
    Topology,
    backoff_delay,
    browse_dlq,
    connect,
    replay_dlq,
)
from nps.config import Settings

__all__ = ["RECONNECT_BACKOFF_S", "DeadLetter", "Publisher", "Topology", "backoff_delay", "browse_dlq", "connect",
           "replay_dlq", "topology"]


def topology(settings: Settings) -> Topology:
    """The broker, queue names and delivery limit these settings describe."""
    url = settings.amqp_url.get_secret_value() if settings.amqp_url else None
    return Topology(url=url, prefix=settings.queue_prefix, delivery_limit=settings.job_delivery_limit)
