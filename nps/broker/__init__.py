"""Message transport. RabbitMQ is the one implementation; the rest of NPS imports only this package."""

from nps.broker.rabbitmq import (
    DLQ_QUEUE,
    EVENTS_EXCHANGE,
    JOBS_QUEUE,
    DeadLetter,
    Delivery,
    Publisher,
    connect,
    declare_topology,
)

__all__ = [
    "DLQ_QUEUE",
    "EVENTS_EXCHANGE",
    "JOBS_QUEUE",
    "DeadLetter",
    "Delivery",
    "Publisher",
    "connect",
    "declare_topology",
]
