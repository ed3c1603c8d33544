"""The analyst: ``nps worker analyses``. Analyses are planned and their jobs queued here.

It consumes ``analysis.requested`` messages from ``<prefix>.analyses`` and does one bounded
step of each analysis per message (``nps.analyses.fanout``): plan it (members through the
index, every job spec), then queue its jobs a batch at a time with a cursor in the object
store, sending the next step itself. Run any number of analysts; a killed one's message is
delivered again and carries on from the cursor. Malformed messages are dead-lettered; store,
index or broker failures requeue with backoff.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from nps.analyses import AnalysisRecords, Analyst
from nps.blobs import MinioBlobs
from nps.broker import Publisher, topology
from nps.broker.rabbitmq import REASON_HEADER, run_reconnecting
from nps.config import Settings
from nps.errors import NPSError
from nps.groups import GroupRecords
from nps.index import DatasetIndex
from nps.jobs.records import JobRecords
from nps.jobs.submit import submit_many
from nps.process_logging import setup_logging
from nps.store.minio import MinioStore
from schemas.messages import AnalysisRequested, MalformedMessage, decode_message

log = logging.getLogger("nps.worker.analyses")


class Worker:
    """One consuming connection."""

    def __init__(self, settings: Settings, stop: threading.Event) -> None:
        self.stop = stop
        self.topology = topology(settings)
        store = MinioStore(settings)
        blobs = MinioBlobs(store)
        index = DatasetIndex(settings.es_url, settings.queue_prefix)
        jobs = JobRecords(blobs)
        self.publisher = Publisher(self.topology)
        self.analyst = Analyst(AnalysisRecords(blobs), GroupRecords(blobs, index), index,
                               lambda requests: submit_many(store, jobs, self.publisher, requests),
                               self.publisher.analysis)

    def run(self) -> None:
        """Consume until ``stop``; reconnect with backoff."""
        run_reconnecting(self._consume, self.stop, "analyst", log)
        self.publisher.close()

    def _consume(self) -> None:
        conn = self.topology.connect()
        try:
            channel = conn.channel()
            self.topology.declare(channel)
            channel.basic_qos(prefetch_count=1)
            for method, props, body in channel.consume(self.topology.analyses, inactivity_timeout=0.5):
                if method is not None:
                    self._handle(channel, method.delivery_tag, body, props)
                if self.stop.is_set():
                    break
        finally:
            if conn.is_open:
                conn.close()

    def _handle(self, channel: Any, tag: int, body: bytes, props: Any) -> None:
        try:
            message = decode_message(body)
            if not isinstance(message, AnalysisRequested):
                raise MalformedMessage(f"{message.type}: the analyses queue takes analysis.requested")
        except MalformedMessage as exc:
            self.publisher.publish_raw("", self.topology.analyses_dlq, body,
                                       {**(props.headers or {}), REASON_HEADER: f"malformed message: {exc}"},
                                       props.message_id)
            channel.basic_ack(tag)
            return
        try:
            self.analyst.step(message)
        except Exception as exc:
            log.warning("analysis %s: %s; requeueing", message.analysis_id, exc,
                        exc_info=not isinstance(exc, NPSError))
            self.stop.wait(1)
            channel.basic_nack(tag, requeue=True)
            return
        channel.basic_ack(tag)


def main(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT."""
    setup_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    Worker(settings, stop).run()
    return 0
