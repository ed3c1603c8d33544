"""A lean DICOM storage SCP: one thread per association, blocking reads, no polling.

Why not pynetdicom's server: its two reactor threads per association poll queues with 1 ms
sleeps, and every command, response and file header goes through pydicom Datasets with value
validation. Measured here, that was 4-5 ms of CPU per instance before NPS did anything with
it, about half of the whole import (``bench/RESULTS.md``). This server keeps pynetdicom where it
is cheap and subtle (decoding A-ASSOCIATE-RQ, presentation context and role negotiation,
encoding A-ASSOCIATE-AC, all once per association) and does the per-instance work with the
pure functions of ``nps.dicom.dimse``:

- every storage SOP class (standard, private, unknown) is accepted in the first transfer
  syntax the sender proposes, as pynetdicom's unrestricted storage service does; Verification
  in the usual three uncompressed syntaxes; anything else is rejected per context;
- a C-STORE's data set streams to a spool file behind a DICOM file header as its fragments
  arrive (never held in memory); the handler is called with that file and its status is sent
  back; C-ECHO answers success; other requests answer 0x0211 (unrecognized operation);
- a protocol violation, an over-long PDU or silence longer than the network timeout aborts
  the association; on shutdown, associations finish the message in progress, then abort, so
  the sender retries the rest elsewhere or later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import socketserver
import struct
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context, negotiate_unrestricted

from nps.dicom import dimse

log = logging.getLogger("nps.receiver")

IMPLEMENTATION_UID = "2.25.338823590948026795524815138291045834360"  # NPS's own, derived from a UUID
IMPLEMENTATION_VERSION = "NPS_1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
UNCOMPRESSED = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"]
MAX_PDU = 256 * 1024  # what we announce; a peer sending longer PDUs is aborted
MAX_ASSOCIATE_RQ = 1024 * 1024
POLL_SECONDS = 1.0  # how often an idle association looks at the shutdown flag


@dataclass(frozen=True)
class StoreRequest:
    """One received instance, spooled to ``path`` (a complete DICOM file) for the handler."""

    path: Path
    calling_ae: str | None
    called_ae: str | None
    peer: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


Handler = Callable[[StoreRequest], int]


class Stopping(Exception):
    """The server is shutting down and the association is between messages."""


class PeerSilent(Exception):
    """The peer sent nothing for longer than the network timeout."""


class Association:
    """One association, driven by the thread that accepted its connection."""

    def __init__(self, sock: socket.socket, peer: tuple[str, int], server: StoreServer) -> None:
        self.sock = sock
        self.peer = f"{peer[0]}:{peer[1]}"
        self.server = server
        self.calling_ae: str | None = None
        self.called_ae: str | None = None
        self.peer_max_pdu = 0
        self.contexts: dict[int, str] = {}  # accepted context id -> transfer syntax
        self.admitted = False  # counted against the server's association limit
        self.buffer = bytearray(6 + MAX_PDU)

    # ---- reading ---------------------------------------------------------------------------
    def _read_into(self, view: memoryview, idle_ok: bool) -> None:
        """Fill ``view`` from the socket. Between messages (``idle_ok``) a shutdown ends the wait."""
        got, idle = 0, 0.0
        while got < len(view):
            try:
                n = self.sock.recv_into(view[got:])
            except TimeoutError:
                idle += POLL_SECONDS
                if idle_ok and got == 0 and self.server.stopping.is_set():
                    raise Stopping() from None
                if idle >= self.server.network_timeout:
                    raise PeerSilent(f"nothing received for {idle:.0f} s") from None
                continue
            if n == 0:
                raise ConnectionResetError("the peer closed the connection")
            got += n
            idle = 0.0

    def read_pdu(self, idle_ok: bool, limit: int = MAX_PDU) -> tuple[int, memoryview]:
        """The next PDU: its type and its body (a view into a reused buffer)."""
        header = memoryview(self.buffer)[:6]
        self._read_into(header, idle_ok)
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in range(1, 8):
            raise dimse.ProtocolError(f"unknown PDU type 0x{pdu_type:02x}")
        if length > limit:
            raise dimse.ProtocolError(f"PDU of {length} bytes exceeds the {limit} agreed")
        if 6 + length > len(self.buffer):
            self.buffer = bytearray(6 + length)
            self.buffer[:6] = header
        body = memoryview(self.buffer)[6:6 + length]
        self._read_into(body, idle_ok=False)
        return pdu_type, body

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def abort(self, source: int = 2, reason: int = 0) -> None:
        with contextlib.suppress(OSError):
            self.send(struct.pack(">BBLBBBB", dimse.ABORT, 0, 4, 0, 0, source, reason))

    # ---- association ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self.negotiate():
                self.serve()
        except Stopping:
            self.abort()
        except (dimse.ProtocolError, PeerSilent) as exc:
            log.warning("association from %s (%s) aborted: %s", self.calling_ae or "?", self.peer, exc)
            self.abort(reason=2 if isinstance(exc, dimse.ProtocolError) else 0)
        except OSError as exc:
            log.info("association from %s (%s) ended: %s", self.calling_ae or "?", self.peer, exc)

    def negotiate(self) -> bool:
        pdu_type, body = self.read_pdu(idle_ok=False, limit=MAX_ASSOCIATE_RQ)
        if pdu_type != dimse.ASSOCIATE_RQ:
            raise dimse.ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02x}")
        rq = A_ASSOCIATE_RQ()
        try:
            rq.decode(bytes(self.buffer[:6 + len(body)]))
            request = rq.to_primitive()
        except Exception as exc:  # pynetdicom raises several types for a malformed PDU
            raise dimse.ProtocolError(f"malformed A-ASSOCIATE-RQ ({type(exc).__name__}: {exc})") from exc
        self.calling_ae = str(request.calling_ae_title).strip() or None
        self.called_ae = str(request.called_ae_title).strip() or None
        if str(request.application_context_name) != APPLICATION_CONTEXT:
            self.reject(1, 1, 2)  # application context name not supported
            return False
        self.admitted = self.server.admit()
        if not self.admitted:
            log.warning("association from %s (%s) rejected: %d associations already open", self.calling_ae,
                        self.peer, self.server.max_associations)
            self.reject(2, 3, 2)  # transient, local limit exceeded
            return False
        self.peer_max_pdu = int(request.maximum_length_received or 0)
        roles: dict[UID, tuple[bool | None, bool | None]] = {}
        async_requested = False
        for item in request.user_information:
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid is not None:
                roles[item.sop_class_uid] = (item.scu_role, item.scp_role)
            elif isinstance(item, AsynchronousOperationsWindowNegotiation):
                async_requested = True
        results, role_replies = negotiate_unrestricted(request.presentation_context_definition_list,
                                                       [self.server.verification], roles)
        self.contexts = {int(cx.context_id): str(cx.transfer_syntax[0]) for cx in results
                         if cx.result == 0x00 and cx.context_id is not None}
        self.send(self._accept(request, results, role_replies, async_requested))
        log.debug("association from %s (%s) accepted with %d contexts", self.calling_ae, self.peer, len(self.contexts))
        return True

    def _accept(self, request: A_ASSOCIATE, results: list[PresentationContext],
                roles: list[SCP_SCU_RoleSelectionNegotiation], async_requested: bool) -> bytes:
        primitive = A_ASSOCIATE()
        primitive.application_context_name = APPLICATION_CONTEXT
        primitive.calling_ae_title = request.calling_ae_title
        primitive.called_ae_title = request.called_ae_title
        primitive.result = 0x00
        primitive.result_source = 0x01
        primitive.presentation_context_definition_results_list = results
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = MAX_PDU
        uid = ImplementationClassUIDNotification()
        uid.implementation_class_uid = IMPLEMENTATION_UID
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = IMPLEMENTATION_VERSION
        info: list[Any] = [max_length, uid, version, *roles]
        if async_requested:  # one operation at a time each way
            window = AsynchronousOperationsWindowNegotiation()
            window.maximum_number_operations_invoked = 1
            window.maximum_number_operations_performed = 1
            info.append(window)
        primitive.user_information = info
        pdu = A_ASSOCIATE_AC()
        pdu.from_primitive(primitive)
        return pdu.encode()

    def reject(self, result: int, source: int, reason: int) -> None:
        self.send(struct.pack(">BBLBBBB", dimse.ASSOCIATE_RJ, 0, 4, 0, result, source, reason))

    # ---- messages -----------------------------------------------------------------------------
    def serve(self) -> None:
        command = bytearray()
        request: dict[int, bytes] | None = None
        context_id = 0
        spool: IO[bytes] | None = None
        spool_path: Path | None = None
        try:
            while True:
                idle = request is None and not command
                pdu_type, body = self.read_pdu(idle_ok=idle)
                if pdu_type == dimse.RELEASE_RQ:
                    if not idle:
                        raise dimse.ProtocolError("A-RELEASE-RQ in the middle of a message")
                    self.send(dimse.RELEASE_RP_PDU)
                    return
                if pdu_type == dimse.ABORT:
                    log.info("association from %s (%s) aborted by the peer", self.calling_ae, self.peer)
                    return
                if pdu_type != dimse.P_DATA:
                    raise dimse.ProtocolError(f"unexpected PDU type 0x{pdu_type:02x} during the association")
                for pdv in dimse.pdvs(body):
                    if pdv.context_id not in self.contexts:
                        raise dimse.ProtocolError(f"presentation context {pdv.context_id} was not accepted")
                    if pdv.is_command:
                        if request is not None:
                            raise dimse.ProtocolError("a command fragment arrived while a data set was expected")
                        if not command:
                            context_id = pdv.context_id
                        elif pdv.context_id != context_id:
                            raise dimse.ProtocolError("command fragments on different presentation contexts")
                        command += pdv.data
                        if len(command) > dimse.MAX_COMMAND_BYTES:
                            raise dimse.ProtocolError("command set longer than 64 KiB")
                        if not pdv.is_last:
                            continue
                        request = dimse.parse_command(bytes(command))
                        command.clear()
                        if dimse.us(request, dimse.DATASET_TYPE) == dimse.NO_DATASET:
                            self.respond(context_id, request, None)
                            request = None
                        continue
                    if request is None or pdv.context_id != context_id:
                        raise dimse.ProtocolError("a data set fragment without its command")
                    if dimse.us(request, dimse.COMMAND_FIELD) == dimse.C_STORE_RQ:
                        if spool is None:
                            spool, spool_path = self._open_spool(request, context_id)
                        spool.write(pdv.data)
                    if pdv.is_last:
                        if spool is not None:
                            spool.close()
                            spool = None
                        self.respond(context_id, request, spool_path)
                        if spool_path is not None:
                            spool_path.unlink(missing_ok=True)
                            spool_path = None
                        request = None
        finally:
            if spool is not None:
                spool.close()
            if spool_path is not None:
                spool_path.unlink(missing_ok=True)

    def _open_spool(self, request: dict[int, bytes], context_id: int) -> tuple[IO[bytes], Path]:
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=self.server.spool_dir)
        spool = os.fdopen(fd, "wb", buffering=1024 * 1024)
        spool.write(dimse.file_header(dimse.text(request, dimse.AFFECTED_SOP_CLASS),
                                      dimse.text(request, dimse.AFFECTED_SOP_INSTANCE), self.contexts[context_id],
                                      IMPLEMENTATION_UID, IMPLEMENTATION_VERSION))
        return spool, Path(name)

    def respond(self, context_id: int, request: dict[int, bytes], spool: Path | None) -> None:
        field = dimse.us(request, dimse.COMMAND_FIELD)
        if field == dimse.C_ECHO_RQ:
            status = 0x0000
        elif field == dimse.C_STORE_RQ and spool is not None:
            status = self._store(request, context_id, spool)
        else:
            status = dimse.UNRECOGNIZED_OPERATION
        for pdu in dimse.p_data_pdus(context_id, dimse.response(request, status), self.peer_max_pdu, command=True):
            self.send(pdu)

    def _store(self, request: dict[int, bytes], context_id: int, spool: Path) -> int:
        store = StoreRequest(spool, self.calling_ae, self.called_ae, self.peer,
                             dimse.text(request, dimse.AFFECTED_SOP_CLASS),
                             dimse.text(request, dimse.AFFECTED_SOP_INSTANCE), self.contexts[context_id])
        try:
            return self.server.handler(store)
        except Exception:  # the handler should never raise; if it does, the sender hears a failure
            log.exception("the C-STORE handler failed for an instance from %s", self.calling_ae)
            return 0xC0FF


class _RequestHandler(socketserver.BaseRequestHandler):
    server: StoreServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(POLL_SECONDS)
        association = Association(sock, self.client_address, self.server)
        try:
            association.run()
        finally:
            if association.admitted:
                self.server.release()


class StoreServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Accepts associations on ``address`` until ``stop()``; ``serve_forever`` runs the loop."""

    allow_reuse_address = True
    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: Handler, spool_dir: Path | None = None,
                 max_associations: int = 32, network_timeout: float = 60.0, reuse_port: bool = False) -> None:
        self.handler = handler
        self.spool_dir = str(spool_dir) if spool_dir is not None else None
        self.max_associations = max_associations
        self.network_timeout = network_timeout
        self.reuse_port = reuse_port
        self.stopping = threading.Event()
        self.verification = build_context(VERIFICATION, UNCOMPRESSED)
        self.verification.context_id = 1
        self._open = 0
        self._lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def admit(self) -> bool:
        with self._lock:
            if self._open >= self.max_associations:
                return False
            self._open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)

    def stop(self) -> None:
        """Stop accepting; let every association finish its current message; wait for them."""
        self.stopping.set()
        self.shutdown()
        self.server_close()
