"""Series summaries: independent of arrival order, and amending equals committing all at once."""

from __future__ import annotations

import random
from typing import Any

from nps.dicom.series import summarize

ID = "a" * 40


def header(number: int, b: float | None = None, position: str | None = None, **extra: Any) -> dict[str, Any]:
    h: dict[str, Any] = {"instance_number": number, "series_description": f"desc-of-{number}", "modality": "MR",
                         "repetition_time": 2300, "echo_time": 2.9, "inversion_time": 900,
                         "scanning_sequence": ["GR", "IR"], "slice_position": position or f"0\\0\\{number}",
                         "acquisition_datetime": f"2025-01-01T10:{number % 60:02d}:00",
                         "b_values": [b] if b is not None else []}
    h.update(extra)
    return h


def test_the_representative_is_the_lowest_instance_number_whatever_the_order() -> None:
    headers = [header(n) for n in range(1, 30)]
    random.Random(4).shuffle(headers)
    summary = summarize(ID, 1, headers, ["1.2"])
    assert summary.fields["series_description"] == "desc-of-1"
    assert summary.first_instance_number == 1 and summary.number_of_instances == 29
    assert summary.acquisition_datetime == "2025-01-01T10:01:00"
    assert len(summary.slice_positions) == 29 and summary.classification == "T1w"
    assert "instance_number" not in summary.fields and "slice_position" not in summary.fields


def test_amending_gives_the_same_summary_as_one_commit_of_everything() -> None:
    first, late = [header(n) for n in range(5, 20)], [header(n) for n in (1, 2, 25)]
    once = summarize(ID, 2, first + late, ["1.2"])
    amended = summarize(ID, 2, late, ["1.2"], previous=summarize(ID, 1, first, ["1.2"]))
    assert amended == once
    assert amended.fields["series_description"] == "desc-of-1"


def test_b_values_make_a_series_diffusion_weighted() -> None:
    headers = [header(n, b=b, position="0\\0\\0", series_description="ep2d", inversion_time=None,
                      scanning_sequence="EP") for n, b in enumerate([0, 1000, 1000, 2000, 0], 1)]
    summary = summarize(ID, 1, headers, ["1.2"])
    assert summary.b_values == (0.0, 1000.0, 2000.0) and summary.is_diffusion
    assert summary.classification == "DWI"


def test_only_zero_b_values_are_not_diffusion() -> None:
    summary = summarize(ID, 1, [header(1, b=0)], ["1.2"])
    assert summary.b_values == (0.0,) and not summary.is_diffusion
