#!/usr/bin/env python3
"""Write a small synthetic MR series as DICOM files (a stand-in for a scanner in demos and tests).

usage: synthetic_series.py OUTDIR [--slices 24] [--size 64] [--seed 1] [--flair] [--study UID] [--patient ID]
Prints the SeriesInstanceUID. The volume is a bright ellipsoid ("brain") in noise, so image
statistics computed from it are meaningful and reproducible for a given seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def volume(slices: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:slices, 0:size, 0:size].astype(np.float32)
    inside = ((x - size / 2) / (size * 0.4)) ** 2 + ((y - size / 2) / (size * 0.45)) ** 2 \
        + ((z - slices / 2) / (slices * 0.45)) ** 2 <= 1
    data = rng.normal(100, 10, (slices, size, size)) + inside * 800
    return np.clip(data, 0, 4095).astype(np.uint16)


def write_series(out: Path, slices: int, size: int, seed: int, flair: bool = False, study: str | None = None,
                 patient: str = "SUB01") -> str:
    """A T1w MPRAGE-like series (or, with ``flair``, a FLAIR one); returns its SeriesInstanceUID."""
    out.mkdir(parents=True, exist_ok=True)
    study, series, frame = study or generate_uid(), generate_uid(), generate_uid()
    vol = volume(slices, size, seed)
    for i in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(out / f"slice{i:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate = "Demo^Subject", patient, "O", "19800101"
        ds.StudyDate, ds.StudyTime, ds.SeriesDate, ds.SeriesTime = "20260101", "120000", "20260101", "120500"
        ds.AccessionNumber, ds.StudyID, ds.ReferringPhysicianName = "ACC1", "1", ""
        ds.Modality, ds.Manufacturer, ds.MagneticFieldStrength = "MR", "NPS synthetic", 3.0
        ds.SeriesDescription = ds.ProtocolName = "FLAIR_synthetic" if flair else "T1w_MPRAGE_synthetic"
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 3 if flair else 2, i + 1, 1
        ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "SE\\IR" if flair else "GR\\IR", "SP\\MP", "3D"
        if flair:
            ds.RepetitionTime, ds.EchoTime, ds.InversionTime, ds.FlipAngle = 5000, 390, 1800, 120
        else:
            ds.RepetitionTime, ds.EchoTime, ds.InversionTime, ds.FlipAngle = 2300, 2.98, 900, 9
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NORM"]
        ds.ImagePositionPatient = [-size / 2, -size / 2, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation, ds.SliceThickness, ds.PixelSpacing = float(i), 1.0, [1.0, 1.0]
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = vol[i].tobytes()
        ds.save_as(out / f"slice{i:03d}.dcm", enforce_file_format=True)
    return str(series)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flair", action="store_true", help="a FLAIR series instead of a T1w one")
    parser.add_argument("--study", help="StudyInstanceUID (default: a new study)")
    parser.add_argument("--patient", default="SUB01", help="PatientID")
    args = parser.parse_args()
    print(write_series(args.outdir, args.slices, args.size, args.seed, args.flair, args.study, args.patient))
    return 0


if __name__ == "__main__":
    sys.exit(main())
