"""The indexer: ``nps worker index``. Keeps Elasticsearch in step with the store.

It consumes ``dataset.created`` events from ``<prefix>.index`` (bound to the events
exchange), reads the dataset's record, manifest and optional ``.nps/metadata.json`` from
MinIO, and indexes one document per dataset (same id: re-indexing is harmless). It acks only
after Elasticsearch confirmed the write; store or index outages requeue with backoff (then
the delivery limit and ``<prefix>.index.dlq``); malformed events are dead-lettered at once.
Elasticsearch is a derived view: ``nps reindex`` rebuilds it from MinIO.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from nps.blobs import MinioBlobs
from nps.broker import Consumer, Delivery, Outcome, Publisher, Requeue, stop_on_signals, topology
from nps.config import Settings
from nps.errors import DatasetNotFound, InvalidQuery
from nps.index import DatasetIndex
from nps.index.sync import document_from_store
from nps.layers import Layers
from nps.process_logging import setup_logging
from nps.store import open_store
from schemas.messages import DatasetCreated, DatasetIndexed

log = logging.getLogger("nps.worker.index")
PREFETCH = 10


def run(settings: Settings, stop: threading.Event) -> None:
    """Consume dataset events until ``stop``; reconnect with backoff."""
    topo = topology(settings)
    index = DatasetIndex(settings.es_url, settings.queue_prefix)
    store = open_store(settings, "minio")
    publisher = Publisher(topo)

    def handle(delivery: Delivery[DatasetCreated]) -> Outcome | None:
        dataset_id = delivery.message.dataset_id
        try:
            doc = _index_one(store, index, dataset_id)
            # Processors react to this (the document is searchable now); lost, it would cost a sweep.
            publisher.event(DatasetIndexed(dataset_id=dataset_id, kind=doc["kind"], revision=doc["revision"],
                                           project=doc.get("project")))
        except DatasetNotFound:
            log.warning("dataset %s no longer exists; nothing to index", dataset_id)
            return None
        except Exception as exc:
            return Requeue(f"indexing {dataset_id} failed ({exc})", error=exc)
        log.info("indexed %s", dataset_id)
        return None

    def prepare() -> None:
        index.ensure()
        log.info("indexing dataset events from %s into %s", topo.index, index.name)

    try:
        Consumer(topo, "index", handle, accepts=(DatasetCreated,), name="indexer", prefetch=PREFETCH,
                 prepare=prepare, logger=log).run(stop)
    finally:
        publisher.close()


def _index_one(store: Any, index: DatasetIndex, dataset_id: str) -> dict[str, Any]:
    doc = document_from_store(store, dataset_id, Layers(MinioBlobs(store)))
    try:
        index.put(doc)
    except InvalidQuery as exc:  # the metadata clashes with the mapping: index the rest, say why
        if "metadata" not in doc:
            raise
        doc.pop("metadata")
        doc["metadata_error"] = f"rejected by the index: {exc}"[:1000]
        index.put(doc)
    return doc


def main(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT."""
    setup_logging()
    run(settings, stop_on_signals())
    return 0
