"""Header metadata and series classification, on real DICOM headers built with pydicom."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from nps.dicom import b_values, classify, instance_metadata
from tests.conftest import REPO


def header(**tags: Any) -> Dataset:
    ds = Dataset()
    ds.Modality = "MR"
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def test_the_synthetic_scanner_series_yields_every_field(tmp_path: Path) -> None:
    import subprocess
    import sys

    uid = subprocess.run([sys.executable, str(REPO / "examples" / "synthetic_series.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    meta = instance_metadata(pydicom.dcmread(tmp_path / "slice000.dcm", stop_before_pixels=True))
    assert meta["series_instance_uid"] == uid
    assert meta["patient_name"] == "Demo Subject" and meta["patient_id"] == "SUB01"
    assert meta["patient_birth_date"] == "1980-01-01" and meta["patient_age"] == 46.0
    assert meta["study_datetime"] == "2026-01-01T12:00:00"
    assert meta["repetition_time"] == 2300 and meta["echo_time"] == 2.98 and meta["inversion_time"] == 900
    assert meta["pixel_spacing"] == [1.0, 1.0] and meta["rows"] == 64 and meta["columns"] == 64
    assert meta["image_type"] == ["ORIGINAL", "PRIMARY", "M", "NORM"]
    assert meta["scanning_sequence"] == ["GR", "IR"]
    assert meta["b_values"] == []
    assert classify(meta, instances=24, slices=24) == "T1w"


def test_missing_and_malformed_values_become_none_not_errors() -> None:
    meta = instance_metadata(header(PatientBirthDate="19801341", StudyDate="2026", StudyTime="99",
                                    PatientAge="bogus"))
    assert meta["patient_birth_date"] is None and meta["patient_age"] is None
    assert meta["study_datetime"] is None and meta["series_description"] is None


def test_patient_age_prefers_the_age_tag() -> None:
    assert instance_metadata(header(PatientAge="006M"))["patient_age"] == 0.5
    assert instance_metadata(header(PatientBirthDate="20000101", StudyDate="20200101"))["patient_age"] == 20.0


def test_b_values_come_from_the_standard_tag_or_vendor_tags() -> None:
    assert b_values(header(DiffusionBValue=1000)) == [1000.0]
    ge = header()
    ge.add_new((0x0043, 0x1039), "IS", ["1000001000", "0", "0", "0"])
    assert b_values(ge) == [1000.0]
    philips = header()
    philips.add_new((0x2001, 0x1003), "FL", 700.0)
    assert b_values(philips) == [700.0]
    assert b_values(header()) == []


def _csa_with_b_value(b: int) -> bytes:
    """A minimal Siemens CSA2 header holding one element, B_value (format as nibabel reads it)."""
    out = b"SV10" + b"\x04\x03\x02\x01" + struct.pack("<2I", 1, 77)
    name = b"B_value".ljust(64, b"\x00")
    item = str(b).encode() + b"\x00"
    out += name + struct.pack("<i4s3i", 1, b"IS\x00\x00", 0, 1, 77)
    out += struct.pack("<4i", len(item), len(item), 77, len(item))
    return out + item.ljust((len(item) + 3) // 4 * 4, b"\x00")


def test_siemens_b_values_are_read_from_the_csa_header() -> None:
    ds = header(Manufacturer="SIEMENS")
    ds.add_new((0x0029, 0x0010), "LO", "SIEMENS CSA HEADER")
    ds.add_new((0x0029, 0x1010), "OB", _csa_with_b_value(1000))
    assert b_values(ds) == [1000.0]


@pytest.mark.parametrize(
    ("tags", "instances", "slices", "expected"),
    [
        ({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "RepetitionTime": 8, "EchoTime": 4}, 3, 3,
         "localizer"),
        ({"SeriesDescription": "AAHead_Scout_64ch"}, 128, 128, "localizer"),
        ({"DiffusionBValue": 1000, "ScanningSequence": "EP", "RepetitionTime": 8000, "EchoTime": 90}, 60, 60, "DWI"),
        ({"ScanningSequence": "EP", "RepetitionTime": 2000, "EchoTime": 30}, 7200, 36, "BOLD"),
        ({"ScanningSequence": "SE\\IR", "RepetitionTime": 9000, "EchoTime": 90, "InversionTime": 2500}, 40, 40,
         "FLAIR"),
        ({"ScanningSequence": "GR\\IR", "RepetitionTime": 2300, "EchoTime": 3, "InversionTime": 900}, 176, 176,
         "T1w"),
        ({"ScanningSequence": "SE", "RepetitionTime": 500, "EchoTime": 12}, 24, 24, "T1w"),
        ({"ScanningSequence": "SE", "RepetitionTime": 4000, "EchoTime": 100}, 24, 24, "T2w"),
        ({"SeriesDescription": "t2_flair_tra", "ScanningSequence": "SE\\IR", "RepetitionTime": 500,
          "EchoTime": 12, "InversionTime": 900}, 24, 24, "T1w"),  # parameters win over the name
        ({"SeriesDescription": "my t2 thing"}, 24, 24, "T2w"),  # no parameters: the name decides
        ({"ScanningSequence": "GR", "RepetitionTime": 1500, "EchoTime": 40}, 24, 24, "other"),
        ({"Modality": "CT", "SeriesDescription": "T1 post"}, 200, 200, "other"),
    ],
)
def test_classification_follows_the_documented_rules(
    tags: dict[str, Any], instances: int, slices: int, expected: str
) -> None:
    assert classify(instance_metadata(header(**tags)), instances, slices) == expected
