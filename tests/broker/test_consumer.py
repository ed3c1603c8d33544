"""The consumer runner (``nps.broker.Consumer``) against the real RabbitMQ: acks after the
handler, dead-letters with a reason, requeues on a handler's error, holds deliveries for later,
stops gracefully and comes back after a real network cut (``tests.faults.Proxy``)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import pytest

from nps.broker import (
    HOLD,
    Consumer,
    Delivery,
    Handler,
    Outcome,
    Publisher,
    Reject,
    Topology,
    browse_dlq,
    queue_state,
    rabbitmq,
)
from nps.config import Settings
from nps.errors import StoreUnavailable
from schemas.messages import DatasetCreated, JobState, JobStatus, encode_message
from tests.conftest import service_missing
from tests.faults import Proxy

QUEUE = "index"  # any work queue will do; this one takes dataset.created
FAST = (0.05,)  # requeue back-off in these tests: the schedule itself is not what they check


@pytest.fixture
def topo(settings: Settings) -> Iterator[Topology]:
    """A private set of queues on the real broker, deleted afterwards."""
    if settings.amqp_url is None:
        service_missing("RabbitMQ not configured: run `make up`")
    assert settings.amqp_url is not None
    topology = Topology(url=settings.amqp_url.get_secret_value(), prefix=f"t{uuid.uuid4().hex[:10]}",
                        delivery_limit=3)
    yield topology
    topology.delete()


@pytest.fixture
def proxy(topo: Topology) -> Iterator[Proxy]:
    """A loopback proxy to the real broker that a test cuts and restores."""
    url = urlsplit(topo.url or "")
    p = Proxy(url.hostname or "127.0.0.1", url.port or 5672)
    yield p
    p.close()


def through(topo: Topology, proxy: Proxy) -> Topology:
    """``topo`` reached through ``proxy``."""
    url = urlsplit(topo.url or "")
    return Topology(url=urlunsplit(url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}")),
                    prefix=topo.prefix, delivery_limit=topo.delivery_limit)


def event(n: int = 0) -> DatasetCreated:
    return DatasetCreated(dataset_id=f"{n:040x}", kind="series")


def publish(topo: Topology, *bodies: bytes) -> None:
    publisher = Publisher(topo)
    try:
        for body in bodies:
            publisher.publish_raw("", topo.queue(QUEUE), body)
    finally:
        publisher.close()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not reached after {timeout} s")
        time.sleep(0.05)


def outage(seconds: float) -> None:
    """The fault's length (not a wait for something): long enough for a few reconnect attempts."""
    time.sleep(seconds)


def ready(topo: Topology) -> int:
    state = queue_state(topo, topo.queue(QUEUE))
    return state.messages if state else 0


def consumers(topo: Topology) -> int:
    state = queue_state(topo, topo.queue(QUEUE))
    return state.consumers if state else 0


@dataclass
class Seen:
    """What a test handler saw: every delivery, in order."""

    deliveries: list[Delivery[DatasetCreated]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, delivery: Delivery[DatasetCreated]) -> None:
        with self.lock:
            self.deliveries.append(delivery)

    def __len__(self) -> int:
        with self.lock:
            return len(self.deliveries)


@contextmanager
def consuming(topo: Topology, handler: Handler[DatasetCreated], prefetch: int = 1,
              tick: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """Run a consumer in a thread until the block ends (then stop it and wait for it)."""
    stop = threading.Event()
    consumer = Consumer(topo, QUEUE, handler, accepts=(DatasetCreated,), name="test consumer", prefetch=prefetch,
                        tick=tick, requeue_backoff=FAST)
    thread = threading.Thread(target=consumer.run, args=(stop,), name="test-consumer")
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the consumer did not stop"


def test_a_message_is_acked_once_its_handler_returned(topo: Topology) -> None:
    seen = Seen()
    sent = event(1)
    with consuming(topo, seen.add):
        wait_until(lambda: consumers(topo) == 1, "a consumer attached")
        publish(topo, encode_message(sent))
        wait_until(lambda: len(seen) == 1, "the message handled")
    assert seen.deliveries[0].message == sent
    assert ready(topo) == 0  # acked: nothing came back when the consumer stopped


def test_a_message_whose_handler_had_not_returned_when_the_connection_broke_is_handled_again(
        topo: Topology, proxy: Proxy) -> None:
    release = threading.Event()
    seen = Seen()

    def slow(delivery: Delivery[DatasetCreated]) -> None:
        seen.add(delivery)
        release.wait(30)

    with consuming(through(topo, proxy), slow):
        wait_until(lambda: consumers(topo) == 1, "a consumer attached")
        publish(topo, encode_message(event(2)))
        wait_until(lambda: len(seen) == 1, "the handler started")
        proxy.cut()
        wait_until(lambda: ready(topo) == 1, "the unacked message back in the queue")
        release.set()
        proxy.restore()
        wait_until(lambda: len(seen) == 2, "the message delivered again")
        wait_until(lambda: ready(topo) == 0 and consumers(topo) == 1, "the second delivery acked")
    assert [d.deliveries for d in seen.deliveries] == [1, 2]


def test_malformed_messages_are_dead_lettered_with_their_reason_and_never_reach_the_handler(
        topo: Topology) -> None:
    seen = Seen()
    wrong_type = JobStatus(job_id="0" * 40, state=JobState.RUNNING)
    with consuming(topo, seen.add):
        publish(topo, b"not json at all", encode_message(wrong_type), encode_message(event(3)))
        wait_until(lambda: len(seen) == 1, "the valid message handled")
        wait_until(lambda: len(list(browse_dlq(topo, queue=QUEUE))) == 2, "two dead letters")
    letters = list(browse_dlq(topo, queue=QUEUE))
    assert sorted(d.body for d in letters) == sorted([b"not json at all", encode_message(wrong_type)])
    assert all(d.reason.startswith("malformed message: ") for d in letters), [d.reason for d in letters]
    assert any("job.status: the index queue takes dataset.created" in d.reason for d in letters)
    assert ready(topo) == 0


def test_a_handler_can_refuse_a_message_with_its_own_reason(topo: Topology) -> None:
    def refuse(_: Delivery[DatasetCreated]) -> Outcome:
        return Reject("the spec names an image that does not exist")

    with consuming(topo, refuse):
        publish(topo, encode_message(event(4)))
        wait_until(lambda: len(list(browse_dlq(topo, queue=QUEUE))) == 1, "a dead letter")
    [letter] = browse_dlq(topo, queue=QUEUE)
    assert letter.reason == "the spec names an image that does not exist"


def test_a_handler_error_requeues_the_message_and_a_later_delivery_succeeds(
        topo: Topology, caplog: pytest.LogCaptureFixture) -> None:
    seen = Seen()

    def flaky(delivery: Delivery[DatasetCreated]) -> None:
        seen.add(delivery)
        if len(seen) < 3:
            raise StoreUnavailable("MinIO is down")

    with caplog.at_level(logging.WARNING, "nps.broker.consumer"), consuming(topo, flaky):
        publish(topo, encode_message(event(5)))
        wait_until(lambda: len(seen) == 3, "three deliveries")
        wait_until(lambda: ready(topo) == 0, "the message acked")
    assert [d.deliveries for d in seen.deliveries] == [1, 2, 3]
    assert list(browse_dlq(topo, queue=QUEUE)) == []
    requeued = [r for r in caplog.records if r.name == "nps.broker.consumer" and "requeueing in" in r.getMessage()]
    assert len(requeued) == 2 and all("MinIO is down" in r.getMessage() and not r.exc_info for r in requeued)


def test_a_message_that_fails_on_every_delivery_ends_in_the_dead_letter_queue(topo: Topology) -> None:
    def broken(_: Delivery[DatasetCreated]) -> None:
        raise StoreUnavailable("MinIO is down")

    with consuming(topo, broken):
        publish(topo, encode_message(event(6)))
        wait_until(lambda: len(list(browse_dlq(topo, queue=QUEUE))) == 1, "the message dead-lettered", timeout=60)
    [letter] = browse_dlq(topo, queue=QUEUE)
    assert "delivery limit" in letter.reason


def test_held_deliveries_are_acked_later_from_the_tick_and_come_back_if_never_acked(topo: Topology) -> None:
    held: list[Delivery[DatasetCreated]] = []
    ack_now = threading.Event()

    def hold(delivery: Delivery[DatasetCreated]) -> Outcome:
        held.append(delivery)
        return HOLD

    def tick() -> None:
        if ack_now.is_set():
            while held:
                held.pop().ack()
            ack_now.clear()

    with consuming(topo, hold, prefetch=10, tick=tick):
        publish(topo, *(encode_message(event(n)) for n in range(3)))
        wait_until(lambda: len(held) == 3, "three deliveries held")
        ack_now.set()
        wait_until(lambda: not held, "the held deliveries acked")
        publish(topo, encode_message(event(9)))
        wait_until(lambda: len(held) == 1, "one more held")
    # Stopped while one was held: it went back to the queue, nothing was lost.
    assert ready(topo) == 1


def test_a_stop_finishes_the_message_in_hand_and_returns_the_prefetched_ones(topo: Topology) -> None:
    release = threading.Event()
    seen = Seen()

    def slow(delivery: Delivery[DatasetCreated]) -> None:
        seen.add(delivery)
        release.wait(30)

    with consuming(topo, slow, prefetch=5) as stop:
        publish(topo, *(encode_message(event(n)) for n in range(5)))
        wait_until(lambda: len(seen) == 1 and ready(topo) == 0, "one in hand, four prefetched")
        stop.set()
        release.set()
    assert len(seen) == 1  # no new message was taken after the stop
    assert ready(topo) == 4  # the one in hand was acked, the other four are back


def test_a_consumer_is_back_after_a_real_cut_and_logs_one_line_per_attempt(
        topo: Topology, proxy: Proxy, caplog: pytest.LogCaptureFixture) -> None:
    seen = Seen()
    with caplog.at_level(logging.INFO, "nps.broker.consumer"), consuming(through(topo, proxy), seen.add):
        wait_until(lambda: consumers(topo) == 1, "a consumer attached")
        proxy.cut()
        wait_until(lambda: consumers(topo) == 0, "the consumer gone")
        outage(2.5)
        proxy.restore()
        wait_until(lambda: consumers(topo) == 1, "the consumer back", timeout=10)
        publish(topo, encode_message(event(7)))
        wait_until(lambda: len(seen) == 1, "a message handled after the outage")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "nps.broker.consumer"]
    assert 2 <= len(warnings) <= 6, [r.getMessage() for r in warnings]
    assert all("retrying in" in r.getMessage() and not r.exc_info for r in warnings), [r.getMessage() for r in warnings]


def test_a_handler_that_runs_for_many_heartbeats_keeps_its_connection_and_acks_once(
        topo: Topology, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(rabbitmq, "HEARTBEAT_S", 1)  # RabbitMQ drops a connection silent for ~2 beats
    seen = Seen()

    def long_job(delivery: Delivery[DatasetCreated]) -> None:
        seen.add(delivery)
        time.sleep(6)  # the job's length: six heartbeat intervals without a word from the handler

    with caplog.at_level(logging.WARNING, "nps.broker.consumer"), consuming(topo, long_job):
        publish(topo, encode_message(event(8)))
        wait_until(lambda: len(seen) == 1, "the job started")
    # The stop waited for the job; had the broker dropped the connection meanwhile, the message
    # would be back in the queue (and logged as a reconnect).
    assert len(seen) == 1 and ready(topo) == 0
    assert not [r for r in caplog.records if r.name == "nps.broker.consumer"]
