"""The processor engine: ``nps worker processors``. New data is processed as it arrives.

It consumes ``dataset.indexed`` events from ``<prefix>.processors`` (a dataset is searchable
once its event is here) and, for every processor whose targets the dataset may complete,
plans the target and submits the jobs not yet submitted (``nps.processors.engine``). A new
result is an indexed dataset too, so pipelines advance step by step. Processor files are
re-read when they change; a broken one (a bad file, an image that cannot be resolved, a query
Elasticsearch refuses) is logged and skipped, never blocking the others. A processor whose query
Elasticsearch refuses while an event is handled is disabled then (one log line, a mark that
``nps processors status`` shows) until its file changes or the worker restarts; the event goes
on for the others. Malformed events are dead-lettered; store, index or broker failures requeue
with backoff.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from nps.broker import Publisher, topology
from nps.broker.rabbitmq import REASON_HEADER, run_reconnecting
from nps.config import Settings
from nps.engine import DockerEngine
from nps.errors import ConfigError, NPSError
from nps.index import DatasetIndex
from nps.jobs import records_for
from nps.process_logging import setup_logging
from nps.processors import load_dir
from nps.processors.engine import ProcessorEngine
from nps.store import open_store
from schemas.messages import DatasetIndexed, MalformedMessage, decode_message

log = logging.getLogger("nps.worker.processors")


class Worker:
    """One consuming connection; the processors reloaded whenever their files change."""

    def __init__(self, settings: Settings, folder: Path, stop: threading.Event) -> None:
        self.settings = settings
        self.folder = folder
        self.stop = stop
        self.topology = topology(settings)
        self.store = open_store(settings, "minio")
        self.index = DatasetIndex(settings.es_url, settings.queue_prefix)
        self.records = records_for(self.store)
        self.docker = DockerEngine(settings.docker_host)
        self.publisher = Publisher(self.topology)
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._engine: ProcessorEngine | None = None

    def engine(self) -> ProcessorEngine:
        """The processors as the files are now (reloaded only after a change)."""
        signature = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                                 for p in self.folder.iterdir() if p.is_file()))
        if self._engine is None or signature != self._signature:
            loaded = load_dir(self.folder)
            self._engine = ProcessorEngine(loaded, self.store, self.index, self.records, self.docker.resolve_image,
                                           self.publisher)
            self._signature = signature
            log.info("processors loaded from %s: %s", self.folder, ", ".join(self._engine.processors) or "none")
            for error in self._engine.errors:
                log.error("processor skipped: %s", error)
            self._engine.disabled.clear(self._engine.processors)  # usable again: given a new chance
        return self._engine

    def run(self) -> None:
        """Consume until ``stop``; reconnect with backoff."""
        run_reconnecting(self._consume, self.stop, "processor engine", log)
        self.publisher.close()

    def _consume(self) -> None:
        conn = self.topology.connect()
        try:
            channel = conn.channel()
            self.topology.declare(channel)
            channel.basic_qos(prefetch_count=1)
            self.engine()
            for method, props, body in channel.consume(self.topology.processors, inactivity_timeout=0.5):
                if method is not None:
                    self._handle(channel, method.delivery_tag, body, props)
                if self.stop.is_set():
                    break
        finally:
            if conn.is_open:
                conn.close()

    def _handle(self, channel: Any, tag: int, body: bytes, props: Any) -> None:
        try:
            event = decode_message(body)
            if not isinstance(event, DatasetIndexed):
                raise MalformedMessage(f"{event.type}: the processors queue takes dataset.indexed")
        except MalformedMessage as exc:
            self.publisher.publish_raw("", self.topology.processors_dlq, body,
                                       {**(props.headers or {}), REASON_HEADER: f"malformed message: {exc}"},
                                       props.message_id)
            channel.basic_ack(tag)
            return
        try:
            doc = self.index.get(event.dataset_id)
            if doc is not None:
                self.engine().on_dataset(doc)
        except Exception as exc:
            log.warning("processing event for %s failed (%s); requeueing", event.dataset_id, exc,
                        exc_info=not isinstance(exc, NPSError))
            self.stop.wait(1)
            channel.basic_nack(tag, requeue=True)
            return
        channel.basic_ack(tag)


def main(settings: Settings, folder: Path | None) -> int:
    """Run until SIGTERM or SIGINT."""
    setup_logging()
    folder = folder or settings.processors
    if folder is None or not folder.is_dir():
        raise ConfigError(f"processor folder {folder} does not exist: pass --dir or set NPS_PROCESSORS")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    Worker(settings, folder, stop).run()
    return 0
