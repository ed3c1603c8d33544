#!/usr/bin/env python3
"""Deterministic generator of realistic index documents for imported series.

Each document has the shape the indexer writes for an imported series
(``nps.index.documents.dataset_document`` with a ``SeriesSummary``): the dataset fields (id =
``sha1(SeriesInstanceUID)``, kind, project, created_at, revision, files, bytes, inputs) and the
typed series fields of ``SERIES_FIELDS``, coerced by ``series_fields`` itself. The classification
comes from ``nps.dicom.classify`` over the generated parameters, so it is what the real importer
would compute.

The population looks like a lab's archive: patients (name, id, sex, birth date) with one to
several studies over 2012-2025, studies of 3-14 series on one scanner of one institution
(Siemens, GE and Philips MR at 1.5 T and 3 T; a little CT and PET), vendor-specific series
descriptions and protocol names (localizers, T1 MPRAGE / BRAVO / 3D TFE, FLAIR, T2 TSE, DWI and
DTI with their b-values, resting-state and task BOLD, SWI, field maps, ASL), TR/TE/TI/flip angle
consistent with each sequence, and a few projects.

Library: ``generate(n, seed) -> Iterator[dict]``. CLI:
``python bench/gen_series.py -n 100000 --seed 1 > docs.jsonl`` (JSON lines), or
``--index PREFIX`` to bulk-index them into ``PREFIX-datasets`` (created with the real mappings).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nps.dicom.classify import classify  # noqa: E402
from nps.hashing import series_dataset_id  # noqa: E402
from nps.index.documents import series_fields  # noqa: E402
from schemas.series import SeriesSummary  # noqa: E402

UID_ROOT = "1.2.826.0.1.3680043.10.1137"  # a private-looking root; uids stay unique per (seed, n)
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
# Projects and their share of studies; None is data without a project ("default").
PROJECTS: list[tuple[str | None, float]] = [
    ("alpha", 0.30), ("brainage", 0.25), ("stroke", 0.15), ("epilepsy", 0.10), ("dementia", 0.10), (None, 0.10)]

FIRST_F = ["ANNA", "MARIA", "EMMA", "SOFIA", "JULIA", "LAURA", "SARAH", "CLAIRE", "ELENA", "IRENE", "NORA",
           "HELEN", "LUCY", "ALICE", "MARTA", "INES", "KATE", "LINDA", "PAULA", "ROSA"]
FIRST_M = ["JOHN", "PETER", "DAVID", "MARC", "LUCAS", "THOMAS", "PAUL", "MARTIN", "JAN", "HUGO", "LEO", "OMAR",
           "SAMUEL", "VICTOR", "ANDREW", "KARL", "RAFAEL", "NOAH", "IVAN", "FELIX"]
LAST = ["SMITH", "MUELLER", "GARCIA", "ROSSI", "DUBOIS", "JANSEN", "NOWAK", "SILVA", "KOWALSKI", "MARTIN",
        "BERNARD", "FISCHER", "WEBER", "MORENO", "LEROY", "BAKER", "NIELSEN", "HANSEN", "PETERS", "LOPEZ",
        "COSTA", "SCHMIDT", "BROWN", "WILSON", "TANAKA", "NGUYEN", "KIM", "OKAFOR", "HADDAD", "LARSEN"]
PHYSICIANS = ["DR HOUSE", "DR WEBER", "DR NOWAK", "DR ROSSI", "DR SILVA", "DR BAKER", "DR KIM", ""]
STUDY_DESCRIPTIONS = {"MR": ["MRI BRAIN", "MR HEAD W/O CONTRAST", "MRT SCHAEDEL", "RESEARCH^BRAIN", "NEURO^EPILEPSY",
                             "MRI BRAIN WITH AND WITHOUT CONTRAST", "RESEARCH^FMRI"],
                      "CT": ["CT HEAD W/O CONTRAST", "CT BRAIN PERFUSION", "CT HEAD"],
                      "PT": ["PET BRAIN FDG", "PET/CT BRAIN AMYLOID"]}


@dataclass(frozen=True)
class Scanner:
    modality: str
    manufacturer: str
    model: str
    field_strength: float | None
    software: str
    station: str


@dataclass(frozen=True)
class Institution:
    name: str
    scanners: tuple[Scanner, ...]


INSTITUTIONS = (
    Institution("University Hospital Zurich", (
        Scanner("MR", "SIEMENS", "Prisma_fit", 3.0, "syngo MR E11", "MRC35113"),
        Scanner("MR", "SIEMENS", "Skyra", 3.0, "syngo MR E11", "AWP45120"),
        Scanner("CT", "SIEMENS", "SOMATOM Force", None, "syngo CT VB20A", "CTAWP73301"),
    )),
    Institution("Charite Berlin", (
        Scanner("MR", "SIEMENS", "Avanto_fit", 1.5, "syngo MR E11", "MRC26514"),
        Scanner("MR", "SIEMENS", "MAGNETOM Vida", 3.0, "syngo MR XA31", "MRC70010"),
        Scanner("PT", "SIEMENS", "Biograph mCT", None, "VG60A", "PETCT01"),
    )),
    Institution("Karolinska Institutet", (
        Scanner("MR", "GE MEDICAL SYSTEMS", "DISCOVERY MR750", 3.0, "DV26.0_R03", "KIMR750"),
        Scanner("MR", "GE MEDICAL SYSTEMS", "SIGNA Premier", 3.0, "RX29.1", "KIPREMIER"),
        Scanner("PT", "GE MEDICAL SYSTEMS", "Discovery MI", None, "pet_coreload.47", "KIPETMR"),
    )),
    Institution("Radboud UMC", (
        Scanner("MR", "Philips Medical Systems", "Ingenia", 3.0, "5.4.1", "PHILIPS-ING3T"),
        Scanner("MR", "Philips Medical Systems", "Achieva dStream", 1.5, "5.3.0", "PHILIPS-ACH15"),
        Scanner("CT", "Philips", "iCT 256", None, "4.1.6", "ICT256"),
    )),
    Institution("Hopital de la Pitie-Salpetriere", (
        Scanner("MR", "SIEMENS", "TrioTim", 3.0, "syngo MR B17", "MEDPC"),
        Scanner("MR", "GE MEDICAL SYSTEMS", "Optima MR450w", 1.5, "DV25.0_R02", "PSMR450"),
    )),
    Institution("Massachusetts General Hospital", (
        Scanner("MR", "SIEMENS", "Prisma", 3.0, "syngo MR E11", "MGHPRISMA"),
        Scanner("MR", "GE MEDICAL SYSTEMS", "SIGNA Architect", 3.0, "RX28.0", "MGHARCH"),
        Scanner("CT", "GE MEDICAL SYSTEMS", "Revolution CT", None, "revo_v1.2", "MGHCT1"),
    )),
    Institution("Oxford FMRIB Centre", (
        Scanner("MR", "SIEMENS", "Prisma", 3.0, "syngo MR E11", "FMRIBPRISMA"),
        Scanner("MR", "SIEMENS", "Verio", 3.0, "syngo MR B17", "FMRIBVERIO"),
    )),
    Institution("University Medical Center Utrecht", (
        Scanner("MR", "Philips Medical Systems", "Achieva", 3.0, "3.2.3", "UMCU-ACH3T"),
        Scanner("MR", "Philips Medical Systems", "Ingenia Elition X", 3.0, "5.7.1", "UMCU-ELITION"),
    )),
)

# MR sequences: (kind, weight, per-vendor (description, protocol, sequence_name)).
VENDOR_NAMES: dict[str, dict[str, list[tuple[str, str, str]]]] = {
    "localizer": {
        "SIEMENS": [("localizer", "localizer", "*fl2d1"), ("AAHead_Scout_64ch-head-coil", "AAHead_Scout", "*fl3d1_ns"),
                    ("localizer_3plane", "localizer", "*fl2d1")],
        "GE": [("3Plane Loc SSFSE", "3Plane Loc", "ssfse"), ("3-Plane Localizer", "LOC", "fgre")],
        "Philips": [("Survey", "SURVEY", "FFE"), ("SmartSurvey", "SmartSurvey", "FFE")],
    },
    "t1_mprage": {
        "SIEMENS": [("t1_mprage_sag_p2_iso", "t1_mprage_sag_p2_iso", "*tfl3d1_16ns"),
                    ("MPRAGE", "MPRAGE_ADNI", "*tfl3d1_16ns"), ("T1w_MPR", "T1w_MPR", "*tfl3d1_16ns")],
        "GE": [("Sag 3D BRAVO", "SAG FSPGR BRAVO", "efgre3d"), ("Sag T1 BRAVO", "BRAVO", "efgre3d")],
        "Philips": [("T1W_3D_TFE", "T1W_3D_TFE SENSE", "T1TFE"), ("sT1W_3D_TFE", "sT1W_3D_TFE", "T1TFE")],
    },
    "t1_se": {
        "SIEMENS": [("t1_se_tra", "t1_se_tra", "*se2d1"), ("t1_se_tra_fs_KM", "t1_se_tra", "*se2d1")],
        "GE": [("Ax T1 SE", "Ax T1 SE", "se2d"), ("Ax T1 FLAIR", "Ax T1 FLAIR", "irse2d")],
        "Philips": [("T1W_SE", "T1W_SE", "SE"), ("T1W_SE_GD", "T1W_SE_GD", "SE")],
    },
    "t2_tse": {
        "SIEMENS": [("t2_tse_tra", "t2_tse_tra_p2", "*tse2d1_15"), ("t2_spc_sag_p2_iso", "t2_spc_sag", "*spc_314ns")],
        "GE": [("Ax T2 FSE", "Ax T2 FSE", "fse2d"), ("Ax T2 PROPELLER", "Ax T2 PROP", "prop2d")],
        "Philips": [("T2W_TSE", "T2W_TSE", "TSE"), ("T2W_3D_TSE", "T2W_3D_TSE", "TSE")],
    },
    "flair": {
        "SIEMENS": [("t2_flair_sag_p2_3d", "t2_flair_sag_p2_3d", "*spcir_278ns"),
                    ("t2_tirm_tra_dark-fluid", "t2_tirm_tra_dark-fluid", "*tir2d1_15")],
        "GE": [("Sag CUBE FLAIR", "Sag CUBE FLAIR", "cube"), ("Ax T2 FLAIR", "Ax T2 FLAIR", "irfse2d")],
        "Philips": [("3D_FLAIR", "3D_FLAIR SENSE", "IR_TSE"), ("FLAIR_longTR", "FLAIR_longTR", "IR_TSE")],
    },
    "dwi": {
        "SIEMENS": [("ep2d_diff_mddw_30_p2", "ep2d_diff_mddw_30", "*ep_b1000#1"),
                    ("DTI_64dir_b1000", "DTI_64dir", "*ep_b1000#64"),
                    ("ep2d_diff_3scan_trace_p2", "ep2d_diff_tra", "*ep_b1000t")],
        "GE": [("Ax DTI 64dir", "Ax DTI", "epi2_diff"), ("Ax DWI b1000", "DWI", "epi2_diff")],
        "Philips": [("DTI_medium_iso", "DTI_medium", "DwiSE"), ("DWI_SENSE", "DWI", "DwiSE")],
    },
    "adc": {
        "SIEMENS": [("ep2d_diff_mddw_30_p2_ADC", "ep2d_diff_mddw_30", "*ep_b0_1000")],
        "GE": [("Apparent Diffusion Coefficient (mm2/s)", "DWI", "epi2_diff")],
        "Philips": [("dADC_DWI_SENSE", "DWI", "DwiSE")],
    },
    "bold_rest": {
        "SIEMENS": [("ep2d_bold_resting_state", "ep2d_bold_rest", "*epfid2d1_64"),
                    ("rfMRI_REST_AP", "rfMRI_REST_AP", "epfid2d1_104"),
                    ("resting_state_fMRI", "rs_fMRI", "*epfid2d1_64")],
        "GE": [("rsfMRI", "rsfMRI", "epi"), ("Resting State fMRI", "fMRI_rest", "epi")],
        "Philips": [("fMRI_rest", "fMRI_rest SENSE", "FEEPI"), ("rs_fMRI_MB", "rs_fMRI", "FEEPI")],
    },
    "bold_task": {
        "SIEMENS": [("tfMRI_NBACK_AP", "task_nback", "epfid2d1_104"),
                    ("ep2d_bold_motor", "task_motor", "*epfid2d1_64")],
        "GE": [("fMRI task language", "task_language", "epi")],
        "Philips": [("fMRI_task_faces", "task_faces", "FEEPI")],
    },
    "swi": {
        "SIEMENS": [("SWI_Images", "swi_tra", "*swi3d1r"), ("Mag_Images", "swi_tra", "*swi3d1r")],
        "GE": [("Ax SWAN", "Ax SWAN", "swan")],
        "Philips": [("SWIp", "SWIp", "FFE")],
    },
    "fieldmap": {
        "SIEMENS": [("gre_field_mapping", "gre_field_mapping", "*fm2d2r"),
                    ("SpinEchoFieldMap_AP", "SE_fieldmap_AP", "epse2d1_104")],
        "GE": [("B0 map", "B0map", "fgre")],
        "Philips": [("B0_map", "B0_map", "FFE")],
    },
    "asl": {
        "SIEMENS": [("tgse_pcasl_PLD2000", "pcasl_3d", "tgse_3d1_3176")],
        "GE": [("3D ASL (non-contrast)", "3D ASL", "3dasl")],
        "Philips": [("pCASL_SENSE", "pCASL", "FEEPI")],
    },
}
# A study is one of these protocols (lists of sequence kinds in acquisition order).
MR_PROTOCOLS: list[tuple[list[str], float]] = [
    (["localizer", "t1_mprage", "flair", "t2_tse", "dwi", "adc", "swi"], 0.30),  # clinical brain
    (["localizer", "t1_mprage", "fieldmap", "bold_rest", "dwi", "flair"], 0.22),  # research, resting state
    (["localizer", "localizer", "t1_mprage", "fieldmap", "bold_task", "bold_task", "bold_rest", "dwi", "t2_tse"], 0.12),
    (["localizer", "t1_se", "t2_tse", "flair", "dwi", "adc", "t1_se"], 0.14),  # with contrast
    (["localizer", "t1_mprage", "flair", "asl", "swi", "dwi"], 0.12),  # dementia
    (["localizer", "t1_mprage", "t2_tse", "flair"], 0.10),  # short
]


def _vendor(manufacturer: str) -> str:
    return "SIEMENS" if manufacturer.startswith("SIEMENS") else "GE" if manufacturer.startswith("GE") else "Philips"


def _pick(rng: random.Random, weighted: list[tuple[Any, float]]) -> Any:
    return rng.choices([v for v, _ in weighted], [w for _, w in weighted])[0]


def _mr_params(rng: random.Random, kind: str, field: float) -> dict[str, Any]:
    """Acquisition parameters of one MR sequence kind (times in ms)."""
    r = rng.uniform
    hi = field >= 3
    if kind == "localizer":
        return {"repetition_time": round(r(7.5, 9.0), 2), "echo_time": round(r(3.2, 4.0), 2), "flip_angle": 20.0,
                "scanning_sequence": "GR", "sequence_variant": ["SP", "OSP"], "acquisition_type": "2D",
                "image_type": ["ORIGINAL", "PRIMARY", "M", "NORM", "DIS2D"], "slice_thickness": 7.0,
                "instances": rng.choice([3, 9, 30]), "slices": None, "rows": 256, "pixel": 0.98}
    if kind == "t1_mprage":
        return {"repetition_time": rng.choice([2300.0, 2400.0, 1900.0, 2000.0]) if hi else rng.choice([2700.0, 2200.0]),
                "echo_time": round(r(2.0, 3.4), 2), "inversion_time": rng.choice([900.0, 1000.0, 1100.0]),
                "flip_angle": rng.choice([8.0, 9.0]), "scanning_sequence": ["GR", "IR"],
                "sequence_variant": ["SK", "SP", "MP"], "acquisition_type": "3D",
                "image_type": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
                "slice_thickness": rng.choice([1.0, 0.9, 0.8]),
                "instances": rng.choice([160, 176, 192, 208]), "slices": None, "rows": 256, "pixel": 1.0}
    if kind == "t1_se":
        return {"repetition_time": round(r(450, 700)), "echo_time": round(r(8, 15), 1), "flip_angle": 90.0,
                "scanning_sequence": "SE", "sequence_variant": ["SK", "SP"], "acquisition_type": "2D",
                "image_type": ["ORIGINAL", "PRIMARY", "M", "ND"], "slice_thickness": 5.0,
                "instances": rng.choice([20, 24, 28]), "slices": None, "rows": 320, "pixel": 0.72}
    if kind == "t2_tse":
        return {"repetition_time": round(r(3500, 7000)), "echo_time": round(r(85, 120)), "flip_angle": 150.0,
                "scanning_sequence": "SE", "sequence_variant": ["SK", "SP", "OSP"], "acquisition_type": "2D",
                "image_type": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
                "slice_thickness": rng.choice([3.0, 4.0, 5.0]),
                "instances": rng.choice([25, 30, 35, 176]), "slices": None, "rows": 384, "pixel": 0.6}
    if kind == "flair":
        return {"repetition_time": round(r(5000, 9500)), "echo_time": round(r(80, 390)),
                "inversion_time": round(r(1800, 2500)), "flip_angle": 120.0, "scanning_sequence": ["SE", "IR"],
                "sequence_variant": ["SK", "SP", "MP"], "acquisition_type": rng.choice(["2D", "3D"]),
                "image_type": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"],
                "slice_thickness": rng.choice([1.0, 3.0, 5.0]),
                "instances": rng.choice([25, 30, 160, 176]), "slices": None, "rows": 256, "pixel": 0.9}
    if kind in ("dwi", "adc"):
        shells = rng.choice([[0.0, 1000.0], [0.0, 1000.0], [0.0, 1000.0, 2000.0], [0.0, 700.0, 1000.0, 2000.0, 3000.0],
                             [0.0, 800.0]])
        directions = rng.choice([6, 30, 32, 64])
        return {"repetition_time": round(r(3000, 9800)), "echo_time": round(r(60, 100)), "flip_angle": 90.0,
                "scanning_sequence": "EP", "sequence_variant": ["SK", "SP"], "acquisition_type": "2D",
                "image_type": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"] if kind == "adc"
                else ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"],
                "slice_thickness": rng.choice([2.0, 2.5, 3.0, 5.0]), "b_values": [] if kind == "adc" else shells,
                "instances": 30 if kind == "adc" else directions * len(shells) + 1, "slices": 30, "rows": 128,
                "pixel": 1.8}
    if kind in ("bold_rest", "bold_task"):
        tr = rng.choice([2000.0, 2000.0, 800.0, 720.0, 1500.0, 3000.0])
        frames = rng.choice([150, 200, 240, 300, 480]) if kind == "bold_rest" else rng.choice([120, 160, 220])
        return {"repetition_time": tr, "echo_time": rng.choice([30.0, 33.0, 35.0, 37.0]),
                "flip_angle": rng.choice([52.0, 77.0, 90.0]), "scanning_sequence": "EP",
                "sequence_variant": ["SK", "SS"],
                "acquisition_type": "2D", "image_type": ["ORIGINAL", "PRIMARY", "M", "MB", "ND", "MOSAIC"],
                "slice_thickness": rng.choice([2.0, 2.4, 3.0, 3.5]), "instances": frames, "slices": 1, "rows": 64,
                "pixel": 3.0}
    if kind == "swi":
        return {"repetition_time": round(r(27, 49)), "echo_time": round(r(20, 40)), "flip_angle": 15.0,
                "scanning_sequence": "GR", "sequence_variant": ["SP", "OSP"], "acquisition_type": "3D",
                "image_type": ["ORIGINAL", "PRIMARY", "SWI", "NORM"], "slice_thickness": 1.5, "instances": 72,
                "slices": None, "rows": 256, "pixel": 0.9}
    if kind == "fieldmap":
        return {"repetition_time": rng.choice([488.0, 590.0, 7000.0]), "echo_time": rng.choice([4.92, 7.38, 60.0]),
                "flip_angle": rng.choice([60.0, 90.0]), "scanning_sequence": "GR", "sequence_variant": ["SP"],
                "acquisition_type": "2D", "image_type": ["ORIGINAL", "PRIMARY", "M", "ND"],
                "slice_thickness": 3.0, "instances": 64, "slices": None, "rows": 64, "pixel": 3.0}
    # asl
    return {"repetition_time": rng.choice([4000.0, 4600.0]), "echo_time": rng.choice([10.5, 11.0, 16.0]),
            "flip_angle": 120.0, "scanning_sequence": ["SE", "EP"], "sequence_variant": ["SK"],
            "acquisition_type": "3D", "image_type": ["ORIGINAL", "PRIMARY", "ASL"], "slice_thickness": 4.0,
            "instances": 96, "slices": None, "rows": 64, "pixel": 3.4}


def _other_series(rng: random.Random, modality: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """CT or PET series of one study: (description, protocol, sequence kind, parameters)."""
    if modality == "CT":
        series = [("Topogram 0.6 T20s", "Head_Routine", "localizer",
                   {"image_type": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "instances": 1, "rows": 512,
                    "slice_thickness": 0.6})]
        for desc in rng.sample(["Head 5.0 H30s", "Brain 1.0 J40s", "Head 0.6 Hr38", "Bone 2.0 H60s", "CTA Head 0.75"],
                               rng.randint(1, 3)):
            series.append((desc, "Head_Routine", "ct", {
                "image_type": ["ORIGINAL", "PRIMARY", "AXIAL"], "instances": rng.choice([32, 160, 240, 320]),
                "rows": 512, "slice_thickness": float(desc.split()[1]) if desc.split()[1][0].isdigit() else 1.0}))
        return series
    return [("PET Brain FDG AC", "Brain_FDG", "pet", {"image_type": ["ORIGINAL", "PRIMARY"], "instances": 89,
                                                      "rows": 256, "slice_thickness": 2.03}),
            ("PET Brain NAC", "Brain_FDG", "pet", {"image_type": ["ORIGINAL", "PRIMARY"], "instances": 89,
                                                  "rows": 256, "slice_thickness": 2.03}),
            ("CT AC 3.0 B19f", "Brain_FDG", "ct", {"image_type": ["ORIGINAL", "PRIMARY", "AXIAL", "CT_SOM5 SPI"],
                                                  "instances": 74, "rows": 512, "slice_thickness": 3.0})]


class _Uids:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.n = 0

    def next(self, kind: int) -> str:
        self.n += 1
        return f"{UID_ROOT}.{self.seed}.{kind}.{self.n}"


def generate(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """``n`` series documents, the same for the same (n, seed)."""
    rng = random.Random(seed)
    uids = _Uids(seed)
    made = 0
    patient_no = 0
    while made < n:
        patient_no += 1
        sex = rng.choice("FFMMMO") if rng.random() < 0.01 else rng.choice("FM")
        first = rng.choice(FIRST_F if sex == "F" else FIRST_M)
        pseudonymized = rng.random() < 0.3
        name = f"SUBJ{patient_no:06d}" if pseudonymized else f"{rng.choice(LAST)} {first}"
        patient_id = f"SUBJ{patient_no:06d}" if pseudonymized else f"P{rng.randint(10**6, 10**7 - 1)}{patient_no % 10}"
        born = date(1930, 1, 1) + timedelta(days=rng.randint(0, 365 * 75))
        project = _pick(rng, PROJECTS)
        home = rng.choice(INSTITUTIONS)
        first_visit = datetime(2012, 1, 1) + timedelta(days=rng.randint(0, 365 * 13), hours=rng.randint(7, 18),
                                                        minutes=rng.randint(0, 59))
        visit = first_visit
        for _ in range(_pick(rng, [(1, 0.45), (2, 0.3), (3, 0.15), (4, 0.07), (6, 0.03)])):
            if made >= n:
                break
            institution = home if rng.random() < 0.85 else rng.choice(INSTITUTIONS)
            modality = _pick(rng, [("MR", 0.88), ("CT", 0.08), ("PT", 0.04)])
            choices = [s for s in institution.scanners if s.modality == modality] or \
                [s for i in INSTITUTIONS for s in i.scanners if s.modality == modality]
            scanner = rng.choice(choices)
            if modality != "MR":
                institution = next(i for i in INSTITUTIONS if scanner in i.scanners)
            for doc in _study(rng, uids, n - made, visit, scanner, institution.name, project,
                              {"patient_name": name, "patient_id": patient_id, "patient_sex": sex,
                               "patient_birth_date": born.isoformat()}):
                made += 1
                yield doc
            visit += timedelta(days=rng.randint(30, 900), hours=rng.randint(-3, 3))
            if visit > datetime(2025, 12, 20):
                break


def _study(rng: random.Random, uids: _Uids, budget: int, when: datetime, scanner: Scanner, institution: str,
           project: str | None, patient: dict[str, Any]) -> Iterator[dict[str, Any]]:
    study_uid = uids.next(1)
    born = date.fromisoformat(patient["patient_birth_date"])
    age = round((when.date() - born).days / 365.25, 2)
    vendor = _vendor(scanner.manufacturer)
    study = {
        **patient, "patient_age": age, "study_instance_uid": study_uid, "study_datetime": when.isoformat(),
        "study_description": rng.choice(STUDY_DESCRIPTIONS[scanner.modality]),
        "accession_number": f"A{rng.randint(10**7, 10**8 - 1)}", "referring_physician": rng.choice(PHYSICIANS) or None,
        "institution": institution, "modality": scanner.modality, "body_part": rng.choice(["HEAD", "HEAD", "BRAIN"]),
        "manufacturer": scanner.manufacturer, "manufacturer_model": scanner.model, "station_name": scanner.station,
        "software_versions": scanner.software, "field_strength": scanner.field_strength,
    }
    # Imported shortly after the study, or (older data) migrated in bulk in 2024.
    imported = when + timedelta(minutes=rng.randint(20, 240)) if when.year >= 2019 or rng.random() < 0.4 else \
        datetime(2024, 3, 1) + timedelta(seconds=rng.randint(0, 86400 * 60))
    clock = when
    if scanner.modality == "MR":
        protocol = _pick(rng, [(p, w) for p, w in MR_PROTOCOLS])
        plan = [(kind, *rng.choice(VENDOR_NAMES[kind][vendor])) for kind in protocol if rng.random() < 0.95]
        series_list = [(desc, prot, kind, {**_mr_params(rng, kind, scanner.field_strength or 1.5), "seq": seq})
                       for kind, desc, prot, seq in plan]
    else:
        series_list = _other_series(rng, scanner.modality)
    for number, (desc, prot, kind, params) in enumerate(series_list[:budget], start=1):
        clock += timedelta(seconds=rng.randint(30, 420))
        uid = uids.next(2)
        instances = int(params["instances"])
        rows = int(params["rows"])
        fields: dict[str, Any] = {
            **study, "series_instance_uid": uid,
            "series_number": number * 100 + 1 if vendor == "Philips" and scanner.modality == "MR" else number,
            "series_description": desc, "protocol_name": prot, "image_type": params.get("image_type"),
            "slice_thickness": params.get("slice_thickness"), "rows": rows,
            "columns": rows, "pixel_spacing": [params.get("pixel", 0.5)] * 2,
        }
        if scanner.modality == "MR":
            for key in ("repetition_time", "echo_time", "inversion_time", "flip_angle", "scanning_sequence",
                        "sequence_variant", "acquisition_type"):
                if key in params:
                    fields[key] = params[key]
            fields["sequence_name"] = params["seq"]
        elif scanner.modality == "CT" and kind != "localizer":
            fields["sequence_name"] = None
        b_values = [float(b) for b in params.get("b_values") or []]
        slices = params.get("slices")
        klass = classify({**fields, "b_values": b_values}, instances=instances, slices=slices)
        sop = (ENHANCED_MR if vendor == "Philips" and rng.random() < 0.3 else MR_STORAGE) if scanner.modality == "MR" \
            else CT_STORAGE if scanner.modality == "CT" or kind == "ct" else PET_STORAGE
        if kind == "ct":
            sop = CT_STORAGE
        dataset_id = series_dataset_id(uid)
        summary = SeriesSummary(
            dataset_id=dataset_id, revision=1, fields={k: v for k, v in fields.items() if v is not None},
            number_of_instances=instances, b_values=tuple(b_values), is_diffusion=any(b > 0 for b in b_values),
            acquisition_datetime=clock.isoformat(), classification=klass, sop_class_uids=(sop,))
        per_instance = rows * rows * 2 + rng.randint(1800, 12000)
        doc: dict[str, Any] = {
            "id": dataset_id, "kind": "series", "project": project,
            "created_at": (imported + timedelta(seconds=number * 7)).isoformat(),
            "revision": 1, "files": instances, "bytes": instances * per_instance, "inputs": [],
            "series_instance_uid": uid, **series_fields(summary),
        }
        yield doc


def index(prefix: str, n: int, seed: int, batch: int = 5000) -> dict[str, Any]:
    """Bulk-index ``n`` documents into ``<prefix>-datasets`` (created with the real mappings)."""
    from nps.config import load_settings
    from nps.index import DatasetIndex

    target = DatasetIndex(load_settings().es_url, prefix)
    target.ensure()
    started = time.perf_counter()
    ok, errors = 0, []
    docs = generate(n, seed)
    while True:
        chunk = [d for _, d in zip(range(batch), docs, strict=False)]
        if not chunk:
            break
        good, bad = target.bulk(chunk)
        ok += good
        errors += bad
    return {"index": target.name, "indexed": ok, "errors": len(errors), "first_errors": errors[:3],
            "seconds": round(time.perf_counter() - started, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--count", type=int, default=1000, help="series documents to generate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--index", metavar="PREFIX", help="bulk-index into PREFIX-datasets instead of printing")
    args = parser.parse_args()
    if args.index:
        if args.index == "nps":
            parser.error("refusing to write generated documents into the real nps-datasets index")
        print(json.dumps(index(args.index, args.count, args.seed)))
        return 0
    out = sys.stdout
    for doc in generate(args.count, args.seed):
        out.write(json.dumps(doc) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
