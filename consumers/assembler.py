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
import signal
import threading
import time
from typing import Any

from nps.broker import Publisher, topology
from nps.broker.rabbitmq import REASON_HEADER, run_reconnecting
from nps.config import Settings
from nps.errors import NPSError
from nps.ingest.assembly import Assembly, Pending, commit_series
from nps.process_logging import setup_logging
from nps.store.minio import MinioStore
from schemas.messages import BatchClosed, DatasetCreated, InstanceReceived, MalformedMessage, decode_message

log = logging.getLogger("nps.worker.assemble")
POLL_S = 0.2


class Assembler:
    """One consuming connection and the open series it holds."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.settings = settings
        self.stop = stop
        self.topology = topology(settings)
        self.store = MinioStore(settings)
        self.prefetch = settings.series_prefetch
        self.publisher = Publisher(self.topology)

    def run(self) -> None:
        """Consume until ``stop``; reconnect with backoff (held deliveries come back on their own)."""
        run_reconnecting(self._consume, self.stop, "assembler", log)
        self.publisher.close()

    def _consume(self) -> None:
        assembly = Assembly(self.settings.series_stable_seconds, self.settings.series_max_open_seconds)
        conn = self.topology.connect()
        try:
            channel = conn.channel()
            self.topology.declare(channel)
            channel.basic_qos(prefetch_count=self.prefetch)
            log.info("assembling series from %s (stable after %ss)", self.topology.instances, assembly.stable_age)
            for method, props, body in channel.consume(self.topology.instances, inactivity_timeout=POLL_S):
                if method is not None:
                    self._take(channel, assembly, method.delivery_tag, body, props)
                self._commit_due(channel, assembly)
                if self.stop.is_set():
                    break
        finally:
            if conn.is_open:
                conn.close()  # unacked deliveries go back to the queue for the next assembler

    def _take(self, channel: Any, assembly: Assembly, tag: int, body: bytes, props: Any) -> None:
        now = time.monotonic()
        try:
            message = decode_message(body)
            if not isinstance(message, InstanceReceived | BatchClosed):
                raise MalformedMessage(f"{message.type}: the instances queue takes instance.received and batch.closed")
        except MalformedMessage as exc:
            log.warning("dead-lettering a malformed message: %s", exc)
            self.publisher.publish_raw("", self.topology.instances_dlq, body,
                                       {**(props.headers or {}), REASON_HEADER: f"malformed message: {exc}"},
                                       props.message_id)
            channel.basic_ack(tag)
            return
        if isinstance(message, InstanceReceived):
            assembly.add(message, tag, now)
        elif not assembly.close(message.dataset_ids, tag):
            channel.basic_ack(tag)

    def _commit_due(self, channel: Any, assembly: Assembly) -> None:
        now = time.monotonic()
        for pending in assembly.due(now, capacity=self.prefetch):
            try:
                self._commit(pending)
            except Exception as exc:
                delay = assembly.retry_later(pending.dataset_id, now)
                log.warning("committing series %s failed (%s); retrying in %ss", pending.dataset_id, exc, delay,
                            exc_info=not isinstance(exc, NPSError))
                continue
            for tag in assembly.done(pending.dataset_id).tags:
                channel.basic_ack(tag)

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
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    Assembler(settings, stop).run()
    return 0
