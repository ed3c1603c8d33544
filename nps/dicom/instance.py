"""Reading one DICOM instance's header, once, and deciding whether NPS can take it.

``read_instance`` parses the header of a file on disk (large values such as pixel data are
skipped, not read), checks that the file is complete and that the UIDs NPS keys on are
present and safe, and returns everything import needs. Anything else raises
``InstanceRejected`` with a reason a user understands.

Complete means that the data set ends exactly where its last element ends. In Deflated
Explicit VR Little Endian the data set is one deflate stream, inflated by pydicom in memory:
the stream must end, and the inflated data set is what the elements must fill. A data set
that ends too early is *truncated* only if what was read of it is believable as DICOM (see
``_believable``); bytes that are not DICOM at all (random data, text) are *not DICOM*.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
import zlib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

from nps.dicom.metadata import get, instance_metadata
from nps.errors import NPSError
from nps.hashing import series_dataset_id

UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_UID = 64
DEFER_BYTES = 4096  # values larger than this (pixel data, big private blobs) are not read
MAX_TEXT = 1024  # cap on any indexed string from a header (hostile headers are long)
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
UNDEFINED = 0xFFFFFFFF
DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
SOP_CLASS_TAG = 0x00080016  # every instance has it (SOP Common module, type 1)
DICM_PROBE = 144  # preamble, "DICM" and the (0002,0000) group length element


class RejectReason(StrEnum):
    """Why an instance was not taken (stored with it in the quarantine)."""

    NOT_DICOM = "not_dicom"
    TRUNCATED = "truncated"
    MISSING_UID = "missing_uid"
    INVALID_UID = "invalid_uid"
    NOT_AN_INSTANCE = "not_an_instance"


class InstanceRejected(NPSError):
    """Raised when an instance cannot become part of a series; ``reason`` says which rule it broke."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Instance:
    """What import needs to know about one instance."""

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str | None
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    header: dict[str, Any]

    @property
    def dataset_id(self) -> str:
        """The series dataset it belongs to: sha1(SeriesInstanceUID)."""
        return series_dataset_id(self.series_instance_uid)

    @property
    def path(self) -> str:
        """Its path inside the series dataset."""
        return f"dicom/{self.sop_instance_uid}.dcm"


def read_instance(path: Path) -> Instance:
    """Parse ``path``'s header; raise InstanceRejected if NPS cannot take it (see RejectReason)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns about every odd VR; we judge below
                ds = pydicom.dcmread(fh, defer_size=DEFER_BYTES)
        except zlib.error as exc:  # only inflating a deflated data set raises this
            raise _inflate_refusal(path, exc) from exc
        except Exception as exc:  # pydicom raises many types for garbage; all mean the same here
            raise InstanceRejected(RejectReason.NOT_DICOM, f"not a DICOM file ({type(exc).__name__}: {exc})"[:300]) \
                from exc
        _check_complete(ds, size)
    sop_class = _uid(ds, "SOPClassUID", required=False) or _meta_uid(ds, "MediaStorageSOPClassUID")
    if sop_class == DICOMDIR_CLASS:
        raise InstanceRejected(RejectReason.NOT_AN_INSTANCE, "a DICOMDIR (an index of files), not an instance")
    sop = _uid(ds, "SOPInstanceUID", required=True)
    series = _uid(ds, "SeriesInstanceUID", required=True)
    assert sop is not None and series is not None
    study = _uid(ds, "StudyInstanceUID", required=False)
    header = _header(ds)
    return Instance(sop, series, study, sop_class, _meta_uid(ds, "TransferSyntaxUID"), header)


def dataset_offset(head: bytes) -> int:
    """Where the data set starts in a DICOM file: after the file meta group when the file has
    the standard header with its group length, else 0 (the whole file counts)."""
    if len(head) < DICM_PROBE or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return 0
    return DICM_PROBE + int.from_bytes(head[140:144], "little")


def _inflate_refusal(path: Path, exc: zlib.error) -> InstanceRejected:
    """Why a deflated data set could not be inflated: its stream was cut short, or it is not
    deflate data at all (rare, so the file is read again to tell)."""
    data = path.read_bytes()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflater.decompress(data[dataset_offset(data[:DICM_PROBE]):])
    except zlib.error:
        return InstanceRejected(RejectReason.NOT_DICOM, f"the deflated data set is not deflate data ({exc})")
    return InstanceRejected(RejectReason.TRUNCATED, "the deflated data set is cut short (its deflate stream "
                                                    f"does not end: {exc})")


def _check_complete(ds: Dataset, size: int) -> None:
    """A complete data set ends exactly where its last element ends: the file's end, or for a
    deflated one the end of the data set pydicom inflated in memory (``ds.buffer``)."""
    tags = list(ds.keys())  # in the order read
    if not tags:
        raise InstanceRejected(RejectReason.NOT_DICOM, "no data elements after the file meta header")
    inflated = ds.buffer if _meta_uid(ds, "TransferSyntaxUID") == DEFLATED else None
    end = len(inflated.getvalue()) if inflated is not None else size
    last = ds.get_item(tags[-1], keep_deferred=True)
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is None or length is None:
        return  # already converted: pydicom read it whole, so it was there
    if length == UNDEFINED:
        if last.tag == 0x7FE00010 and not _ends_with(ds, SEQUENCE_DELIMITER):
            raise InstanceRejected(RejectReason.TRUNCATED, "encapsulated pixel data is cut short")
        return
    if tell + length != end:
        _believable(tags)
        what = "shorter" if tell + length > end else "longer"
        raise InstanceRejected(
            RejectReason.TRUNCATED,
            f"file is {what} than its elements declare ({end} bytes, the last element ends at {tell + length})",
        )


def _believable(tags: list[Any]) -> None:
    """Raise NOT_DICOM unless the elements read could begin a DICOM data set. An instance has
    SOPClassUID (0008,0016) and its elements come in ascending tag order (PS3.5 7.1), so the
    first one is in group 0008 at or before it (or in group 0002 or 0004, which careless
    writers and directories put there), and each is after the one before. Random bytes or text
    read as elements fail this (their first "tag" is anything); a real file cut short passes."""
    first = tags[0]
    if first > SOP_CLASS_TAG or first >> 16 not in (0x0002, 0x0004, 0x0008):
        raise InstanceRejected(RejectReason.NOT_DICOM, f"not a DICOM data set: its first element would be "
                                                       f"{first}, where an instance starts in group 0008, "
                                                       "at or before (0008,0016)")
    if any(a >= b for a, b in itertools.pairwise(tags)):
        raise InstanceRejected(RejectReason.NOT_DICOM, "not a DICOM data set: its elements are out of order")


def _ends_with(ds: Dataset, tail: bytes) -> bool:
    if ds.buffer is not None and hasattr(ds.buffer, "getvalue"):  # inflated in memory
        return bool(ds.buffer.getvalue().endswith(tail))
    filename = ds.filename if isinstance(ds.filename, str) else None
    if filename is None:
        return True
    with open(filename, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() < len(tail):
            return False
        fh.seek(-len(tail), 2)
        return fh.read() == tail


def _uid(ds: Dataset, keyword: str, required: bool) -> str | None:
    try:
        raw = get(ds, keyword)
    except Exception as exc:  # a value that cannot be decoded at all
        raise InstanceRejected(RejectReason.INVALID_UID, f"{keyword} cannot be read ({exc})"[:300]) from exc
    value = str(raw).strip().rstrip("\0").strip() if raw is not None else ""
    if not value:
        if required:
            raise InstanceRejected(RejectReason.MISSING_UID, f"the instance has no {keyword}")
        return None
    if len(value) > MAX_UID or not UID.fullmatch(value):
        if required:
            raise InstanceRejected(
                RejectReason.INVALID_UID, f"{keyword} {value[:80]!r} is not a DICOM UID (digits and dots, at most 64)"
            )
        return None
    return value


def _meta_uid(ds: Dataset, keyword: str) -> str | None:
    meta = getattr(ds, "file_meta", None)
    value = str(meta.get(keyword, "") or "").strip().rstrip("\0") if meta is not None else ""
    return value if value and len(value) <= MAX_UID and UID.fullmatch(value) else None


def _header(ds: Dataset) -> dict[str, Any]:
    try:
        meta = instance_metadata(ds)
    except Exception:  # one unreadable optional field must not cost the instance
        meta = {}
    meta["instance_number"] = _int(ds, "InstanceNumber")
    meta["number_of_frames"] = _int(ds, "NumberOfFrames")
    meta["slice_position"] = _position(ds)
    return {k: _clean(v) for k, v in meta.items()}


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = get(ds, keyword)
        return int(value) if value not in (None, "") else None
    except Exception:
        return None


def _position(ds: Dataset) -> str | None:
    try:
        ipp = get(ds, "ImagePositionPatient")
        if ipp is not None and len(ipp) == 3:
            return "\\".join(f"{float(v):.2f}" for v in ipp)
        loc = get(ds, "SliceLocation")
        return f"{float(loc):.2f}" if loc is not None else None
    except Exception:
        return None


def _clean(value: Any) -> Any:
    """JSON-safe and bounded: finite numbers, short strings, flat lists."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value[:64]]
    return str(value)[:MAX_TEXT]
