"""Real DICOM files for tests, written with pydicom (a stand-in for a scanner)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def make_instance(path: Path, series_uid: str | None = None, sop_uid: str | None = None, number: int = 1,
                  size: int = 16, pixels: bytes | None = None, **tags: Any) -> tuple[str, str]:
    """Write one MR instance; returns (SeriesInstanceUID, SOPInstanceUID). ``tags`` override, and a
    tag set to None is left out."""
    series_uid = series_uid or generate_uid()
    sop_uid = sop_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    values: dict[str, Any] = {
        "SOPClassUID": MRImageStorage, "SOPInstanceUID": sop_uid, "SeriesInstanceUID": series_uid,
        "StudyInstanceUID": "1.2.3.4", "PatientName": "Test^Patient", "PatientID": "P1", "Modality": "MR",
        "StudyDate": "20250102", "StudyTime": "101500", "SeriesDescription": "t1_mprage_sag", "SeriesNumber": 3,
        "InstanceNumber": number, "RepetitionTime": 2300, "EchoTime": 2.9, "InversionTime": 900,
        "ScanningSequence": "GR\\IR", "ImagePositionPatient": [0, 0, float(number)], "Rows": size,
        "Columns": size, "SamplesPerPixel": 1, "PhotometricInterpretation": "MONOCHROME2", "BitsAllocated": 16,
        "BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0,
    }
    values.update(tags)
    for keyword, value in values.items():
        if value is not None:
            setattr(ds, keyword, value)
    ds.PixelData = pixels if pixels is not None else (np.arange(size * size, dtype=np.uint16) + number).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return series_uid, sop_uid


def make_series(folder: Path, count: int, **tags: Any) -> tuple[str, list[str]]:
    """``count`` instances of one new series in ``folder``; returns (series UID, SOP UIDs)."""
    series_uid = tags.pop("series_uid", None) or generate_uid()
    sops = [make_instance(folder / f"i{n:04d}.dcm", series_uid, number=n + 1, **tags)[1] for n in range(count)]
    return series_uid, sops
