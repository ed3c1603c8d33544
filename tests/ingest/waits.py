"""What tests wait for instead of sleeping: a queue's consumers and ready messages, the
messages waiting in a queue, the events the workers announce (the real broker), and a
committed dataset (the real store)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from nps.broker import queue_state as broker_queue_state
from nps.broker import topology
from nps.config import Settings
from nps.store.minio import MinioStore
from schemas.messages import Message, decode_message


def wait_committed(store: MinioStore, dataset_id: str, timeout: float = 60) -> None:
    """Poll the store until the dataset exists (its manifest is written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.exists(dataset_id):
            return
        time.sleep(0.2)
    pytest.fail(f"series {dataset_id} was never committed")


@dataclass(frozen=True)
class QueueState:
    """A queue's consumers (standing-by ones of a single-active-consumer queue included) and
    its messages ready for delivery (not those delivered and not yet acknowledged)."""

    consumers: int
    ready: int


def queue_state(s: Settings, queue: str) -> QueueState | None:
    """The queue's state; None while it does not exist yet."""
    found = broker_queue_state(topology(s), queue)
    return None if found is None else QueueState(found.consumers, found.messages)


def wait_queue(s: Settings, queue: str, condition: Callable[[QueueState], bool], what: str,
               timeout: float = 30) -> QueueState:
    """Poll the queue until ``condition`` holds (``what`` says what was awaited, for the failure)."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = queue_state(s, queue)
        if state is not None and condition(state):
            return state
        time.sleep(0.1)
    pytest.fail(f"{queue}: {what} not reached after {timeout}s (last: {state})")


def take_all(s: Settings, queue: str, timeout: float = 30) -> list[Message]:
    """Take every message waiting in ``queue`` (for a test whose queue no worker consumes).
    By consuming: a single-active-consumer queue refuses basic.get."""
    state = queue_state(s, queue)
    waiting = state.ready if state else 0
    conn = topology(s).connect()
    taken: list[Message] = []
    try:
        channel = conn.channel()
        for method, _props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=timeout):
            if method is None:
                pytest.fail(f"{queue}: {waiting} message(s) waiting, {len(taken)} came in {timeout}s")
            taken.append(decode_message(body))
            if len(taken) == waiting:
                return taken
        return taken
    finally:
        conn.close()


class Events:
    """Copies of the events published with one routing key from the moment it was made."""

    def __init__(self, channel: Any, queue: str) -> None:
        self.channel = channel
        self.queue = queue
        self.seen: list[Message] = []

    def wait(self, count: int, timeout: float = 60) -> list[Message]:
        """Wait until ``count`` events have come; return them."""
        deadline = time.monotonic() + timeout
        while len(self.seen) < count and time.monotonic() < deadline:
            method, _props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                time.sleep(0.1)
                continue
            self.seen.append(decode_message(body))
        if len(self.seen) < count:
            pytest.fail(f"{count} event(s) awaited, {len(self.seen)} came in {timeout}s: {self.seen}")
        return self.seen


@contextmanager
def events(s: Settings, routing_key: str = "dataset.created") -> Iterator[Events]:
    """Listen to the events exchange (a private queue, gone when the connection closes)."""
    topo = topology(s)
    conn = topo.connect()
    try:
        channel = conn.channel()
        topo.declare(channel)
        queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        channel.queue_bind(queue, topo.events, routing_key=routing_key)
        yield Events(channel, queue)
    finally:
        if conn.is_open:
            conn.close()
