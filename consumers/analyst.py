"""The analyst: ``nps worker analyses``. Analyses are planned and their jobs queued here.

It consumes ``analysis.requested`` messages from ``<prefix>.analyses`` and does one bounded
step of an analysis per message (``nps.analyses.fanout``): plan it (members through the index,
every job spec), then queue its jobs a batch at a time with a cursor in the object store,
sending the next step itself before acking. Run any number of analysts; a killed one's
message is delivered again and carries on from the cursor. A message for an analysis that is
not recorded is dead-lettered at once; store, index or broker failures requeue with backoff,
and on the queue's last delivery the analyst sends a fresh copy of the request instead: that
message is the analysis's only driver, so an outage must delay it, never set it aside.
"""

from __future__ import annotations

import logging
import threading

from nps.analyses import AnalysisNotFound, AnalysisRecords, Analyst
from nps.blobs import MinioBlobs
from nps.broker import Consumer, Delivery, Outcome, Publisher, Reject, stop_on_signals, topology
from nps.config import Settings
from nps.errors import BrokerUnavailable, IndexUnavailable, StoreUnavailable
from nps.groups import GroupRecords
from nps.index import DatasetIndex
from nps.jobs import records_for
from nps.jobs.submit import submit_many
from nps.process_logging import setup_logging
from nps.store.minio import MinioStore
from schemas.messages import AnalysisRequested

log = logging.getLogger("nps.worker.analyses")
UNAVAILABLE = (StoreUnavailable, IndexUnavailable, BrokerUnavailable)


def run(settings: Settings, stop: threading.Event) -> None:
    """Consume analysis requests until ``stop``; reconnect with backoff."""
    topo = topology(settings)
    store = MinioStore(settings)
    blobs = MinioBlobs(store)
    index = DatasetIndex(settings.es_url, settings.queue_prefix)
    jobs = records_for(store)
    publisher = Publisher(topo)  # used on the runner's one work thread only
    analyst = Analyst(AnalysisRecords(blobs), GroupRecords(blobs, index), index,
                      lambda requests: submit_many(store, jobs, publisher, requests), publisher.analysis)

    def handle(delivery: Delivery[AnalysisRequested]) -> Outcome | None:
        try:
            progress = analyst.step(delivery.message)
        except AnalysisNotFound as exc:  # never recorded (its request failed) or removed: nothing to do
            return Reject(str(exc))
        except UNAVAILABLE as exc:
            if delivery.deliveries < topo.delivery_limit:
                raise  # requeued with backoff
            message = delivery.message
            publisher.analysis(AnalysisRequested(analysis_id=message.analysis_id, step=message.step))
            log.warning("analysis %s: %s; still failing after %d deliveries, so the request was sent again",
                        message.analysis_id, exc, delivery.deliveries)
            return None
        log.info("analysis %s: %s, %d of %d job(s) queued", delivery.message.analysis_id, progress.state.value,
                 progress.submitted, progress.jobs)
        return None

    try:
        Consumer(topo, "analyses", handle, accepts=(AnalysisRequested,), name="analyst", logger=log).run(stop)
    finally:
        publisher.close()


def main(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT."""
    setup_logging()
    run(settings, stop_on_signals(log))
    return 0
