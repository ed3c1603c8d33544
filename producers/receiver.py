"""The DICOM receiver: ``nps receiver``. A C-STORE/C-ECHO SCP that turns every instance it
accepts into a durable, announced part of its series.

- The protocol is ``producers.dicom_scp`` (thread per association, no polling): every storage
  SOP class, standard, private or unknown, in whatever transfer syntax the sender proposes first.
- Instances stream to a temporary file as their fragments arrive (never whole in memory),
  then ``Ingestor.ingest`` reads the header once, writes the bytes once to their place in
  MinIO and publishes ``instance.received`` with a publisher confirm. Only then does the
  sender get success (0x0000): success means durable.
- MinIO or RabbitMQ down: 0xA700 (out of resources), the sender retries later; once one is
  known down the answer comes at once, and the receiver resumes by itself when a background
  probe finds it back (``nps.ingest.outages``). Refused instances go to the quarantine and get
  an error status (see ``STATUS``). A duplicate never stops a sender: the same SOPInstanceUID
  with a different data set keeps the first copy, answers success and leaves the new copy in
  the quarantine for an admin. The handler never raises.
- ``TCP_NODELAY`` on every socket (without it each DIMSE message waits ~40 ms for a delayed
  ACK). ``--processes N`` runs N receivers on one port with ``SO_REUSEPORT`` (the kernel
  spreads connections by a hash of their addresses, not by load).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path

import pydicom.config

from nps.broker import topology
from nps.config import Settings
from nps.dicom.instance import RejectReason
from nps.errors import BrokerUnavailable, ConfigError, NPSError, StoreUnavailable
from nps.ingest import Ingestor
from nps.locks import held, is_free
from nps.process_logging import setup_logging
from nps.store.minio import MinioStore
from producers.dicom_scp import Handler, StoreRequest, StoreServer

log = logging.getLogger("nps.receiver")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # retryable: storage or broker unavailable
UNEXPECTED = 0xC0FF
STATUS = {
    RejectReason.NOT_DICOM: 0xC000,  # Error: cannot understand
    RejectReason.TRUNCATED: 0xC001,
    RejectReason.MISSING_UID: 0xA900,  # Error: data set does not match SOP class
    RejectReason.INVALID_UID: 0xA901,
    RejectReason.NOT_AN_INSTANCE: 0xA902,
}


_KEEP: list[object] = []


def make_handler(ingestor: Ingestor) -> Handler:
    """The C-STORE handler: never raises, maps every outcome to a DICOM status."""

    def handle_store(request: StoreRequest) -> int:
        calling = request.calling_ae
        try:
            outcome = ingestor.ingest(request.path, f"dicom from {calling or '?'}@{request.peer}", calling_ae=calling,
                                      called_ae=request.called_ae)
        except (StoreUnavailable, BrokerUnavailable) as exc:
            log.warning("instance from %s not stored, sender should retry: %s", calling, exc)
            return OUT_OF_RESOURCES
        except NPSError as exc:
            log.error("instance from %s refused: %s", calling, exc)
            return UNEXPECTED
        except Exception:
            log.exception("unexpected error storing an instance from %s", calling)
            return UNEXPECTED
        if outcome.status == "rejected":
            assert outcome.reason is not None
            log.warning("instance from %s quarantined as %s (%s): %s", calling, outcome.quarantine_id,
                        outcome.reason.value, outcome.detail)
            return STATUS[outcome.reason]
        if outcome.status == "duplicate_differs":
            log.warning("instance from %s kept in the quarantine as %s: %s", calling, outcome.quarantine_id,
                        outcome.detail)
        return SUCCESS

    return handle_store


def serve(settings: Settings, stop: threading.Event, reuse_port: bool = False,
          ready: threading.Event | None = None) -> None:
    """Receive until ``stop``; finish the messages in progress, then return."""
    spool = _use_private_tmp(settings.cache / "receiver")
    # Headers are judged by read_instance; pydicom's per-value validation only costs CPU here.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    ingestor = Ingestor(MinioStore(settings), topology(settings), project=settings.project,
                        ae_projects=settings.ae_projects)
    try:
        server = StoreServer((settings.dicom_bind, settings.dicom_port), make_handler(ingestor), spool_dir=spool,
                             reuse_port=reuse_port)
    except OSError as exc:
        ingestor.close()
        raise ConfigError(f"cannot listen on {settings.dicom_bind}:{settings.dicom_port}: {exc.strerror or exc}"
                          " (another receiver running? choose --port)") from exc
    thread = threading.Thread(target=server.serve_forever, name="dicom-server", daemon=True)
    thread.start()
    log.info("DICOM receiver %s listening on %s:%d (pid %d)", settings.dicom_aet, settings.dicom_bind,
             settings.dicom_port, os.getpid())
    if ready is not None:
        ready.set()
    try:
        stop.wait()
    finally:
        try:
            server.stop()  # stops accepting, lets each association finish its message, closes
        finally:
            ingestor.close()


def _use_private_tmp(root: Path) -> Path:
    """Received instances are spooled under ``root/<pid>`` (on disk, not tmpfs); spools of dead
    receivers are removed."""
    root.mkdir(parents=True, exist_ok=True)
    mine = root / str(os.getpid())
    # Lock first, folder second: a sibling sweeping at this moment sees our folder only once
    # its lock is held. Held for the life of the process; the kernel releases it when we die.
    lock = held(root / f"{os.getpid()}.lock")
    lock.__enter__()
    _KEEP.append(lock)  # a collected context manager would release the lock
    mine.mkdir(exist_ok=True)
    for spool in root.iterdir():
        if spool.is_dir() and spool != mine and is_free(root / f"{spool.name}.lock"):
            shutil.rmtree(spool, ignore_errors=True)
    tempfile.tempdir = str(mine)
    return mine


def _process_main(settings: Settings, reuse_port: bool) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if not reuse_port:
        serve(settings, stop)  # errors reach the CLI, which prints them as one line
        return
    try:
        serve(settings, stop, reuse_port=True)
    except NPSError as exc:
        log.error("%s", exc)
        sys.exit(1)


def main(settings: Settings, processes: int = 1) -> int:
    """Run ``processes`` receivers on one port until SIGTERM or SIGINT."""
    setup_logging()
    if processes <= 1:
        _process_main(settings, reuse_port=False)
        return 0
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_process_main, args=(settings, True), name=f"receiver-{n}")
                for n in range(processes)]
    for child in children:
        child.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(1.0):
        if any(not c.is_alive() for c in children):
            log.error("a receiver process exited; stopping the others")
            break
    for child in children:
        if child.pid is not None and child.is_alive():
            os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join()
    return 0 if stop.is_set() else 1
