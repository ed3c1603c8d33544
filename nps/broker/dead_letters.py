"""Dead letters: messages a consumer refused (with its reason in ``x-nps-reason``) or that
RabbitMQ moved after the delivery limit. An admin lists them and replays them (``nps dlq``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nps.broker.rabbitmq import PIKA_ERRORS, close_quietly, persistent, unavailable
from nps.broker.topology import Topology

REASON_HEADER = "x-nps-reason"


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
    """Why RabbitMQ (x-death) or a consumer (x-nps-reason) dead-lettered a message, and how often."""
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


def browse_dlq(topology: Topology, limit: int = 1000, queue: str = "jobs") -> Iterator[DeadLetter]:
    """Read up to ``limit`` dead letters of work queue ``queue`` (jobs, index, instances,
    processors, analyses) without removing them (they are requeued on close)."""
    dlq = topology.dead_letters(queue)
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
        raise unavailable("reading the dead-letter queue", exc) from exc
    finally:
        close_quietly(conn)


def replay_dlq(topology: Topology, message_ids: set[str] | None = None, queue: str = "jobs") -> list[bytes]:
    """Move dead letters (all, or those with the given message ids) back to work queue ``queue``.

    Returns the bodies moved, so the caller can mark their jobs queued again.
    """
    target, dlq = topology.queue(queue), topology.dead_letters(queue)
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
            channel.basic_publish("", target, body, persistent(headers, props.message_id), mandatory=True)
            channel.basic_ack(method.delivery_tag)
            moved.append(body)
        for tag in keep:
            channel.basic_nack(tag, requeue=True)
    except PIKA_ERRORS as exc:
        raise unavailable("replaying the dead-letter queue", exc) from exc
    finally:
        close_quietly(conn)
    return moved
