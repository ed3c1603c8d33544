"""The job worker: ``nps worker jobs --concurrency N``.

Each of N threads holds its own RabbitMQ connection with prefetch 1, takes one job request,
runs it (``nps.jobs.execute``; the consumer runner keeps the connection's heartbeats alive
meanwhile), and acks only after the job reached a terminal status in MinIO. So:

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

import logging
import threading
import time
import traceback

from nps.broker import ACK, Consumer, Delivery, Outcome, Publisher, Requeue, stop_on_signals, topology
from nps.config import Settings
from nps.engine import DockerEngine
from nps.errors import NPSError
from nps.jobs import TERMINAL, JobContext, JobRecords, job_context, records_for
from nps.jobs.execute import JobAbandoned, execute, sweep_leftovers
from nps.jobs.outbox import republish_stranded
from nps.process_logging import setup_logging
from nps.store import DatasetStore, open_store
from schemas.messages import DatasetCreated, JobRequested, JobState, JobStatus

log = logging.getLogger("nps.worker.jobs")
CANCEL_POLL_S = 1.0
LOCK_RETRY_S = 1.0
REPAIR_EVERY_MIN_S, REPAIR_EVERY_MAX_S = 0.5, 30.0
REPAIR_LOCK = "jobs-unpublished-repair"


class JobWorker:
    """One consuming connection with prefetch 1: one job at a time."""

    def __init__(self, settings: Settings, stop: threading.Event, name: str) -> None:
        self.settings = settings
        self.stop = stop
        self.name = name
        self.topology = topology(settings)
        self._ctx: JobContext | None = None
        self._plain_records: JobRecords | None = None
        self._publisher: Publisher | None = None

    def _job_tools(self) -> tuple[JobContext, Publisher]:
        """Store, engine, records and publisher, made once and reused for every job."""
        if self._ctx is None or self._publisher is None:
            self._publisher = Publisher(self.topology)
            self._ctx = job_context(self.settings, open_store(self.settings, "minio"))
            publisher = self._publisher
            self._ctx.records.listeners.append(lambda status: _announce(publisher, status))
        return self._ctx, self._publisher

    def run(self) -> None:
        """Consume until ``stop`` is set, reconnecting with backoff when the broker goes away."""
        log.info("%s: waiting for jobs on %s", self.name, self.topology.jobs)
        try:
            Consumer(self.topology, "jobs", self.handle, accepts=(JobRequested,), name=self.name,
                     logger=log).run(self.stop)
        finally:
            if self._publisher is not None:
                self._publisher.close()

    def handle(self, delivery: Delivery[JobRequested]) -> Outcome:
        """Run the job; ack once it reached a terminal status, else requeue (infrastructure error)."""
        request = delivery.message
        error = self._run(request)
        if error is None:
            return ACK
        if delivery.deliveries > self.settings.job_delivery_limit:
            # RabbitMQ dead-letters it after this requeue: leave a final status saying why.
            self._record_give_up(request.job_id, delivery.deliveries, error)
        return Requeue(f"job {request.job_id} hit an infrastructure error ({error})")

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

    def _run(self, request: JobRequested) -> str | None:
        """Run the job, watching for a cancel request meanwhile. None when the job reached a
        terminal status, else the infrastructure error (the caller requeues)."""
        try:
            self._job_tools()
            records = self._records()
        except NPSError as exc:  # e.g. the engine is down: an infrastructure error like any other
            return f"{type(exc).__name__}: {exc}"
        cancel, finished = threading.Event(), threading.Event()
        watcher = threading.Thread(target=_watch_cancel, args=(records, request.job_id, cancel, finished),
                                   name=f"cancel-{request.job_id[:8]}", daemon=True)
        watcher.start()
        try:
            self._execute(request, cancel)
        except Exception as exc:
            log.debug("job %s failed:\n%s", request.job_id, traceback.format_exc())
            return f"{type(exc).__name__}: {exc}"
        finally:
            finished.set()  # the watcher ends at its next look; no need to wait for it
        return None

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
                            exc_info=not isinstance(exc, NPSError))
                publisher.close()
            stop.wait(every)
    finally:
        publisher.close()


def _watch_cancel(records: JobRecords, job_id: str, cancel: threading.Event, finished: threading.Event) -> None:
    """Until ``finished``: set ``cancel`` once someone asked to cancel the job."""
    while not finished.wait(CANCEL_POLL_S):
        try:
            if records.cancel_requested(job_id):
                cancel.set()
                return
        except NPSError:
            pass


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
    stop = stop_on_signals(log, "finishing running jobs, taking no new ones")
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
