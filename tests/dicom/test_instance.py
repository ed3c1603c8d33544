"""What import accepts and refuses, judged from real files on disk."""

from __future__ import annotations

import random
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from nps.dicom.instance import InstanceRejected, RejectReason, read_instance
from nps.hashing import series_dataset_id
from tests.dicom.factory import make_instance


def test_a_good_instance_yields_its_uids_place_and_header(tmp_path: Path) -> None:
    series, sop = make_instance(tmp_path / "a.dcm", number=7)
    inst = read_instance(tmp_path / "a.dcm")
    assert (inst.series_instance_uid, inst.sop_instance_uid) == (series, sop)
    assert inst.dataset_id == series_dataset_id(series)
    assert inst.path == f"dicom/{sop}.dcm"
    assert inst.study_instance_uid == "1.2.3.4" and inst.sop_class_uid == "1.2.840.10008.5.1.4.1.1.4"
    assert inst.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert inst.header["instance_number"] == 7 and inst.header["slice_position"] == "0.00\\0.00\\7.00"
    assert inst.header["patient_name"] == "Test Patient" and inst.header["modality"] == "MR"


def rejected(path: Path) -> InstanceRejected:
    with pytest.raises(InstanceRejected) as info:
        read_instance(path)
    return info.value


@pytest.mark.parametrize("content", [b"", b"hello world\n" * 20, b"\0" * 128 + b"DICM", b"PK\x03\x04zipzip"])
def test_non_dicom_files_are_refused_as_not_dicom(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "x").write_bytes(content)
    assert rejected(tmp_path / "x").reason == RejectReason.NOT_DICOM


@pytest.mark.parametrize("keep", [0.3, 0.5, 0.9, 0.999])
def test_a_truncated_file_is_refused_wherever_it_was_cut(tmp_path: Path, keep: float) -> None:
    make_instance(tmp_path / "a.dcm", size=64)
    data = (tmp_path / "a.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: int(len(data) * keep)])
    assert rejected(tmp_path / "cut.dcm").reason in (RejectReason.TRUNCATED, RejectReason.MISSING_UID)


def test_a_file_cut_inside_the_pixel_data_is_truncated(tmp_path: Path) -> None:
    make_instance(tmp_path / "a.dcm", size=64)
    data = (tmp_path / "a.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:-1])
    error = rejected(tmp_path / "cut.dcm")
    assert error.reason == RejectReason.TRUNCATED and "shorter" in error.detail


@pytest.mark.parametrize("keyword", ["SeriesInstanceUID", "SOPInstanceUID"])
def test_missing_uids_are_refused(tmp_path: Path, keyword: str) -> None:
    make_instance(tmp_path / "a.dcm", **{keyword: None})
    error = rejected(tmp_path / "a.dcm")
    assert error.reason == RejectReason.MISSING_UID and keyword in error.detail


@pytest.mark.parametrize("uid", ["1.2/../../etc", "../1.2", "1.2.3\\4", "1.2.abc", "1." + "2" * 70, "/abs/1.2"])
def test_uids_with_path_characters_are_refused(tmp_path: Path, uid: str) -> None:
    make_instance(tmp_path / "a.dcm", sop_uid=uid)
    assert rejected(tmp_path / "a.dcm").reason == RejectReason.INVALID_UID
    make_instance(tmp_path / "b.dcm", series_uid=uid)
    assert rejected(tmp_path / "b.dcm").reason == RejectReason.INVALID_UID


def test_a_dicomdir_is_not_an_instance(tmp_path: Path) -> None:
    make_instance(tmp_path / "DICOMDIR", SOPClassUID="1.2.840.10008.1.3.10")
    assert rejected(tmp_path / "DICOMDIR").reason == RejectReason.NOT_AN_INSTANCE


def test_hostile_long_header_strings_are_capped(tmp_path: Path) -> None:
    make_instance(tmp_path / "a.dcm", SeriesDescription="x" * 60, InstitutionName="y" * 5000)
    header = read_instance(tmp_path / "a.dcm").header
    assert len(header["institution"]) <= 1024


def deflated_copy(src: Path, dest: Path) -> None:
    """``src`` written again in Deflated Explicit VR Little Endian (as a modality or PACS may)."""
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(dest, enforce_file_format=True)


def test_a_deflated_instance_is_read_like_any_other(tmp_path: Path) -> None:
    sample = Path(get_testdata_file("image_dfl.dcm"))  # pydicom's deflated sample, 4637 bytes inflating to 262 kB
    inst = read_instance(sample)
    assert inst.transfer_syntax_uid == DeflatedExplicitVRLittleEndian
    assert inst.sop_instance_uid == pydicom.dcmread(sample).SOPInstanceUID
    series, sop = make_instance(tmp_path / "a.dcm", number=4, size=64)
    deflated_copy(tmp_path / "a.dcm", tmp_path / "dfl.dcm")
    inst = read_instance(tmp_path / "dfl.dcm")
    assert (inst.series_instance_uid, inst.sop_instance_uid) == (series, sop)
    assert inst.header["instance_number"] == 4 and inst.header["patient_name"] == "Test Patient"


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_a_deflated_instance_cut_short_is_truncated(tmp_path: Path, keep: float) -> None:
    make_instance(tmp_path / "a.dcm", size=64, pixels=bytes(range(256)) * 32)
    deflated_copy(tmp_path / "a.dcm", tmp_path / "dfl.dcm")
    data = (tmp_path / "dfl.dcm").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[:int(len(data) * keep)])
    assert rejected(tmp_path / "cut.dcm").reason == RejectReason.TRUNCATED


def behind_a_file_header(path: Path, body: bytes, transfer_syntax: str) -> None:
    """A valid file header (as the receiver writes in front of what it receives) and ``body``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    with path.open("wb") as fh:
        fh.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(fh, meta)
        fh.write(body)


@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_random_bytes_or_text_as_a_data_set_are_not_dicom_rather_than_truncated(
        tmp_path: Path, transfer_syntax: str) -> None:
    rng = random.Random(16)
    bodies = [rng.randbytes(rng.randint(1, 5000)) for _ in range(200)]
    bodies += [b"Hello, this is a plain text file sent by mistake.\n" * n for n in (1, 3, 40)]
    bodies += [b"\xff\xff\x00\x00not a dataset at all" * 3]
    reasons = set()
    for n, body in enumerate(bodies):
        behind_a_file_header(tmp_path / f"{n}.dcm", body, transfer_syntax)
        reasons.add(rejected(tmp_path / f"{n}.dcm").reason)
    assert reasons == {RejectReason.NOT_DICOM}
