"""The receiver's hand-written DIMSE encodings, checked against pydicom and pynetdicom (independent
implementations of the same standard), and refusing what breaks the protocol."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode, encode

from nps.dicom import dimse
from tests.dicom.factory import make_instance


def pynetdicom_store_request(sop: str, message_id: int) -> bytes:
    """A C-STORE-RQ command set as pynetdicom encodes it."""
    from pynetdicom.dimse_messages import C_STORE_RQ

    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = MRImageStorage
    primitive.AffectedSOPInstanceUID = sop
    primitive.Priority = 0x0002
    primitive.DataSet = io.BytesIO(b"\x08\x00\x18\x00")  # a data set follows
    msg = C_STORE_RQ()
    msg.primitive_to_message(primitive)
    msg.command_set.CommandGroupLength = 0
    raw = encode(msg.command_set, True, True)
    assert raw is not None
    return raw


def test_a_command_set_from_pynetdicom_parses_and_gets_the_right_response() -> None:
    sop = generate_uid()
    raw = pynetdicom_store_request(sop, 7)
    request = dimse.parse_command(raw)
    assert dimse.us(request, dimse.COMMAND_FIELD) == dimse.C_STORE_RQ
    assert dimse.us(request, dimse.MESSAGE_ID) == 7
    assert dimse.uid(request, dimse.AFFECTED_SOP_INSTANCE) == sop
    assert dimse.us(request, dimse.DATASET_TYPE) != dimse.NO_DATASET

    rsp = decode(io.BytesIO(dimse.response(request, 0xA700)), True, True)  # pydicom reads it back
    assert rsp.CommandField == 0x8001 and rsp.MessageIDBeingRespondedTo == 7 and rsp.Status == 0xA700
    assert rsp.AffectedSOPClassUID == MRImageStorage and rsp.AffectedSOPInstanceUID == sop
    assert rsp.CommandDataSetType == 0x0101
    assert rsp.CommandGroupLength == len(dimse.response(request, 0xA700)) - 12


def test_an_echo_response_has_no_sop_instance() -> None:
    echo = dimse.encode_command([(dimse.AFFECTED_SOP_CLASS, dimse.uid_value("1.2.840.10008.1.1")),
                                 (dimse.COMMAND_FIELD, struct.pack("<H", dimse.C_ECHO_RQ)),
                                 (dimse.MESSAGE_ID, struct.pack("<H", 3)),
                                 (dimse.DATASET_TYPE, struct.pack("<H", dimse.NO_DATASET))])
    rsp = decode(io.BytesIO(dimse.response(dimse.parse_command(echo), 0)), True, True)
    assert rsp.CommandField == 0x8030 and rsp.MessageIDBeingRespondedTo == 3 and rsp.Status == 0
    assert "AffectedSOPInstanceUID" not in rsp


def test_the_spool_header_makes_the_received_bytes_a_dicom_file(tmp_path: Path) -> None:
    _, sop = make_instance(tmp_path / "a.dcm")
    original = pydicom.dcmread(tmp_path / "a.dcm")
    raw = (tmp_path / "a.dcm").read_bytes()
    (meta_length,) = struct.unpack_from("<L", raw, 132 + 8)
    body = raw[132 + 12 + meta_length:]  # the data set alone, as a sender puts it on the wire
    header = dimse.file_header(MRImageStorage, sop, ExplicitVRLittleEndian, "1.2.3.4", "NPS_1")
    (tmp_path / "spooled.dcm").write_bytes(header + body)
    back = pydicom.dcmread(tmp_path / "spooled.dcm")
    assert back.file_meta.MediaStorageSOPInstanceUID == sop
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.ImplementationVersionName == "NPS_1"
    assert back.SOPInstanceUID == sop and back.PixelData == original.PixelData


def test_the_file_header_does_not_depend_on_the_sender() -> None:
    args = (MRImageStorage, "1.2.3.45", ExplicitVRLittleEndian, "1.2.3", "NPS_1")
    assert dimse.file_header(*args) == dimse.file_header(*args)
    assert len(dimse.file_header(*args)) % 2 == 0


def test_pdus_respect_the_peers_maximum_and_flag_the_last_fragment() -> None:
    payload = bytes(range(256)) * 10
    pdus = dimse.p_data_pdus(5, payload, 1000, command=False)
    assert all(len(p) - 6 <= 1000 for p in pdus) and len(pdus) == 3
    fragments = [pdv for p in pdus for pdv in dimse.pdvs(memoryview(p)[6:])]
    assert b"".join(bytes(f.data) for f in fragments) == payload
    assert [f.is_last for f in fragments] == [False, False, True]
    assert {(f.context_id, f.is_command) for f in fragments} == {(5, False)}
    assert len(dimse.p_data_pdus(1, payload, 0, command=True)) == 1  # 0: the peer set no limit


@pytest.mark.parametrize("body, why", [
    (b"\x00\x00\x00\x10\x01\x03abc", "does not fit"),
    (b"\x00\x00\x00\x01\x01", "inside a PDV item header"),
    (b"\x00\x00\x00\x03\x01\x07x", "reserved bits"),
])
def test_broken_pdv_items_are_protocol_errors(body: bytes, why: str) -> None:
    with pytest.raises(dimse.ProtocolError, match=why):
        list(dimse.pdvs(memoryview(body)))


@pytest.mark.parametrize("data, why", [
    (b"\x00\x00\x00\x01\x02\x00\x00", "inside an element header"),
    (struct.pack("<HHL", 0, 0x0100, 10) + b"\x01\x00", "runs past"),
    (struct.pack("<HHL", 8, 0x0016, 2) + b"12", "outside group 0000"),
])
def test_broken_command_sets_are_protocol_errors(data: bytes, why: str) -> None:
    with pytest.raises(dimse.ProtocolError, match=why):
        dimse.parse_command(data)


def test_a_command_value_of_the_wrong_size_reads_as_absent() -> None:
    fields = dimse.parse_command(struct.pack("<HHL", 0, 0x0100, 4) + b"\x01\x00\x00\x00")
    assert dimse.us(fields, dimse.COMMAND_FIELD) is None
    ds = read_dataset(io.BytesIO(dimse.encode_command([(0x0110, b"\x02\x00")])), True, True)
    assert ds[0x00000110].value == b"\x02\x00" or ds.MessageID == 2  # pydicom agrees on the layout
