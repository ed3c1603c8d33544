"""The consumer runner: every NPS consumer is a ``Consumer`` around a plain handler function.

The runner owns everything about RabbitMQ (see docs/broker.md):

- connecting, and reconnecting after a failure on the one back-off schedule
  (``RECONNECT_BACKOFF_S``), with one log line per attempt;
- prefetch, and decoding: a message that is not valid, or not of a type the consumer
  ``accepts``, is dead-lettered at once with its reason and never reaches the handler;
- settling each delivery after its handler returned, as the handler says (``Outcome``);
- serving the connection (heartbeats) while the handler runs, however long it runs;
- stopping gracefully: the message in hand is finished and settled, the consumer is cancelled,
  and every delivery not settled goes back to its queue.

The handler and the optional ``prepare`` and ``tick`` hooks all run, one at a time, on one work
thread of the runner; the connection is only ever touched by the thread that calls ``run``.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from nps.broker.dead_letters import REASON_HEADER
from nps.broker.rabbitmq import PIKA_ERRORS, backoff_delay, close_quietly, connect, describe, persistent, unavailable
from nps.broker.topology import Topology
from nps.errors import NPSError
from schemas.messages import MalformedMessage, decode_message

M = TypeVar("M")
T = TypeVar("T")
# Waits before a message whose handler failed goes back to its queue: long, since each requeue
# spends one of the message's deliveries (then it is dead-lettered). They grow while handlers
# keep failing and start again after a success.
REQUEUE_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
POLL_S = 0.2  # how often an idle consumer looks at ``stop`` and runs ``tick``


class Outcome:
    """What the runner does with a delivery once its handler returned."""


@dataclass(frozen=True)
class Ack(Outcome):
    """Done: the side effects are durable, the message is removed."""


@dataclass(frozen=True)
class Hold(Outcome):
    """The handler keeps the delivery and settles it later (``Delivery.ack`` and friends)."""


@dataclass(frozen=True)
class Requeue(Outcome):
    """Not now (a service is down): back to the queue after ``after`` seconds (None: the runner's
    growing ``REQUEUE_BACKOFF_S``). Each requeue spends one delivery of the queue's limit."""

    reason: str
    after: float | None = None
    error: BaseException | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Reject(Outcome):
    """Never: the message goes to the queue's dead-letter queue with ``reason``."""

    reason: str


ACK = Ack()
HOLD = Hold()


@dataclass(eq=False)
class Delivery(Generic[M]):
    """One message as its handler sees it. ``ack``/``requeue``/``reject`` settle a held delivery
    from any thread; after a reconnect they do nothing (the message went back to the queue)."""

    message: M
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    tag: int
    _session: _Session = field(repr=False)

    @property
    def deliveries(self) -> int:
        """How many times the message has been delivered, this time included."""
        return int(self.headers.get("x-delivery-count") or 0) + 1

    def ack(self) -> None:
        """Settle as done."""
        self._session.settle(self, ACK)

    def requeue(self, reason: str = "requeued by its consumer") -> None:
        """Send back to the queue now."""
        self._session.settle(self, Requeue(reason, after=0))

    def reject(self, reason: str) -> None:
        """Dead-letter with ``reason``."""
        self._session.settle(self, Reject(reason))


Handler = Callable[[Delivery[M]], Outcome | None]


class _Session:
    """One connection's worth of consuming: the channel, and the settlements waiting for it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.channel = conn.channel()
        self.open = True
        self.pending: queue.SimpleQueue[tuple[Delivery[Any], Outcome]] = queue.SimpleQueue()
        self._dead_letters: Any = None

    def settle(self, delivery: Delivery[Any], outcome: Outcome) -> None:
        if self.open:
            self.pending.put((delivery, outcome))

    def dead_letter_channel(self) -> Any:
        """A confirming channel on the same connection, opened on the first dead letter."""
        if self._dead_letters is None:
            self._dead_letters = self.conn.channel()
            self._dead_letters.confirm_delivery()
        return self._dead_letters


class Consumer(Generic[M]):
    """Consume work queue ``queue`` (a ``Topology`` key: ``jobs``, ``index``...) with ``handler``.

    ``handler`` gets a ``Delivery`` whose ``message`` is one of the ``accepts`` types and returns
    an ``Outcome`` (None means ``ACK``). An exception from it is a ``Requeue`` on the growing
    back-off. ``prepare`` runs before each (re)connect (open what the handler needs; an error is
    retried like a refused connection); ``tick`` runs after every delivery and every ``POLL_S``
    while idle (work on held deliveries).
    """

    def __init__(self, topology: Topology, queue: str, handler: Handler[M], *, accepts: tuple[type[Any], ...],
                 name: str, prefetch: int = 1, prepare: Callable[[], object] | None = None,
                 tick: Callable[[], object] | None = None, requeue_backoff: tuple[float, ...] = REQUEUE_BACKOFF_S,
                 logger: logging.Logger | None = None) -> None:
        self.topology = topology
        self.queue = queue
        self.handler = handler
        self.accepts = accepts
        self.name = name
        self.prefetch = prefetch
        self.prepare = prepare
        self.tick = tick
        self.requeue_backoff = requeue_backoff
        self.log = logger or logging.getLogger("nps.broker.consumer")
        self._requeues = 0  # handler failures in a row
        self._work: ThreadPoolExecutor | None = None

    def run(self, stop: threading.Event) -> None:
        """Consume until ``stop`` is set; reconnect with back-off after any failure."""
        failures = 0
        self._work = ThreadPoolExecutor(1, thread_name_prefix=self.name)
        try:
            while not stop.is_set():
                try:
                    self._on_work(self.prepare or _nothing)
                    self._session(stop)
                    failures = 0
                except Exception as exc:
                    if isinstance(exc, _Consumed):  # it did consume: the next attempt is the first
                        failures, exc = 0, exc.cause
                    if stop.is_set():  # stopping anyway: unsettled deliveries are back in the queue
                        self.log.info("%s: stopped (%s)", self.name, exc)
                        break
                    delay = backoff_delay(failures)
                    failures += 1
                    self.log.warning("%s: %s; retrying in %ss", self.name, exc, delay,
                                     exc_info=not isinstance(exc, (NPSError, *PIKA_ERRORS)))
                    stop.wait(delay)
        finally:
            self._work.shutdown()
            self._work = None

    def _session(self, stop: threading.Event) -> None:
        conn = connect(self.topology.url)
        session: _Session | None = None
        consuming = False
        try:
            session = _Session(conn)
            self.topology.declare(session.channel)
            session.channel.basic_qos(prefetch_count=self.prefetch)
            self.log.info("%s: consuming %s", self.name, self.topology.queue(self.queue))
            for method, props, body in session.channel.consume(self.topology.queue(self.queue),
                                                               inactivity_timeout=POLL_S):
                consuming = True
                if method is not None:
                    self._deliver(session, method.delivery_tag, props, body, stop)
                elif self.tick is not None:
                    self._pumping(session, self._tick)
                self._apply_settlements(session, stop)
                if stop.is_set():
                    break
            session.channel.cancel()  # prefetched, unhandled deliveries go back at once
        except PIKA_ERRORS as exc:
            lost = unavailable(f"consuming {self.topology.queue(self.queue)}", exc)
            raise (_Consumed(lost) if consuming else lost) from exc
        finally:
            if session is not None:
                session.open = False  # held deliveries come back to the queue with the connection
            close_quietly(conn)

    def _deliver(self, session: _Session, tag: int, props: Any, body: bytes, stop: threading.Event) -> None:
        headers = dict(props.headers or {})

        def work() -> Outcome:
            outcome = self._handle(session, tag, headers, props.message_id, body)
            if self.tick is not None:
                self._tick()
            return outcome

        outcome = self._pumping(session, work)
        if isinstance(outcome, Hold):
            return
        self._settle(session, tag, body, headers, props.message_id, outcome, stop)

    def _handle(self, session: _Session, tag: int, headers: dict[str, Any], message_id: str | None,
                body: bytes) -> Outcome:
        """On the work thread: decode, check the type, call the handler."""
        try:
            message = decode_message(body)
            if not isinstance(message, self.accepts):
                raise MalformedMessage(f"{message.type}: the {self.queue} queue takes "
                                       + ", ".join(str(t.model_fields["type"].default) for t in self.accepts))
        except MalformedMessage as exc:
            return Reject(f"malformed message: {exc}")
        try:
            return self.handler(Delivery(message, body, headers, message_id, tag, session)) or ACK
        except Exception as exc:
            return Requeue(describe(exc) if not isinstance(exc, NPSError) else str(exc), error=exc)

    def _tick(self) -> None:
        try:
            if self.tick is not None:
                self.tick()
        except Exception:
            self.log.exception("%s: periodic work failed", self.name)

    def _settle(self, session: _Session, tag: int, body: bytes, headers: dict[str, Any], message_id: str | None,
                outcome: Outcome, stop: threading.Event) -> None:
        """On the consuming thread: do what ``outcome`` says with delivery ``tag``."""
        channel = session.channel
        if isinstance(outcome, Reject):
            self.log.warning("%s: dead-lettering a message: %s", self.name, outcome.reason)
            session.dead_letter_channel().basic_publish(
                "", self.topology.dead_letters(self.queue), body,
                persistent({**headers, REASON_HEADER: outcome.reason}, message_id), mandatory=True)
            channel.basic_ack(tag)
        elif isinstance(outcome, Requeue):
            delay = outcome.after
            if delay is None:
                delay = self.requeue_backoff[min(self._requeues, len(self.requeue_backoff) - 1)]
                self._requeues += 1
            if delay:
                error = outcome.error
                self.log.warning("%s: %s; requeueing in %ss", self.name, outcome.reason, delay,
                                 exc_info=(type(error), error, error.__traceback__)
                                 if error is not None and not isinstance(error, NPSError) else None)
                self._serve_for(session, delay, stop)
            channel.basic_nack(tag, requeue=True)
        else:
            self._requeues = 0
            channel.basic_ack(tag)

    def _apply_settlements(self, session: _Session, stop: threading.Event) -> None:
        while not session.pending.empty():  # only this thread takes from it
            delivery, outcome = session.pending.get_nowait()
            self._settle(session, delivery.tag, delivery.body, delivery.headers, delivery.message_id, outcome, stop)

    def _pumping(self, session: _Session, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the work thread while this one serves the connection (heartbeats).

        If the connection breaks meanwhile, ``fn`` still runs to its end (a job is never left
        half done by a broker outage); then the error is raised and its message comes back.
        """
        assert self._work is not None, "only while running"
        future: Future[T] = self._work.submit(fn)
        lost: BaseException | None = None
        while True:
            try:
                result = future.result(timeout=POLL_S)
                break
            except FutureTimeout:
                pass
            if lost is None:
                try:
                    session.conn.process_data_events(time_limit=0)
                except PIKA_ERRORS as exc:
                    lost = exc
        if lost is not None:
            raise lost
        return result

    def _on_work(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the work thread (no connection to serve)."""
        assert self._work is not None, "only while running"
        return self._work.submit(fn).result()

    def _serve_for(self, session: _Session, seconds: float, stop: threading.Event) -> None:
        """Wait ``seconds`` (less if ``stop``), serving the connection meanwhile."""
        deadline = time.monotonic() + seconds
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            session.conn.process_data_events(time_limit=min(POLL_S, left))


class _Consumed(Exception):
    """A session that consumed before it failed (``cause``)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _nothing() -> None:
    pass


def stop_on_signals(logger: logging.Logger | None = None, what: str = "stopping") -> threading.Event:
    """An event set by SIGTERM or SIGINT (call from the main thread); logs ``what`` at INFO."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if logger is not None:
            logger.info("received %s: %s", signal.Signals(signum).name, what)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop
