"""The series assembler: ``nps worker assemble``. Received instances become series datasets.

It consumes ``<prefix>.instances`` (single active consumer: run several for failover, one
works at a time) and keeps each series open until it is stable (``NPS_SERIES_STABLE_SECONDS``,
default 60), its import batch is closed, or it has been open for ``NPS_SERIES_MAX_OPEN_SECONDS``.
Then it commits the series (``nps.ingest.assembly.commit_series``), announces
``dataset.created`` (revision > 1 when an instance amended a committed series) and only then
acknowledges the instances' deliveries. Killed at any point, it loses nothing: unacked
deliveries come back and committing is idempotent. Malformed messages are dead-lettered at
once to ``<prefix>.instances.dlq`` with their reason.
"""

from __future__ import annotations

import logging
import threading
import time

from nps.broker import ACK, HOLD, Consumer, Delivery, Outcome, Publisher, stop_on_signals, topology
from nps.config import Settings
from nps.errors import NPSError
from nps.ingest.assembly import Assembly, Pending, commit_series
from nps.process_logging import setup_logging
from nps.store.minio import MinioStore
from schemas.messages import BatchClosed, DatasetCreated, InstanceReceived

log = logging.getLogger("nps.worker.assemble")


class Assembler:
    """The open series of one consuming connection, and the deliveries they hold."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.topology = topology(settings)
        self.store = MinioStore(settings)
        self.prefetch = settings.series_prefetch
        self.publisher = Publisher(self.topology)
        self.assembly = self._new_assembly()
        self.held: dict[int, Delivery[InstanceReceived | BatchClosed]] = {}

    def _new_assembly(self) -> Assembly:
        return Assembly(self.settings.series_stable_seconds, self.settings.series_max_open_seconds)

    def run(self) -> None:
        """Consume until ``stop``; reconnect with backoff (held deliveries come back on their own)."""
        try:
            Consumer(self.topology, "instances", self.take, accepts=(InstanceReceived, BatchClosed),
                     name="assembler", prefetch=self.prefetch, prepare=self.start, tick=self.commit_due,
                     logger=log).run(self.stop)
        finally:
            self.publisher.close()

    def start(self) -> None:
        """A new connection: the deliveries held on the last one are back in the queue."""
        self.assembly = self._new_assembly()
        self.held.clear()
        log.info("assembling series from %s (stable after %ss)", self.topology.instances, self.assembly.stable_age)

    def take(self, delivery: Delivery[InstanceReceived | BatchClosed]) -> Outcome:
        """Hold an instance in its series; a closed batch makes its series due."""
        message = delivery.message
        if isinstance(message, InstanceReceived):
            self.assembly.add(message, delivery.tag, time.monotonic())
        elif not self.assembly.close(message.dataset_ids, delivery.tag):
            return ACK
        self.held[delivery.tag] = delivery
        return HOLD

    def commit_due(self) -> None:
        """Commit the series that are due; ack their deliveries once committed and announced."""
        now = time.monotonic()
        for pending in self.assembly.due(now, capacity=self.prefetch):
            try:
                self._commit(pending)
            except Exception as exc:
                delay = self.assembly.retry_later(pending.dataset_id, now)
                log.warning("committing series %s failed (%s); retrying in %ss", pending.dataset_id, exc, delay,
                            exc_info=not isinstance(exc, NPSError))
                continue
            for tag in self.assembly.done(pending.dataset_id).tags:
                self.held.pop(tag).ack()

    def _commit(self, pending: Pending) -> None:
        result = commit_series(self.store, pending)
        if result.missing:
            log.error("series %s: %d announced instance(s) are not in the store and were left out: %s",
                      pending.dataset_id, len(result.missing), ", ".join(result.missing[:5]))
        if result.manifest is None:
            return
        if result.changed:
            log.info("committed series %s revision %d (+%d instances, %d files)", pending.dataset_id,
                     result.manifest.revision, result.added, len(result.manifest.files))
        # Announced even when nothing changed: a redelivery after a crash between commit and
        # announcement must still reach the indexer (indexing is idempotent).
        self.publisher.event(DatasetCreated(dataset_id=pending.dataset_id, kind="series",
                                            revision=result.manifest.revision, project=pending.project))


def main(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT."""
    setup_logging()
    Assembler(settings, stop_on_signals()).run()
    return 0
