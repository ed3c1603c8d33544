"""What NPS indexes about a series, read from one instance's header (and b-values from each)."""

from __future__ import annotations

import contextlib
import re
import warnings
from datetime import date, datetime
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import PersonName

# (field, keyword) read as they are; numbers become floats/ints, multi-values lists.
PATIENT = (("patient_name", "PatientName"), ("patient_id", "PatientID"), ("patient_sex", "PatientSex"))
STUDY = (("study_instance_uid", "StudyInstanceUID"), ("study_description", "StudyDescription"),
         ("accession_number", "AccessionNumber"), ("referring_physician", "ReferringPhysicianName"),
         ("institution", "InstitutionName"))
SERIES = (("series_instance_uid", "SeriesInstanceUID"), ("series_number", "SeriesNumber"),
          ("series_description", "SeriesDescription"), ("modality", "Modality"),
          ("protocol_name", "ProtocolName"), ("body_part", "BodyPartExamined"),
          ("manufacturer", "Manufacturer"), ("manufacturer_model", "ManufacturerModelName"),
          ("station_name", "StationName"), ("software_versions", "SoftwareVersions"),
          ("field_strength", "MagneticFieldStrength"), ("sequence_name", "SequenceName"),
          ("scanning_sequence", "ScanningSequence"), ("sequence_variant", "SequenceVariant"),
          ("image_type", "ImageType"), ("acquisition_type", "MRAcquisitionType"),
          ("repetition_time", "RepetitionTime"), ("echo_time", "EchoTime"),
          ("inversion_time", "InversionTime"), ("flip_angle", "FlipAngle"),
          ("slice_thickness", "SliceThickness"), ("pixel_spacing", "PixelSpacing"),
          ("rows", "Rows"), ("columns", "Columns"))
_AGE = re.compile(r"^(\d{3})([DWMY])$")


_TAGS: dict[str, BaseTag] = {}


def get(ds: Dataset, keyword: str, default: Any = None) -> Any:
    """``ds.get(keyword, default)`` without pydicom's attribute machinery (keyword lookup,
    ``__getattr__``), which cost more than converting the values; import reads ~50 per instance."""
    tag = _TAGS.get(keyword)
    if tag is None:
        number = tag_for_keyword(keyword)
        if number is None:
            raise KeyError(f"{keyword} is not a DICOM keyword")
        tag = _TAGS[keyword] = Tag(number)
    if tag not in ds._dict:
        return default
    return ds[tag].value


def _value(ds: Dataset, keyword: str) -> Any:
    value = get(ds, keyword)
    if value is None or value == "":
        return None
    if isinstance(value, PersonName):
        return str(value).replace("^", " ").strip() or None
    if isinstance(value, MultiValue | list | tuple):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, int | float | str):
        return value if not isinstance(value, str) else value.strip()
    try:
        number = float(value)  # DSfloat, IS and friends
    except (TypeError, ValueError):
        return str(value).strip()
    return int(number) if number.is_integer() and type(value).__name__ in ("IS", "int") else number


def _date(text: Any) -> date | None:
    if not isinstance(text, str) or not re.fullmatch(r"\d{8}", text):
        return None
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def _datetime(d: Any, t: Any) -> str | None:
    day = _date(d)
    if day is None:
        return None
    clock = re.match(r"^(\d{2})(\d{2})?(\d{2})?", str(t or ""))
    h, m, s = (int(x) if x else 0 for x in (clock.groups() if clock else ("0", "0", "0")))
    if h > 23 or m > 59 or s > 59:
        return day.isoformat()
    return datetime(day.year, day.month, day.day, h, m, s).isoformat()


def age_at_study(ds: Dataset) -> float | None:
    """Age in years: PatientAge if present (``045Y``, ``006M``), else study date minus birth date."""
    m = _AGE.match(str(get(ds, "PatientAge", "")))
    if m:
        return round(int(m.group(1)) / {"D": 365.25, "W": 52.18, "M": 12, "Y": 1}[m.group(2)], 2)
    born, seen = _date(get(ds, "PatientBirthDate")), _date(get(ds, "StudyDate"))
    if born and seen and seen >= born:
        return round((seen - born).days / 365.25, 2)
    return None


def b_values(ds: Dataset) -> list[float]:
    """Diffusion b-values this instance declares: the standard tag, else vendor private tags
    (Siemens CSA through nibabel, GE, Philips). Empty when it is not diffusion weighted."""
    found: list[float] = []
    standard = get(ds, "DiffusionBValue")
    if standard is not None:
        found.append(float(standard))
    elif (0x0029, 0x1010) in ds:  # Siemens CSA image header
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel warns that its DICOM readers are experimental
            from nibabel.nicom import csareader

            try:
                csa = csareader.get_csa_header(ds, "image")
                b = csareader.get_b_value(csa) if csa else None
            except (csareader.CSAReadError, ValueError, KeyError, TypeError):
                b = None
        if b is not None:
            found.append(float(b))
    elif (0x0043, 0x1039) in ds:  # GE: first value of "slop_int_6..9" is the b-value (+1e9 scaling)
        raw = ds[0x0043, 0x1039].value
        first = raw[0] if isinstance(raw, MultiValue | list) else raw
        with contextlib.suppress(TypeError, ValueError):
            found.append(float(first) % 1e9)
    elif (0x2001, 0x1003) in ds:  # Philips
        with contextlib.suppress(TypeError, ValueError):
            found.append(float(ds[0x2001, 0x1003].value))
    return found


def instance_metadata(ds: Dataset) -> dict[str, Any]:
    """Patient, study and series fields of one instance, with None for what is absent."""
    meta: dict[str, Any] = {field: _value(ds, kw) for field, kw in (*PATIENT, *STUDY, *SERIES)}
    meta["patient_birth_date"] = (_date(get(ds, "PatientBirthDate")) or None)
    meta["patient_age"] = age_at_study(ds)
    meta["study_datetime"] = _datetime(get(ds, "StudyDate"), get(ds, "StudyTime"))
    meta["acquisition_datetime"] = _datetime(get(ds, "AcquisitionDate") or get(ds, "SeriesDate"),
                                             get(ds, "AcquisitionTime") or get(ds, "SeriesTime"))
    if meta["patient_birth_date"] is not None:
        meta["patient_birth_date"] = meta["patient_birth_date"].isoformat()
    meta["b_values"] = b_values(ds)
    return meta
