"""The job worker: ``nps worker jobs --concurrency N``.

Each of N threads holds its own RabbitMQ connection with prefetch 1, takes one job request,
runs it (``nps.jobs.execute``) while keeping the connection's heartbeats alive, and acks only
after the job reached a terminal status in MinIO. So:

- a worker killed at any point (SIGKILL) never acked: RabbitMQ redelivers the job, the
  dataset store's commit protocol leaves no half result, and the job completes once;
- SIGTERM stops taking work, finishes what is running, then exits;
- infrastructure errors (MinIO, engine, broker) are retried with backoff by requeueing;
  after the queue's delivery limit the message is dead-lettered;
- an undecodable or invalid message is dead-lettered at once with its reason;
- a duplicate of a job running elsewhere (a lock per job id) waits until that run ends,
  and takes over if its runner dies, so a job runs once and is never lost;
- a job whose submitter died between recording it QUEUED and publishing it is published
  by a repair thread (one worker at a time), so it runs without anyone acting.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import traceback
from typing import Any

from nps.broker import Publisher, topology
from nps.broker.rabbitmq import PIKA_ERRORS, REASON_HEADER, backoff_delay
from nps.config import Settings
from nps.engine import DockerEngine
from nps.errors import NPSError
from nps.jobs import TERMINAL, JobContext, JobRecords, job_context, records_for
from nps.jobs.execute import JobAbandoned, execute, sweep_leftovers
from nps.jobs.outbox import republish_stranded
from nps.process_logging import setup_logging
from nps.store import DatasetStore, open_store
from schemas.messages import DatasetCreated, JobRequested, JobState, JobStatus, MalformedMessage, decode_message

log = logging.getLogger("nps.worker.jobs")
# Waits before requeueing a job that hit an infrastructure error: long, since each requeue spends
# one of the job's deliveries. Reconnecting waits nps.broker's short, capped back-off.
RETRY_BACKOFF_S = (1, 2, 5, 10, 30)
CANCEL_POLL_S = 1.0
LOCK_RETRY_S = 1.0
REPAIR_EVERY_MIN_S, REPAIR_EVERY_MAX_S = 0.5, 30.0
REPAIR_LOCK = "jobs-unpublished-repair"


class JobWorker:
    """One consuming thread."""

    def __init__(self, settings: Settings, stop: threading.Event, name: str) -> None:
        self.settings = settings
        self.stop = stop
        self.name = name
        self.failures = 0
        self.topology = topology(settings)
        self._ctx: JobContext | None = None
        self._plain_records: JobRecords | None = None
        self._publisher: Publisher | None = None

    def _job_tools(self) -> tuple[JobContext, Publisher]:
        """Store, engine, records and publisher, made once per thread and reused for every job."""
        if self._ctx is None or self._publisher is None:
            self._publisher = Publisher(self.topology)
            self._ctx = job_context(self.settings, open_store(self.settings, "minio"))
            publisher = self._publisher
            self._ctx.records.listeners.append(lambda status: _announce(publisher, status))
        return self._ctx, self._publisher

    def run(self) -> None:
        """Consume until ``stop`` is set, reconnecting with backoff when the broker goes away."""
        while not self.stop.is_set():
            try:
                self._consume()
                self.failures = 0
            except Exception as exc:
                delay = backoff_delay(self.failures)
                self.failures += 1
                expected = isinstance(exc, (NPSError, *PIKA_ERRORS))
                log.warning("%s: %s; reconnecting in %ss", self.name, exc, delay, exc_info=not expected)
                self.stop.wait(delay)

    def _consume(self) -> None:
        conn = self.topology.connect()
        try:
            channel = conn.channel()
            self.topology.declare(channel)
            channel.basic_qos(prefetch_count=1)
            log.info("%s: waiting for jobs on %s", self.name, self.topology.jobs)
            for method, props, body in channel.consume(self.topology.jobs, inactivity_timeout=0.5):
                if method is not None:
                    self._handle(conn, channel, method.delivery_tag, props.headers or {}, body, props.message_id)
                if self.stop.is_set():
                    break
            channel.cancel()  # unacked prefetched messages go back to the queue
        finally:
            if conn.is_open:
                conn.close()
            if self._publisher is not None:
                self._publisher.close()

    def _handle(self, conn: Any, channel: Any, tag: int, headers: dict[str, Any], body: bytes,
                message_id: str | None) -> None:
        try:
            message = decode_message(body)
            if not isinstance(message, JobRequested):
                raise MalformedMessage(f"{message.type}: the jobs queue only takes job.requested")
        except MalformedMessage as exc:
            self._dead_letter(body, headers, message_id, f"malformed message: {exc}")
            channel.basic_ack(tag)
            return
        outcome = self._run_pumping(conn, message)
        if outcome is None:
            channel.basic_ack(tag)
            return
        delay = RETRY_BACKOFF_S[min(self.failures, len(RETRY_BACKOFF_S) - 1)]
        log.warning("%s: job %s hit an infrastructure error (%s); requeueing in %ss",
                    self.name, message.job_id, outcome, delay)
        deliveries = int(headers.get("x-delivery-count") or 0) + 1
        if deliveries > self.settings.job_delivery_limit:
            # RabbitMQ dead-letters it after this nack: leave a final status saying why.
            self._record_give_up(message.job_id, deliveries, outcome)
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self.stop.is_set():
            conn.process_data_events(time_limit=0.2)
        channel.basic_nack(tag, requeue=True)

    def _records(self) -> JobRecords:
        """Job records alone (no engine): for cancel checks and for recording a give-up."""
        if self._plain_records is None:
            self._plain_records = records_for(open_store(self.settings, "minio"))
        return self._plain_records

    def _record_give_up(self, job_id: str, deliveries: int, error: str) -> None:
        try:
            self._records().set_state(
                job_id, JobState.FAILED,
                f"infrastructure error on each of {deliveries} deliveries, last: {error}; "
                "the request is in the dead-letter queue (nps dlq ls / replay)")
        except NPSError as exc:
            log.warning("could not record the failure of %s: %s", job_id, exc)

    def _run_pumping(self, conn: Any, request: JobRequested) -> str | None:
        """Run the job in a thread while this one keeps the broker connection alive.

        Returns None when the job reached a terminal status (ack), else the error (requeue).
        """
        outcome: dict[str, str | None] = {"error": "worker stopped before the job ended"}
        cancel, finished = threading.Event(), threading.Event()

        def target() -> None:
            try:
                self._execute(request, cancel)
                outcome["error"] = None
            except Exception as exc:
                log.debug("job %s failed:\n%s", request.job_id, traceback.format_exc())
                outcome["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                # Wake the pumping loop now rather than at its next 0.2 s tick: the ack (and with
                # prefetch 1, the next job's delivery) waits for it.
                finished.set()
                with contextlib.suppress(*PIKA_ERRORS):
                    conn.add_callback_threadsafe(lambda: None)

        try:
            self._job_tools()  # built here, in one thread, before the job thread needs them
        except NPSError as exc:  # e.g. the engine is down: an infrastructure error like any other
            self.failures += 1
            return f"{type(exc).__name__}: {exc}"
        records = self._records()
        thread = threading.Thread(target=target, name=f"job-{request.job_id[:8]}", daemon=True)
        thread.start()
        next_cancel_check = time.monotonic() + CANCEL_POLL_S
        lost: BaseException | None = None
        while not finished.is_set():
            if lost is None:
                try:
                    conn.process_data_events(time_limit=0.2)
                except PIKA_ERRORS as exc:
                    # The broker went away: let the job finish (its message will be redelivered
                    # and find the result), then reconnect. Never leave a job thread behind.
                    lost = exc
            else:
                finished.wait(timeout=0.2)
            if time.monotonic() >= next_cancel_check:
                next_cancel_check = time.monotonic() + CANCEL_POLL_S
                try:
                    if records.cancel_requested(request.job_id):
                        cancel.set()
                except NPSError:
                    pass
        thread.join()
        if lost is not None:
            raise lost
        if outcome["error"] is None:
            self.failures = 0
        else:
            self.failures += 1
        return outcome["error"]

    def _execute(self, request: JobRequested, cancel: threading.Event) -> None:
        ctx, publisher = self._job_tools()
        while not self._run_if_ours(ctx.store, ctx, request, cancel, publisher):
            history = ctx.records.history(request.job_id)
            if (history and history[-1].state in TERMINAL) or cancel.is_set():
                log.info("%s: job %s was finished elsewhere", self.name, request.job_id)
                return
            time.sleep(LOCK_RETRY_S)

    def _run_if_ours(self, store: DatasetStore, ctx: JobContext, request: JobRequested, cancel: threading.Event,
                     publisher: Publisher) -> bool:
        """Run the job if no one else is running it; False if someone is (then we wait and look again).

        A duplicate must not simply be dropped: if the other runner dies, its lock expires and
        this delivery is the one that finishes the job.
        """
        lost = threading.Event()
        with store.exclusive(f"job-{request.job_id}", lost=lost) as held:
            if not held:
                return False
            log.info("%s: running job %s", self.name, request.job_id)
            try:
                status = execute(ctx, request, cancel, abandon=lost)
            except JobAbandoned as exc:  # another worker took the job over: its run is the job's
                log.warning("%s: lost the lock of job %s (paused past its lease?); stopped it: %s",
                            self.name, request.job_id, exc)
                return True
            log.info("%s: job %s %s%s", self.name, request.job_id, status.state.value,
                     f" ({status.reason})" if status.reason else "")
            if status.state == JobState.COMPLETE:
                _announce(publisher, DatasetCreated(dataset_id=request.job_id, kind="result",
                                                    project=request.project))
            return True

    def _dead_letter(self, body: bytes, headers: dict[str, Any], message_id: str | None, reason: str) -> None:
        log.warning("%s: dead-lettering a message: %s", self.name, reason)
        publisher = Publisher(self.topology)
        try:
            publisher.publish_raw("", self.topology.dlq, body, {**headers, REASON_HEADER: reason}, message_id)
        finally:
            publisher.close()


def repair_submissions(settings: Settings, stop: threading.Event) -> None:
    """Until ``stop``: at once, then every so often, publish the jobs whose submitter died
    between recording and publishing them (``nps.jobs.outbox``). One worker at a time does
    it (a lock in MinIO); two at once would only send a duplicate message."""
    grace = settings.job_republish_after_s
    every = min(REPAIR_EVERY_MAX_S, max(REPAIR_EVERY_MIN_S, grace / 4))
    publisher = Publisher(topology(settings))
    store: DatasetStore | None = None
    try:
        while not stop.is_set():
            try:
                store = store or open_store(settings, "minio")
                with store.exclusive(REPAIR_LOCK) as held:
                    if held:
                        republish_stranded(records_for(store), publisher, grace)
            except Exception as exc:
                log.warning("repair of interrupted submissions: %s; trying again in %ss", exc, every,
                            exc_info=not isinstance(exc, (NPSError, *PIKA_ERRORS)))
                publisher.close()
            stop.wait(every)
    finally:
        publisher.close()


def _announce(publisher: Publisher, message: JobStatus | DatasetCreated) -> None:
    # Events feed derived views (the index); the record in MinIO is authoritative, so a failed
    # announcement is logged, not fatal.
    try:
        publisher.event(message)
    except NPSError as exc:
        log.warning("could not publish %s event: %s", message.type, exc)


def main(settings: Settings, concurrency: int) -> int:
    """Run ``concurrency`` consuming threads until SIGTERM or SIGINT."""
    setup_logging()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: finishing running jobs, taking no new ones", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        reaped = DockerEngine(settings.docker_host).reap_orphans()
        if reaped:
            log.info("removed %d container(s) left by dead workers: %s", len(reaped), ", ".join(reaped))
        swept = sweep_leftovers(job_context(settings, open_store(settings, "minio")))
        if swept:
            log.info("removed %d scratch folder(s) left by dead workers", len(swept))
    except (NPSError, OSError) as exc:
        log.warning("could not clean up after dead workers: %s", exc)
    workers = [JobWorker(settings, stop, f"worker-{i + 1}") for i in range(concurrency)]
    threads = [threading.Thread(target=w.run, name=w.name) for w in workers]
    for t in threads:
        t.start()
    # A daemon: it holds no job, and must not keep a stopping worker waiting for its next round.
    threading.Thread(target=repair_submissions, args=(settings, stop), name="repair", daemon=True).start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.5)
    log.info("all workers stopped")
    return 0
