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
import time
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
MAX_ASSOCIATE_RQ = 256 * 1024  # real ones are a few KiB to a few tens of KiB
FIRST_BUFFER = 64 * 1024  # grown on demand up to the PDU limit
MAX_INSTANCE = 16 * 1024**3  # one data set larger than this is refused (0xA700), not spooled
PENDING_SLACK = 4  # connections still negotiating, beyond the association limit, before new ones are closed
POLL_SECONDS = 1.0  # how often a waiting read looks at the shutdown flag
ABORT_DRAIN_SECONDS = 0.5  # after A-ABORT, how long to read what the peer still sends before closing
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_NOT_SUPPORTED = 0x0122
CANNOT_UNDERSTAND = 0xC000
C_CANCEL_RQ = 0x0FFF


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
        self.contexts: dict[int, tuple[str, str]] = {}  # accepted context id -> (abstract, transfer syntax)
        self.admitted = False  # counted against the server's association limit
        self.established = False
        self.buffer = bytearray(FIRST_BUFFER)

    # ---- reading ---------------------------------------------------------------------------
    def _read_into(self, view: memoryview, idle_ok: bool) -> None:
        """Fill ``view`` from the socket within the network timeout (for the whole read, so a
        peer trickling bytes is cut off too). A shutdown ends the wait between messages
        (``idle_ok``) and at any point before the association is established."""
        got, start = 0, time.monotonic()
        while got < len(view):
            try:
                n = self.sock.recv_into(view[got:])
            except TimeoutError:
                n = -1
            if n == 0:
                raise ConnectionResetError("the peer closed the connection")
            got += max(n, 0)
            if got < len(view):
                if self.server.stopping.is_set() and ((idle_ok and got == 0) or not self.established):
                    raise Stopping()
                if time.monotonic() - start >= self.server.network_timeout:
                    raise PeerSilent(f"{len(view) - got} bytes still missing after {self.server.network_timeout:.0f} s")

    def read_pdu(self, idle_ok: bool, limit: int = MAX_PDU) -> tuple[int, memoryview]:
        """The next PDU: its type and its body (a view into a reused buffer, valid until the next read)."""
        header = memoryview(self.buffer)[:6]
        self._read_into(header, idle_ok)
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in range(1, 8):
            raise dimse.ProtocolError(f"unknown PDU type 0x{pdu_type:02x}")
        if length > limit:
            raise dimse.ProtocolError(f"PDU of {length} bytes exceeds the {limit} agreed")
        if 6 + length > len(self.buffer):  # a new buffer: no view of the old one is used after this
            grown = bytearray(6 + length)
            grown[:6] = header
            self.buffer = grown
        body = memoryview(self.buffer)[6:6 + length]
        self._read_into(body, idle_ok=False)
        return pdu_type, body

    def send(self, data: bytes) -> None:
        self.sock.settimeout(self.server.network_timeout)  # a slow reader gets the whole timeout
        try:
            self.sock.sendall(data)
        finally:
            self.sock.settimeout(POLL_SECONDS)

    def abort(self, source: int = 2, reason: int = 0) -> None:
        """Send A-ABORT and close our side so it arrives before the connection ends (closing
        with unread input would reset the connection and could discard it)."""
        with contextlib.suppress(OSError):
            self.sock.settimeout(ABORT_DRAIN_SECONDS)
            self.sock.sendall(struct.pack(">BBLBBBB", dimse.ABORT, 0, 4, 0, 0, source, reason))
            self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + ABORT_DRAIN_SECONDS
            while time.monotonic() < deadline and self.sock.recv(65536):
                pass  # drain until the peer closes, briefly

    # ---- association ------------------------------------------------------------------------
    def run(self) -> None:
        try:
            if self.negotiate():
                self.established = True
                self.buffer = bytearray(FIRST_BUFFER) if len(self.buffer) > FIRST_BUFFER else self.buffer
                self.serve()
        except Stopping:
            log.info("association from %s aborted: the receiver is stopping", self._who())
            self.abort(source=0)
        except (dimse.ProtocolError, PeerSilent) as exc:
            log.warning("association from %s aborted: %s", self._who(), exc)
            self.abort(reason=2 if isinstance(exc, dimse.ProtocolError) else 0)
        except OSError as exc:
            log.info("association from %s ended: %s", self._who(), exc)
        except Exception:  # a defect here must not end the thread silently
            log.exception("association from %s aborted by an unexpected error", self._who())
            self.abort()

    def _who(self) -> str:
        return f"{self.calling_ae or '?'} ({self.peer})"

    def negotiate(self) -> bool:
        pdu_type, body = self.read_pdu(idle_ok=True, limit=MAX_ASSOCIATE_RQ)
        if pdu_type == dimse.ABORT:
            return False  # the peer gave up: nothing to answer
        if pdu_type != dimse.ASSOCIATE_RQ:
            raise dimse.ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02x}")
        rq = A_ASSOCIATE_RQ()
        try:
            rq.decode(bytes(self.buffer[:6 + len(body)]))
            request = rq.to_primitive()
            self.calling_ae = str(request.calling_ae_title).strip() or None
            self.called_ae = str(request.called_ae_title).strip() or None
            application_context = str(request.application_context_name)
        except Exception as exc:  # pynetdicom raises several types for a malformed PDU
            raise dimse.ProtocolError(f"malformed A-ASSOCIATE-RQ ({type(exc).__name__}: {exc})") from exc
        if application_context != APPLICATION_CONTEXT:
            self.reject(1, 1, 2)  # application context name not supported
            return False
        self.admitted = self.server.admit()
        if not self.admitted:
            log.warning("association from %s (%s) rejected: %d associations already open", self.calling_ae,
                        self.peer, self.server.max_associations)
            self.reject(2, 3, 2)  # transient, local limit exceeded
            return False
        try:
            accept = self._negotiate_contexts(request)
        except Exception as exc:
            raise dimse.ProtocolError(f"unusable A-ASSOCIATE-RQ ({type(exc).__name__}: {exc})") from exc
        self.send(accept)
        log.debug("association from %s (%s) accepted with %d contexts", self.calling_ae, self.peer, len(self.contexts))
        return True

    def _negotiate_contexts(self, request: A_ASSOCIATE) -> bytes:
        self.peer_max_pdu = int(request.maximum_length_received or 0)
        roles: dict[UID, tuple[bool | None, bool | None]] = {}
        async_requested = False
        for item in request.user_information:
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid is not None:
                roles[item.sop_class_uid] = (item.scu_role, item.scp_role)
            elif isinstance(item, AsynchronousOperationsWindowNegotiation):
                async_requested = True
        proposed = request.presentation_context_definition_list
        usable = [cx for cx in proposed if cx.transfer_syntax]
        results, role_replies = negotiate_unrestricted(usable, [self.server.verification], roles)
        for cx in proposed:
            if not cx.transfer_syntax:  # nothing to choose from: transfer syntaxes not supported
                refused = PresentationContext()
                refused.context_id, refused.abstract_syntax, refused.result = cx.context_id, cx.abstract_syntax, 0x04
                refused.transfer_syntax = [UNCOMPRESSED[0]]  # an AC item needs one; its value is not significant
                results.append(refused)
        self.contexts = {int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in results
                         if cx.result == 0x00 and cx.context_id is not None}
        return self._accept(request, sorted(results, key=lambda cx: int(cx.context_id or 0)), role_replies,
                            async_requested)

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
        message: Message | None = None
        try:
            while True:
                idle = message is None
                if idle and self.server.stopping.is_set():
                    raise Stopping()
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
                    if message is None:
                        message = Message(pdv.context_id)
                    elif pdv.context_id != message.context_id:
                        raise dimse.ProtocolError("fragments of one message on different presentation contexts")
                    if message.take(pdv, self):
                        self.respond(message)
                        message.discard()
                        message = None
        finally:
            if message is not None:
                message.discard()

    def open_spool(self, request: dict[int, bytes], context_id: int) -> tuple[IO[bytes], Path]:
        fd, name = tempfile.mkstemp(suffix=".dcm", dir=self.server.spool_dir)
        try:
            spool = os.fdopen(fd, "wb", buffering=1024 * 1024)
        except OSError:
            os.close(fd)
            Path(name).unlink(missing_ok=True)
            raise
        try:
            spool.write(dimse.file_header(dimse.uid(request, dimse.AFFECTED_SOP_CLASS),
                                          dimse.uid(request, dimse.AFFECTED_SOP_INSTANCE),
                                          self.contexts[context_id][1], IMPLEMENTATION_UID, IMPLEMENTATION_VERSION))
        except OSError:
            with contextlib.suppress(OSError):
                spool.close()
            Path(name).unlink(missing_ok=True)
            raise
        return spool, Path(name)

    def respond(self, message: Message) -> None:
        assert message.request is not None
        field = dimse.us(message.request, dimse.COMMAND_FIELD)
        if field is None or field & dimse.RESPONSE_BIT or field == C_CANCEL_RQ:
            return  # responses and cancels get no response (we have nothing to cancel)
        if message.status is not None:
            status = message.status
        elif field == dimse.C_ECHO_RQ:
            status = 0x0000
        elif field == dimse.C_STORE_RQ:
            status = self._store(message) if message.path is not None else CANNOT_UNDERSTAND
        else:
            status = dimse.UNRECOGNIZED_OPERATION
        rsp = dimse.response(message.request, status)
        for pdu in dimse.p_data_pdus(message.context_id, rsp, self.peer_max_pdu, command=True):
            self.send(pdu)

    def _store(self, message: Message) -> int:
        assert message.request is not None and message.path is not None
        request = message.request
        store = StoreRequest(message.path, self.calling_ae, self.called_ae, self.peer,
                             dimse.uid(request, dimse.AFFECTED_SOP_CLASS),
                             dimse.uid(request, dimse.AFFECTED_SOP_INSTANCE), self.contexts[message.context_id][1])
        try:
            status = int(self.server.handler(store))
        except Exception:  # the handler should never raise; if it does, the sender hears a failure
            log.exception("the C-STORE handler failed for an instance from %s", self.calling_ae)
            return 0xC0FF
        return status if 0 <= status <= 0xFFFF else 0xC0FF


class Message:
    """One DIMSE message being received: its command set, then (for a C-STORE) its data set
    streaming to a spool file. ``status`` is set when the answer is known before the handler
    runs (a refused class, a spool that could not be written, an instance too large)."""

    def __init__(self, context_id: int) -> None:
        self.context_id = context_id
        self.command = bytearray()
        self.request: dict[int, bytes] | None = None
        self.spool: IO[bytes] | None = None
        self.path: Path | None = None
        self.size = 0
        self.status: int | None = None

    def take(self, pdv: dimse.PDV, assoc: Association) -> bool:
        """Add one fragment; True when the message is complete."""
        if pdv.is_command:
            if self.request is not None:
                raise dimse.ProtocolError("a command fragment arrived while a data set was expected")
            self.command += pdv.data
            if len(self.command) > dimse.MAX_COMMAND_BYTES:
                raise dimse.ProtocolError("command set longer than 64 KiB")
            if not pdv.is_last:
                return False
            self.request = dimse.parse_command(bytes(self.command))
            if dimse.us(self.request, dimse.DATASET_TYPE) == dimse.NO_DATASET:
                return True
            self._prepare(assoc)
            return False
        if self.request is None:
            raise dimse.ProtocolError("a data set fragment without its command")
        self._write(pdv.data, assoc)
        if pdv.is_last and self.spool is not None:
            try:
                self.spool.close()
            except OSError as exc:
                self._fail(f"cannot write the spool file: {exc}", assoc)
            self.spool = None
        return pdv.is_last

    def _prepare(self, assoc: Association) -> None:
        assert self.request is not None
        if dimse.us(self.request, dimse.COMMAND_FIELD) != dimse.C_STORE_RQ:
            return  # its data set is read and dropped; the request is answered as unrecognized
        abstract = assoc.contexts[self.context_id][0]
        if dimse.uid(self.request, dimse.AFFECTED_SOP_CLASS) != abstract or abstract == VERIFICATION:
            self.status = SOP_CLASS_NOT_SUPPORTED  # a C-STORE must use its own SOP class's context
            return
        try:
            self.spool, self.path = assoc.open_spool(self.request, self.context_id)
        except OSError as exc:
            self._fail(f"cannot create a spool file: {exc}", assoc)

    def _write(self, data: memoryview, assoc: Association) -> None:
        if self.spool is None:
            return
        self.size += len(data)
        if self.size > MAX_INSTANCE:
            self._fail(f"instance larger than {MAX_INSTANCE} bytes", assoc)
            return
        try:
            self.spool.write(data)
        except OSError as exc:
            self._fail(f"cannot write the spool file: {exc}", assoc)

    def _fail(self, why: str, assoc: Association) -> None:
        """Stop spooling; the rest of the data set is read and dropped, the sender hears 0xA700."""
        log.error("instance from %s (%s) not received: %s", assoc.calling_ae, assoc.peer, why)
        self.status = OUT_OF_RESOURCES
        self.discard()

    def discard(self) -> None:
        """Close and remove the spool file, if any."""
        if self.spool is not None:
            with contextlib.suppress(OSError):
                self.spool.close()
            self.spool = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


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

    def finish(self) -> None:
        self.server.disconnected(self.request)


class StoreServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Accepts associations on ``address`` until ``stop()``; ``serve_forever`` runs the loop.

    At most ``max_associations`` associations are established at once (more are rejected with
    "local limit exceeded"); a few more connections may be negotiating; beyond that new
    connections are closed at once, so a flood of idle connections cannot pile up threads."""

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
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (negotiating or associated)."""
        with self._lock:
            return len(self._connections)

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._lock:
            if self.stopping.is_set() or len(self._connections) >= self.max_associations + PENDING_SLACK:
                log.warning("connection from %s closed: %d connections already open", client_address[0],
                            len(self._connections))
                return False
            self._connections.add(request)
            return True

    def disconnected(self, sock: socket.socket) -> None:
        with self._lock:
            self._connections.discard(sock)

    def admit(self) -> bool:
        with self._lock:
            if self._open >= self.max_associations:
                return False
            self._open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting; let every association finish its current message (at most ``grace``
        seconds, default the network timeout), then cut the connections still open; wait for them."""
        self.stopping.set()
        self.shutdown()
        deadline = time.monotonic() + (self.network_timeout if grace is None else grace)
        while time.monotonic() < deadline:
            with self._lock:
                if not self._connections:
                    break
            time.sleep(0.05)
        with self._lock:
            stuck = list(self._connections)
        for sock in stuck:
            log.warning("closing a connection that did not end within the shutdown grace period")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.server_close()
