"""The DICOM receiver: ``nps receiver``. A C-STORE/C-ECHO SCP that turns every instance it
accepts into a durable, announced part of its series.

- Every storage SOP class (and private ones) in every transfer syntax pynetdicom knows.
- Instances stream to a temporary file as their fragments arrive (never whole in memory),
  then ``Ingestor.ingest`` reads the header once, writes the bytes once to their place in
  MinIO and publishes ``instance.received`` with a publisher confirm. Only then does the
  sender get success (0x0000): success means durable.
- MinIO or RabbitMQ down: 0xA700 (out of resources), the sender retries later.
  Refused instances go to the quarantine and get an error status (see ``STATUS``).
  The handler never raises.
- ``TCP_NODELAY`` on every socket (without it each DIMSE message waits ~40 ms for a delayed
  ACK). ``--processes N`` runs N receivers on one port with ``SO_REUSEPORT``: one Python
  process tops out near 200-250 instances/s.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from nps.broker import topology
from nps.config import Settings
from nps.dicom.instance import RejectReason
from nps.errors import BrokerUnavailable, ConfigError, NPSError, StoreUnavailable
from nps.ingest import Ingestor
from nps.locks import held, is_free
from nps.store.minio import MinioStore

log = logging.getLogger("nps.receiver")

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700  # retryable: storage or broker unavailable
UNEXPECTED = 0xC0FF
STATUS = {
    RejectReason.NOT_DICOM: 0xC000,  # Error: cannot understand
    RejectReason.TRUNCATED: 0xC001,
    RejectReason.CONFLICT: 0xC002,
    RejectReason.MISSING_UID: 0xA900,  # Error: data set does not match SOP class
    RejectReason.INVALID_UID: 0xA901,
    RejectReason.NOT_AN_INSTANCE: 0xA902,
}


_KEEP: list[object] = []


class NodelayServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with TCP_NODELAY on every accepted socket and, for several
    receiving processes on one port, SO_REUSEPORT on the listening one."""

    reuse_port = False

    def server_bind(self) -> None:
        if self.reuse_port and self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address


def make_handler(ingestor: Ingestor) -> Any:
    """The C-STORE handler: never raises, maps every outcome to a DICOM status."""

    def handle_store(event: Any) -> int:
        calling = _ae(event, "requestor")
        try:
            path = Path(event.dataset_path)
            outcome = ingestor.ingest(path, f"dicom from {calling or '?'}@{_peer(event)}", calling_ae=calling,
                                      called_ae=_ae(event, "acceptor"))
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
        return SUCCESS

    return handle_store


def _ae(event: Any, side: str) -> str | None:
    try:
        return str(getattr(event.assoc, side).ae_title).strip() or None
    except Exception:
        return None


def _peer(event: Any) -> str:
    try:
        return f"{event.assoc.requestor.address}:{event.assoc.requestor.port}"
    except Exception:
        return "?"


def build_ae(settings: Settings) -> AE:
    """The application entity with every storage context and verification."""
    _config.UNRESTRICTED_STORAGE_SERVICE = True  # private and future SOP classes too
    _config.STORE_RECV_CHUNKED_DATASET = True  # stream instances to disk, not memory
    ae = AE(ae_title=settings.dicom_aet)
    ae.maximum_associations = 32
    ae.network_timeout = 60
    ae.dimse_timeout = 60
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    return ae


def serve(settings: Settings, stop: threading.Event, reuse_port: bool = False,
          ready: threading.Event | None = None) -> None:
    """Receive until ``stop``; finish the associations in progress, then return."""
    _use_private_tmp(settings.cache / "receiver")
    ingestor = Ingestor(MinioStore(settings), topology(settings), project=settings.project,
                        ae_projects=settings.ae_projects)
    ae = build_ae(settings)
    NodelayServer.reuse_port = reuse_port
    try:
        server = ae.make_server((settings.dicom_bind, settings.dicom_port), server_class=NodelayServer,
                                evt_handlers=[(evt.EVT_C_STORE, make_handler(ingestor))])
    except OSError as exc:
        ingestor.close()
        raise ConfigError(f"cannot listen on {settings.dicom_bind}:{settings.dicom_port}: {exc.strerror or exc}"
                          " (another receiver running? choose --port)") from exc
    ae._servers.append(server)  # as start_server would: its shutdown() removes it from there
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
            server.shutdown()  # stops accepting, waits for the associations in progress, closes
        finally:
            ingestor.close()


def _use_private_tmp(root: Path) -> None:
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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("pika", "pynetdicom", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
