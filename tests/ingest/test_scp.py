"""The storage SCP's protocol behaviour over real loopback sockets: pynetdicom as a well-behaved
sender, hand-made PDUs as a careless or hostile one. The handler here records what it is given
(the receiver's real handler, with MinIO and RabbitMQ behind it, is tested in test_receiver.py)."""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    MRImageStorage,
)
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    Verification,
)

from nps.dicom import dimse
from producers.dicom_scp import StoreRequest, StoreServer
from tests.dicom.factory import make_instance


class Recorder:
    """The handler: keeps what each request's spool file held, answers ``status``."""

    def __init__(self, status: int = 0, delay: float = 0.0) -> None:
        self.status, self.delay = status, delay
        self.got: list[tuple[StoreRequest, pydicom.Dataset]] = []
        self.started = threading.Event()

    def __call__(self, request: StoreRequest) -> int:
        self.started.set()
        time.sleep(self.delay)
        self.got.append((request, pydicom.dcmread(request.path)))
        return self.status


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    (tmp_path / "spool").mkdir()
    return tmp_path / "spool"


def start(handler: Recorder, spool: Path, **kw: float) -> StoreServer:
    server = StoreServer(("127.0.0.1", 0), handler, spool_dir=spool, **kw)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def server(recorder: Recorder, spool: Path) -> Iterator[StoreServer]:
    s = start(recorder, spool)
    yield s
    s.stop()


def port(server: StoreServer) -> int:
    return int(server.server_address[1])


def wait_until(condition: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.02)


def scu(*contexts: tuple[str, list[str] | None], calling: str = "SCU") -> AE:
    ae = AE(ae_title=calling)
    for abstract, syntaxes in contexts:
        ae.add_requested_context(abstract, syntaxes)
    return ae


def test_echo_and_stores_in_each_proposed_transfer_syntax(server: StoreServer, recorder: Recorder,
                                                          tmp_path: Path, spool: Path) -> None:
    ae = scu((Verification, None), (MRImageStorage, [ImplicitVRLittleEndian]), calling="MRI3T")
    assoc = ae.associate("127.0.0.1", port(server), ae_title="NPS")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    series, sop = make_instance(tmp_path / "a.dcm", size=64)
    assert assoc.send_c_store(tmp_path / "a.dcm").Status == 0
    assoc.release()
    assert assoc.is_released

    request, ds = recorder.got[0]
    assert request.calling_ae == "MRI3T" and request.called_ae == "NPS"
    assert request.sop_instance_uid == sop and request.sop_class_uid == MRImageStorage
    assert request.transfer_syntax_uid == ImplicitVRLittleEndian == ds.file_meta.TransferSyntaxUID
    assert ds.SeriesInstanceUID == series and ds.PixelData == pydicom.dcmread(tmp_path / "a.dcm").PixelData
    assert list(spool.iterdir()) == []  # spool files go once answered


def test_the_first_proposed_syntax_of_any_storage_class_is_accepted(server: StoreServer) -> None:
    private = "1.2.840.113619.4.99"  # a vendor's private storage class
    ae = scu((MRImageStorage, [JPEGBaseline8Bit, ExplicitVRLittleEndian]), (private, [ExplicitVRLittleEndian]),
             (PatientRootQueryRetrieveInformationModelFind, None))
    assoc = ae.associate("127.0.0.1", port(server))
    try:
        accepted = {cx.abstract_syntax: cx.transfer_syntax[0] for cx in assoc.accepted_contexts}
        assert accepted == {MRImageStorage: JPEGBaseline8Bit, private: ExplicitVRLittleEndian}
        assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == [PatientRootQueryRetrieveInformationModelFind]
    finally:
        assoc.release()


def test_role_selection_and_an_asynchronous_window_are_answered(server: StoreServer, tmp_path: Path) -> None:
    ae = scu((MRImageStorage, None))
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid, role.scu_role, role.scp_role = MRImageStorage, True, False
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = window.maximum_number_operations_performed = 4
    assoc = ae.associate("127.0.0.1", port(server), ext_neg=[role, window])
    assert assoc.is_established
    make_instance(tmp_path / "a.dcm")
    assert assoc.send_c_store(tmp_path / "a.dcm").Status == 0
    assoc.release()


def test_the_handlers_status_reaches_the_sender(recorder: Recorder, spool: Path, tmp_path: Path) -> None:
    recorder.status = 0xA700
    server = start(recorder, spool)
    try:
        assoc = scu((MRImageStorage, None)).associate("127.0.0.1", port(server))
        make_instance(tmp_path / "a.dcm")
        assert assoc.send_c_store(tmp_path / "a.dcm").Status == 0xA700
        assoc.release()
    finally:
        server.stop()


def test_a_large_instance_arrives_whole_over_many_pdus(server: StoreServer, recorder: Recorder,
                                                       tmp_path: Path) -> None:
    side = 1024  # 2 MiB of pixels, eight of our PDUs, many of the sender's
    make_instance(tmp_path / "big.dcm", size=side, pixels=bytes(range(256)) * (side * side * 2 // 256))
    ae = scu((MRImageStorage, [ExplicitVRLittleEndian]))
    ae.maximum_pdu_size = 4096  # we answer within the sender's limit
    assoc = ae.associate("127.0.0.1", port(server))
    assert assoc.send_c_store(tmp_path / "big.dcm").Status == 0
    assoc.release()
    assert recorder.got[0][1].PixelData == pydicom.dcmread(tmp_path / "big.dcm").PixelData


def test_an_association_over_the_limit_is_rejected(recorder: Recorder, spool: Path) -> None:
    server = start(recorder, spool, max_associations=1)
    try:
        first = scu((Verification, None)).associate("127.0.0.1", port(server))
        assert first.is_established
        second = scu((Verification, None)).associate("127.0.0.1", port(server))
        assert second.is_rejected and not second.is_established
        first.release()
        third = scu((Verification, None)).associate("127.0.0.1", port(server))
        assert third.is_established  # the slot came back
        third.release()
    finally:
        server.stop()


# ---- hand-made PDUs ---------------------------------------------------------------------------
def associate_rq(application_context: str = "1.2.840.10008.3.1.1.1") -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = application_context
    primitive.calling_ae_title, primitive.called_ae_title = "RAW", "NPS"
    cx = build_context(MRImageStorage, ExplicitVRLittleEndian)
    cx.context_id = 1
    primitive.presentation_context_definition_list = [cx]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16382
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def connect(server: StoreServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port(server)), timeout=30)
    return sock


def associated(server: StoreServer) -> socket.socket:
    sock = connect(server)
    sock.sendall(associate_rq())
    assert read_pdu(sock)[0] == dimse.ASSOCIATE_AC
    return sock


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """The next PDU's type and body; (0, b'') once the server closed the connection."""
    header = _exact(sock, 6)
    if len(header) < 6:
        return 0, b""
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, _exact(sock, length)


def _exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def store_rq(context_id: int = 1) -> bytes:
    command = dimse.encode_command([
        (dimse.AFFECTED_SOP_CLASS, dimse.uid_value(MRImageStorage)),
        (dimse.COMMAND_FIELD, struct.pack("<H", dimse.C_STORE_RQ)),
        (dimse.MESSAGE_ID, struct.pack("<H", 1)),
        (0x0700, struct.pack("<H", 0)),
        (dimse.DATASET_TYPE, struct.pack("<H", 0x0001)),
        (dimse.AFFECTED_SOP_INSTANCE, dimse.uid_value("1.2.3.4")),
    ])
    return dimse.p_data_pdus(context_id, command, 0, command=True)[0]


def test_requests_other_than_store_and_echo_are_unrecognized(server: StoreServer, recorder: Recorder) -> None:
    find = dimse.encode_command([(dimse.AFFECTED_SOP_CLASS, dimse.uid_value(MRImageStorage)),
                                 (dimse.COMMAND_FIELD, struct.pack("<H", 0x0020)),  # C-FIND-RQ
                                 (dimse.MESSAGE_ID, struct.pack("<H", 9)),
                                 (dimse.DATASET_TYPE, struct.pack("<H", 0x0001))])
    query = b"\x08\x00\x52\x00\x08\x00PATIENT "  # (0008,0052) QueryRetrieveLevel, implicit VR
    with associated(server) as sock:
        sock.sendall(dimse.p_data_pdus(1, find, 0, command=True)[0] +
                     dimse.p_data_pdus(1, query, 0, command=False)[0])
        pdu_type, body = read_pdu(sock)
        assert pdu_type == dimse.P_DATA
        (pdv,) = list(dimse.pdvs(memoryview(body)))
        rsp = dimse.parse_command(bytes(pdv.data))
        assert pdv.is_command and pdv.is_last
        assert dimse.us(rsp, dimse.COMMAND_FIELD) == 0x8020 and dimse.us(rsp, dimse.MESSAGE_ID_RESPONDED) == 9
        assert dimse.us(rsp, dimse.STATUS) == dimse.UNRECOGNIZED_OPERATION
        sock.sendall(struct.pack(">BBLL", dimse.RELEASE_RQ, 0, 4, 0))
        assert read_pdu(sock)[0] == dimse.RELEASE_RP
    assert recorder.got == []


def assert_aborted(sock: socket.socket) -> None:
    """The server sends A-ABORT (if anything) and closes the connection."""
    pdu_type, _ = read_pdu(sock)
    assert pdu_type in (dimse.ABORT, 0)
    assert read_pdu(sock)[0] == 0


@pytest.mark.parametrize("first", [
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not DICOM at all
    struct.pack(">BBL", 9, 0, 0),  # an unknown PDU type
    store_rq(),  # data before an association
    struct.pack(">BBL", 1, 0, 50) + b"\x00" * 50,  # an A-ASSOCIATE-RQ that does not decode
    struct.pack(">BBL", 1, 0, 0x7FFFFFFF),  # a 2 GiB PDU announced
])
def test_garbage_instead_of_an_association_is_aborted(server: StoreServer, recorder: Recorder, first: bytes) -> None:
    with connect(server) as sock:
        sock.sendall(first)
        assert_aborted(sock)
    assert recorder.got == []


def test_a_wrong_application_context_is_rejected(server: StoreServer) -> None:
    with connect(server) as sock:
        sock.sendall(associate_rq("1.2.3.4.5"))
        pdu_type, body = read_pdu(sock)
        assert pdu_type == dimse.ASSOCIATE_RJ and body[1:] == b"\x01\x01\x02"


@pytest.mark.parametrize("after_association", [
    lambda: store_rq(context_id=3),  # a context that was never accepted
    lambda: dimse.p_data_pdus(1, b"\x08\x00\x18\x00", 0, command=False)[0],  # a data set without a command
    lambda: struct.pack(">BBL", dimse.P_DATA, 0, 300 * 1024) + b"\0" * 16,  # longer than the PDU size we agreed
    lambda: store_rq() + struct.pack(">BBL", dimse.RELEASE_RQ, 0, 4) + b"\0" * 4,  # release mid-message
    lambda: struct.pack(">BBL", dimse.ASSOCIATE_RQ, 0, 4) + b"\0" * 4,  # a second A-ASSOCIATE-RQ
])
def test_protocol_violations_abort_the_association_and_leave_no_spool(
        server: StoreServer, recorder: Recorder, spool: Path, after_association: object) -> None:
    with associated(server) as sock:
        sock.sendall(after_association())  # type: ignore[operator]
        assert_aborted(sock)
    assert recorder.got == [] and list(spool.iterdir()) == []


def test_a_sender_vanishing_mid_instance_leaves_no_spool(server: StoreServer, recorder: Recorder,
                                                         spool: Path) -> None:
    with associated(server) as sock:
        fragment = b"\x08\x00\x18\x00" * 100
        not_last = struct.pack(">BBLLBB", dimse.P_DATA, 0, 6 + len(fragment), 2 + len(fragment), 1, 0) + fragment
        sock.sendall(store_rq() + not_last)  # the first part of a data set, then the sender is gone
        wait_until(lambda: list(spool.iterdir()), "the server spooling the first fragment")
    wait_until(lambda: not list(spool.iterdir()), "the spool file removed", timeout=30)
    assert recorder.got == []


def test_a_silent_peer_is_dropped_after_the_network_timeout(recorder: Recorder, spool: Path) -> None:
    server = start(recorder, spool, network_timeout=2)
    try:
        with associated(server) as sock:
            assert_aborted(sock)  # without the timeout this would wait for the socket's 30 s
    finally:
        server.stop()


def test_stopping_finishes_the_instance_in_progress_then_aborts(spool: Path, tmp_path: Path) -> None:
    recorder = Recorder(delay=1.5)
    server = start(recorder, spool)
    make_instance(tmp_path / "a.dcm")
    assoc = scu((MRImageStorage, None)).associate("127.0.0.1", port(server))
    statuses: list[int] = []
    sender = threading.Thread(target=lambda: statuses.append(int(assoc.send_c_store(tmp_path / "a.dcm").Status)))
    sender.start()
    assert recorder.started.wait(10)
    server.stop()  # returns once every association has ended
    sender.join(10)
    assert statuses == [0] and len(recorder.got) == 1
    wait_until(lambda: assoc.is_aborted or not assoc.is_established, "the sender seeing the association end")
    with pytest.raises(OSError):
        connect(server)


# ---- shutdown, floods and failures (cases found by a review of the first version) -------------
def test_stopping_a_busy_association_ends_it_after_the_current_instance(spool: Path, tmp_path: Path) -> None:
    recorder = Recorder(delay=0.05)
    server = start(recorder, spool)
    make_instance(tmp_path / "a.dcm")
    assoc = scu((MRImageStorage, [ExplicitVRLittleEndian])).associate("127.0.0.1", port(server))

    def keep_sending() -> None:
        for _ in range(60):  # storescu-like: the next C-STORE right after each response
            if not assoc.is_established:
                return
            assoc.send_c_store(tmp_path / "a.dcm")

    sender = threading.Thread(target=keep_sending)
    sender.start()
    assert recorder.started.wait(10)
    server.stop()
    sender.join(30)
    assert len(recorder.got) <= 2 and not assoc.is_established


@pytest.mark.parametrize("behaviour", ["silent", "trickling"])
def test_a_peer_that_never_completes_its_request_does_not_hold_up_stop(spool: Path, behaviour: str) -> None:
    server = start(Recorder(), spool, network_timeout=30)
    sock = connect(server)
    stop_trickle = threading.Event()

    def trickle() -> None:  # a byte of a valid request every 0.3 s: never silent, never done
        for byte in associate_rq():
            if stop_trickle.wait(0.3):
                return
            with contextlib.suppress(OSError):
                sock.sendall(bytes([byte]))

    if behaviour == "trickling":
        threading.Thread(target=trickle, daemon=True).start()
    wait_until(lambda: server.open_connections == 1, "the server taking the connection")
    started = time.monotonic()
    try:
        server.stop()
        assert time.monotonic() - started < 10  # not the 30 s network timeout (nor forever)
    finally:
        stop_trickle.set()
        sock.close()


def test_a_trickling_peer_is_cut_off_after_the_network_timeout(recorder: Recorder, spool: Path) -> None:
    server = start(recorder, spool, network_timeout=2)
    try:
        with connect(server) as sock:
            sock.sendall(associate_rq()[:3])
            for byte in associate_rq()[3:12]:
                time.sleep(0.4)
                with contextlib.suppress(OSError):
                    sock.sendall(bytes([byte]))
            assert_aborted(sock)
    finally:
        server.stop()


def test_a_flood_of_idle_connections_does_not_pile_up_threads(recorder: Recorder, spool: Path) -> None:
    server = start(recorder, spool, max_associations=1)
    before = threading.active_count()
    socks = []
    try:
        for _ in range(60):  # each announces a large A-ASSOCIATE-RQ and never sends it
            sock = connect(server)
            sock.sendall(struct.pack(">BBL", dimse.ASSOCIATE_RQ, 0, 200_000))
            socks.append(sock)
        kept = 1 + 4  # the limit and the negotiating slack; the server closes the others at once
        wait_until(lambda: sum(closed_by_server(s) for s in socks) >= len(socks) - kept,
                   "the server closing the connections beyond its limit")
        assert server.open_connections == kept
        assert threading.active_count() - before <= kept + 1  # and the server's own thread
    finally:
        for sock in socks:
            sock.close()
        server.stop(grace=5)


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (nothing waits to be read otherwise)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def command(field: int, dataset: bool, sop_instance: bytes = b"1.2.3.4", sop_class: str = MRImageStorage) -> bytes:
    return dimse.encode_command([
        (dimse.AFFECTED_SOP_CLASS, dimse.uid_value(sop_class)),
        (dimse.COMMAND_FIELD, struct.pack("<H", field)),
        (dimse.MESSAGE_ID, struct.pack("<H", 1)),
        (dimse.DATASET_TYPE, struct.pack("<H", 0x0001 if dataset else dimse.NO_DATASET)),
        (dimse.AFFECTED_SOP_INSTANCE, sop_instance),
    ])


def response_status(sock: socket.socket) -> int | None:
    pdu_type, body = read_pdu(sock)
    assert pdu_type == dimse.P_DATA, pdu_type
    (pdv,) = list(dimse.pdvs(memoryview(body)))
    return dimse.us(dimse.parse_command(bytes(pdv.data)), dimse.STATUS)


def test_a_uid_that_is_not_a_uid_aborts_without_leaving_a_spool(server: StoreServer, recorder: Recorder,
                                                                 spool: Path) -> None:
    with associated(server) as sock:
        sock.sendall(dimse.p_data_pdus(1, command(dimse.C_STORE_RQ, True, b"1.2.\xe9/../x"), 0, command=True)[0] +
                     dimse.p_data_pdus(1, b"\x08\x00\x18\x00\x00\x00\x00\x00", 0, command=False)[0])
        assert_aborted(sock)
    assert recorder.got == [] and list(spool.iterdir()) == []


def test_a_store_on_another_classes_context_or_without_data_is_refused(server: StoreServer,
                                                                       recorder: Recorder) -> None:
    data = b"\x08\x00\x18\x00\x02\x00\x00\x001\x00"
    with associated(server) as sock:  # context 1 is MR Image Storage
        ct = "1.2.840.10008.5.1.4.1.1.2"
        sock.sendall(dimse.p_data_pdus(1, command(dimse.C_STORE_RQ, True, sop_class=ct), 0, command=True)[0] +
                     dimse.p_data_pdus(1, data, 0, command=False)[0])
        assert response_status(sock) == 0x0122  # SOP class not supported (on this context)
        sock.sendall(dimse.p_data_pdus(1, command(dimse.C_STORE_RQ, False), 0, command=True)[0])
        assert response_status(sock) == 0xC000
    assert recorder.got == []


def test_a_cancel_gets_no_response(server: StoreServer) -> None:
    with associated(server) as sock:
        cancel = dimse.encode_command([(dimse.COMMAND_FIELD, struct.pack("<H", 0x0FFF)),
                                       (dimse.MESSAGE_ID_RESPONDED, struct.pack("<H", 1)),
                                       (dimse.DATASET_TYPE, struct.pack("<H", dimse.NO_DATASET))])
        echo = command(dimse.C_ECHO_RQ, False, sop_class=str(Verification))
        sock.sendall(dimse.p_data_pdus(1, cancel, 0, command=True)[0] + dimse.p_data_pdus(1, echo, 0, command=True)[0])
        assert response_status(sock) == 0  # the first answer is the echo's: the cancel got none


def test_a_context_without_transfer_syntax_is_refused_not_fatal(server: StoreServer) -> None:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = "RAW", "NPS"
    good, empty = build_context(MRImageStorage, ExplicitVRLittleEndian), build_context(MRImageStorage)
    good.context_id, empty.context_id = 1, 3
    empty._transfer_syntax = []  # a sender's bug: a context with nothing to choose from
    primitive.presentation_context_definition_list = [good, empty]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16382
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    with connect(server) as sock:
        sock.sendall(pdu.encode())
        pdu_type, body = read_pdu(sock)
    assert pdu_type == dimse.ASSOCIATE_AC
    from pynetdicom.pdu import A_ASSOCIATE_AC

    ac = A_ASSOCIATE_AC()
    ac.decode(struct.pack(">BBL", pdu_type, 0, len(body)) + body)
    results = {cx.context_id: cx.result for cx in ac.to_primitive().presentation_context_definition_results_list}
    assert results == {1: 0x00, 3: 0x04}


def test_a_spool_that_cannot_be_written_answers_out_of_resources(spool: Path, tmp_path: Path) -> None:
    """A full spool disk, stood in for by a file size limit on this process (we cannot fill the
    machine's disk in a test): the sender hears 0xA700 (retry later), nothing is left behind and
    the association goes on."""
    recorder = Recorder()
    server = start(recorder, spool)
    side = 512
    make_instance(tmp_path / "big.dcm", size=side, pixels=b"\1" * (side * side * 2))
    make_instance(tmp_path / "small.dcm", size=8)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_signal = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    assoc = scu((MRImageStorage, [ExplicitVRLittleEndian])).associate("127.0.0.1", port(server))
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, old_limit[1]))
        try:
            status = assoc.send_c_store(tmp_path / "big.dcm").Status
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
            signal.signal(signal.SIGXFSZ, old_signal)
        assert status == 0xA700 and recorder.got == [] and list(spool.iterdir()) == []
        assert assoc.send_c_store(tmp_path / "small.dcm").Status == 0  # the association goes on
        assoc.release()
    finally:
        server.stop()
