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
import signal
import threading
from typing import Any

from nps.blobs import MinioBlobs
from nps.broker import Publisher, topology
from nps.broker.rabbitmq import PIKA_ERRORS, REASON_HEADER, backoff_delay
from nps.config import Settings
from nps.errors import DatasetNotFound, InvalidQuery, NPSError
from nps.index import DatasetIndex
from nps.index.sync import document_from_store
from nps.layers import Layers
from nps.process_logging import setup_logging
from nps.store import open_store
from schemas.messages import DatasetCreated, DatasetIndexed, MalformedMessage, decode_message

log = logging.getLogger("nps.worker.index")
# Waits before requeueing an event that failed for want of a service: long, since each requeue
# spends one of the event's deliveries. Reconnecting waits nps.broker's short, capped back-off.
BACKOFF_S = (1, 2, 5, 10, 30)


def run(settings: Settings, stop: threading.Event) -> None:
    """Consume dataset events until ``stop``; reconnect with backoff."""
    topo = topology(settings)
    index = DatasetIndex(settings.es_url, settings.queue_prefix)
    store = open_store(settings, "minio")
    publisher = Publisher(topo)
    failures = 0
    while not stop.is_set():
        try:
            index.ensure()
            conn = topo.connect()
            try:
                channel = conn.channel()
                topo.declare(channel)
                channel.basic_qos(prefetch_count=10)
                log.info("indexing dataset events from %s into %s", topo.index, index.name)
                for method, props, body in channel.consume(topo.index, inactivity_timeout=0.5):
                    if method is not None:
                        failures = _handle(channel, method.delivery_tag, body, props, store, index, settings,
                                           failures, stop, publisher)
                    if stop.is_set():
                        break
                channel.cancel()
            finally:
                if conn.is_open:
                    conn.close()
        except Exception as exc:
            delay = backoff_delay(failures)
            failures += 1
            expected = isinstance(exc, (NPSError, *PIKA_ERRORS))
            log.warning("indexer: %s; retrying in %ss", exc, delay, exc_info=not expected)
            stop.wait(delay)


def _handle(channel: Any, tag: int, body: bytes, props: Any, store: Any, index: DatasetIndex,
            settings: Settings, failures: int, stop: threading.Event, publisher: Publisher) -> int:
    try:
        event = decode_message(body)
        if not isinstance(event, DatasetCreated):
            raise MalformedMessage(f"{event.type}: the index queue only takes dataset.created")
    except MalformedMessage as exc:
        publisher = Publisher(topology(settings))
        try:
            publisher.publish_raw("", topology(settings).index_dlq, body,
                                  {**(props.headers or {}), REASON_HEADER: f"malformed message: {exc}"},
                                  props.message_id)
        finally:
            publisher.close()
        channel.basic_ack(tag)
        return failures
    try:
        doc = _index_one(store, index, event.dataset_id)
        # Processors react to this (the document is searchable now); lost, it would cost a sweep.
        publisher.event(DatasetIndexed(dataset_id=event.dataset_id, kind=doc["kind"], revision=doc["revision"],
                                       project=doc.get("project")))
    except DatasetNotFound:
        log.warning("dataset %s no longer exists; nothing to index", event.dataset_id)
    except Exception as exc:
        delay = BACKOFF_S[min(failures, len(BACKOFF_S) - 1)]
        log.warning("indexing %s failed (%s); requeueing in %ss", event.dataset_id, exc, delay)
        stop.wait(delay)
        channel.basic_nack(tag, requeue=True)
        return failures + 1
    channel.basic_ack(tag)
    log.info("indexed %s", event.dataset_id)
    return 0


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
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(settings, stop)
    return 0
