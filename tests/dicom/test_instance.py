"""What import accepts and refuses, judged from real files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

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
