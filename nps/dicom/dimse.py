"""The few DICOM network encodings a storage SCP needs on its hot path, as pure functions.

The receiver's storage SCP (``producers.dicom_scp``) uses pynetdicom's PDU classes for association negotiation,
which happens once per association. Everything that happens once per *instance* is here,
written against PS3.7 and PS3.8 directly, because doing it through pydicom datasets cost
about 4 ms of CPU per instance (building and validating a Dataset for every command and
response, writing the file meta through pydicom), more than the rest of import together:

- P-DATA-TF PDUs: split into presentation data values (PS3.8 9.3.5, E.2);
- command sets: Implicit VR Little Endian elements of group 0000 (PS3.7 E.1), parsed into
  ``{element: raw bytes}``; responses encoded from a handful of fields;
- the DICOM file header (preamble, ``DICM``, group 0002 in Explicit VR Little Endian, PS3.10
  7.1) written in front of a received data set so that the spool file is a DICOM file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# Command Field values (PS3.7 E.1)
C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
RESPONSE_BIT = 0x8000
NO_DATASET = 0x0101  # Command Data Set Type: no data set follows

# Group 0000 element numbers
GROUP_LENGTH = 0x0000
AFFECTED_SOP_CLASS = 0x0002
COMMAND_FIELD = 0x0100
MESSAGE_ID = 0x0110
MESSAGE_ID_RESPONDED = 0x0120
DATASET_TYPE = 0x0800
STATUS = 0x0900
AFFECTED_SOP_INSTANCE = 0x1000

UNRECOGNIZED_OPERATION = 0x0211
MAX_COMMAND_BYTES = 64 * 1024  # real command sets are a few hundred bytes

# PDU types (PS3.8 9.3)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)
RELEASE_RP_PDU = struct.pack(">BBLL", RELEASE_RP, 0, 4, 0)


class ProtocolError(Exception):
    """The peer broke the protocol; the association is aborted."""


@dataclass(frozen=True)
class PDV:
    """One presentation data value item of a P-DATA-TF PDU."""

    context_id: int
    is_command: bool
    is_last: bool
    data: memoryview


def pdvs(body: memoryview) -> Iterator[PDV]:
    """The PDV items of a P-DATA-TF PDU's body (the bytes after its 6-byte header)."""
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:
            raise ProtocolError("P-DATA-TF ends inside a PDV item header")
        (length,) = struct.unpack_from(">L", body, offset)
        if length < 2 or offset + 4 + length > end:
            raise ProtocolError(f"PDV item length {length} does not fit its PDU")
        context_id, control = body[offset + 4], body[offset + 5]
        if control & 0xFC:
            raise ProtocolError(f"PDV message control header 0x{control:02x} has reserved bits set")
        yield PDV(context_id, bool(control & 1), bool(control & 2), body[offset + 6:offset + 4 + length])
        offset += 4 + length


def p_data_pdus(context_id: int, payload: bytes, max_pdu: int, command: bool) -> list[bytes]:
    """``payload`` as P-DATA-TF PDUs of one PDV each, none longer than the peer's ``max_pdu``
    (0: no limit); the last fragment is flagged as such."""
    room = len(payload) if max_pdu == 0 else max(1, max_pdu - 6)  # PDV header: length(4), id, control
    chunks = [payload[i:i + room] for i in range(0, len(payload), room)] or [b""]
    out = []
    for n, chunk in enumerate(chunks):
        control = (1 if command else 0) | (2 if n == len(chunks) - 1 else 0)
        out.append(struct.pack(">BBLLBB", P_DATA, 0, 6 + len(chunk), 2 + len(chunk), context_id, control) + chunk)
    return out


def parse_command(data: bytes) -> dict[int, bytes]:
    """A command set (Implicit VR Little Endian, group 0000) as ``{element: value bytes}``."""
    fields: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            raise ProtocolError("command set ends inside an element header")
        group, element, length = struct.unpack_from("<HHL", data, offset)
        if group != 0x0000:
            raise ProtocolError(f"command set holds element ({group:04x},{element:04x}) outside group 0000")
        if offset + 8 + length > end:
            raise ProtocolError(f"command element (0000,{element:04x}) runs past the command set")
        fields[element] = bytes(data[offset + 8:offset + 8 + length])
        offset += 8 + length
    for element in UID_ELEMENTS:
        value = fields.get(element, b"").rstrip(b"\0 ")
        if len(value) > 64 or not _UID_CHARS.issuperset(value):
            raise ProtocolError(f"command element (0000,{element:04x}) is not a UID: {value[:80]!r}")
    return fields


def us(fields: dict[int, bytes], element: int) -> int | None:
    """An unsigned short of a parsed command set, None when absent or malformed."""
    raw = fields.get(element)
    return struct.unpack("<H", raw)[0] if raw is not None and len(raw) == 2 else None


UID_ELEMENTS = (AFFECTED_SOP_CLASS, 0x0003, AFFECTED_SOP_INSTANCE, 0x1001)
_UID_CHARS = frozenset(b"0123456789.")


def uid(fields: dict[int, bytes], element: int) -> str:
    """A UID of a parsed command set ('' when absent); ``parse_command`` checked its syntax."""
    return fields.get(element, b"").rstrip(b"\0 ").decode("ascii")


def encode_command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set from ``(element, value)`` pairs in ascending order, with its group length."""
    body = b"".join(struct.pack("<HHL", 0, e, len(v)) + v for e, v in elements)
    return struct.pack("<HHLL", 0, GROUP_LENGTH, 4, len(body)) + body


def uid_value(uid: str) -> bytes:
    """A UI value: ASCII, padded with NUL to an even length."""
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def response(request: dict[int, bytes], status: int) -> bytes:
    """The response command set to ``request`` with ``status`` (C-STORE-RSP, C-ECHO-RSP, or the
    response of any other request): same SOP class and instance, no data set."""
    field = us(request, COMMAND_FIELD) or 0
    elements: list[tuple[int, bytes]] = []
    if AFFECTED_SOP_CLASS in request:
        elements.append((AFFECTED_SOP_CLASS, uid_value(uid(request, AFFECTED_SOP_CLASS))))
    elements += [
        (COMMAND_FIELD, struct.pack("<H", field | RESPONSE_BIT)),
        (MESSAGE_ID_RESPONDED, struct.pack("<H", us(request, MESSAGE_ID) or 0)),
        (DATASET_TYPE, struct.pack("<H", NO_DATASET)),
        (STATUS, struct.pack("<H", status)),
    ]
    if AFFECTED_SOP_INSTANCE in request:
        elements.append((AFFECTED_SOP_INSTANCE, uid_value(uid(request, AFFECTED_SOP_INSTANCE))))
    return encode_command(elements)


def _explicit(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHL", 2, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def file_header(sop_class: str, sop_instance: str, transfer_syntax: str, implementation_uid: str,
                implementation_version: str) -> bytes:
    """Preamble, ``DICM`` and the file meta information group of a received instance. Nothing
    about the sender goes in: the same instance from two senders gives the same bytes."""
    padded_version = implementation_version.encode("ascii")
    if len(padded_version) % 2:
        padded_version += b" "
    group = [
        _explicit(0x0001, b"OB", b"\x00\x01"),
        _explicit(0x0002, b"UI", uid_value(sop_class)),
        _explicit(0x0003, b"UI", uid_value(sop_instance)),
        _explicit(0x0010, b"UI", uid_value(transfer_syntax)),
        _explicit(0x0012, b"UI", uid_value(implementation_uid)),
        _explicit(0x0013, b"SH", padded_version),
    ]
    body = b"".join(group)
    return b"\0" * 128 + b"DICM" + _explicit(0x0000, b"UL", struct.pack("<L", len(body))) + body
