"""Series classification from acquisition parameters, so users can predict it.

Rules, first match wins (times in ms; "text" is SeriesDescription + ProtocolName, lower case):

1. ``localizer``: ImageType contains LOCALIZER, or text has localizer/scout/survey/3-plane/aahead.
2. ``DWI``: any b-value > 0 (standard or vendor tag), or text has dwi/dti/diff/tensor.
3. ``BOLD``: MR, EPI (ScanningSequence EP) and not diffusion, with TR <= 3500 and a
   time series (more instances than slices would explain) — or text has bold/fmri/rest/task.
4. ``FLAIR``: inversion recovery with TI >= 1500 (and TR >= 4000 when known), or text has flair.
5. ``T1w``: inversion recovery with 300 <= TI < 1500 (MPRAGE-like), or TR < 1000 with TE < 30,
   or text has t1/mprage/spgr/bravo/tfl.
6. ``T2w``: TR >= 2000 with TE >= 60, or text has t2 (but not t2*/swi).
7. ``other``.

Parameters win over text where both speak: a sequence with TI 2200 ms is FLAIR whatever its
name says. Non-MR series are ``other`` unless they are localizers.
"""

from __future__ import annotations

import re
from typing import Any

CLASSES = ("localizer", "DWI", "BOLD", "FLAIR", "T1w", "T2w", "other")

_TEXT = {
    "localizer": re.compile(r"locali[sz]er|scout|survey|3[- ]?plane|tri[- ]?pilot|aahead"),
    "DWI": re.compile(r"\bdwi|dti|diff|tensor"),
    "BOLD": re.compile(r"bold|fmri|\brest|task"),
    "FLAIR": re.compile(r"flair"),
    "T1w": re.compile(r"\bt1|mprage|spgr|bravo|\btfl"),
    "T2w": re.compile(r"\bt2(?![*s])|t2w"),
}


def _num(meta: dict[str, Any], key: str) -> float | None:
    value = meta.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _has(meta: dict[str, Any], key: str, token: str) -> bool:
    value = meta.get(key) or []
    values = value if isinstance(value, list) else re.split(r"[\\\s]+", str(value))
    return any(str(v).strip().upper() == token for v in values)


def classify(meta: dict[str, Any], instances: int = 1, slices: int | None = None) -> str:
    """The class of a series described by ``instance_metadata`` (see the module docstring).

    ``instances``: instances in the series; ``slices``: distinct slice positions, if known.
    """
    text = " ".join(str(meta.get(k) or "") for k in ("series_description", "protocol_name")).lower()
    if _has(meta, "image_type", "LOCALIZER") or _TEXT["localizer"].search(text):
        return "localizer"
    if meta.get("modality") not in (None, "MR"):
        return "other"
    tr, te, ti = _num(meta, "repetition_time"), _num(meta, "echo_time"), _num(meta, "inversion_time")
    inversion = _has(meta, "scanning_sequence", "IR") or (ti is not None and ti > 0)
    if any(b > 0 for b in meta.get("b_values") or []) or _TEXT["DWI"].search(text):
        return "DWI"
    time_series = slices is not None and instances > slices
    if (_has(meta, "scanning_sequence", "EP") and tr is not None and tr <= 3500 and time_series) \
            or _TEXT["BOLD"].search(text):
        return "BOLD"
    if inversion and ti is not None and ti >= 1500 and (tr is None or tr >= 4000):
        return "FLAIR"
    if inversion and ti is not None and 300 <= ti < 1500:
        return "T1w"
    if tr is not None and te is not None:
        if tr < 1000 and te < 30:
            return "T1w"
        if tr >= 2000 and te >= 60:
            return "T2w"
    for name in ("FLAIR", "T1w", "T2w"):
        if _TEXT[name].search(text):
            return name
    return "other"
