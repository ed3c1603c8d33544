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
import threading
from pathlib import Path

from nps.broker import Consumer, Delivery, Outcome, Publisher, Requeue, stop_on_signals, topology
from nps.config import Settings
from nps.engine import DockerEngine
from nps.errors import ConfigError
from nps.index import DatasetIndex
from nps.jobs import records_for
from nps.process_logging import setup_logging
from nps.processors import load_dir
from nps.processors.engine import ProcessorEngine
from nps.store import open_store
from schemas.messages import DatasetIndexed

log = logging.getLogger("nps.worker.processors")
RETRY_S = 1.0  # before an event that failed for want of a service goes back to the queue


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
        try:
            Consumer(self.topology, "processors", self.handle, accepts=(DatasetIndexed,), name="processor engine",
                     prepare=self.engine, logger=log).run(self.stop)
        finally:
            self.publisher.close()

    def handle(self, delivery: Delivery[DatasetIndexed]) -> Outcome | None:
        """Plan and submit what the indexed dataset makes possible."""
        dataset_id = delivery.message.dataset_id
        try:
            doc = self.index.get(dataset_id)
            if doc is not None:
                self.engine().on_dataset(doc)
        except Exception as exc:
            return Requeue(f"processing event for {dataset_id} failed ({exc})", after=RETRY_S, error=exc)
        return None


def main(settings: Settings, folder: Path | None) -> int:
    """Run until SIGTERM or SIGINT."""
    setup_logging()
    folder = folder or settings.processors
    if folder is None or not folder.is_dir():
        raise ConfigError(f"processor folder {folder} does not exist: pass --dir or set NPS_PROCESSORS")
    Worker(settings, folder, stop_on_signals()).run()
    return 0
