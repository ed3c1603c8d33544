"""A series summary from its instances' headers. Pure functions.

The representative instance (whose fields describe the series) is the one with the lowest
InstanceNumber, so the summary does not depend on arrival order. Amending a series merges
the new instances into the previous revision's summary without re-reading the old ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from nps.dicom.classify import classify
from schemas.series import SeriesSummary

# Per-instance fields that do not describe the series.
INSTANCE_ONLY = ("instance_number", "number_of_frames", "slice_position", "b_values")


def summarize(dataset_id: str, revision: int, headers: Iterable[dict[str, Any]], sop_classes: Iterable[str | None],
              previous: SeriesSummary | None = None, added: int | None = None) -> SeriesSummary:
    """Merge ``headers`` (instances new in this revision) into ``previous``.

    ``added`` is how many instances are new (defaults to the number of headers).
    """
    headers = list(headers)
    fields = dict(previous.fields) if previous else {}
    first = previous.first_instance_number if previous else None
    b_values = set(previous.b_values if previous else ())
    positions = set(previous.slice_positions if previous else ())
    classes = set(previous.sop_class_uids if previous else ())
    acquired = previous.acquisition_datetime if previous else None
    for header in headers:
        number = header.get("instance_number")
        if not fields or (isinstance(number, int) and (first is None or number < first)):
            fields = {k: v for k, v in header.items() if k not in INSTANCE_ONLY}
            first = number if isinstance(number, int) else first
        b_values.update(float(b) for b in header.get("b_values") or [] if isinstance(b, int | float))
        if header.get("slice_position"):
            positions.add(str(header["slice_position"]))
        when = header.get("acquisition_datetime")
        if isinstance(when, str) and (acquired is None or when < acquired):
            acquired = when
    classes.update(c for c in sop_classes if c)
    count = (previous.number_of_instances if previous else 0) + (len(headers) if added is None else added)
    diffusion = any(b > 0 for b in b_values)
    klass = classify({**fields, "b_values": sorted(b_values)}, instances=count, slices=len(positions) or None)
    return SeriesSummary(
        dataset_id=dataset_id, revision=revision, fields=fields, number_of_instances=count,
        b_values=tuple(sorted(b_values)), is_diffusion=diffusion, slice_positions=tuple(sorted(positions)),
        first_instance_number=first, acquisition_datetime=acquired, classification=klass,
        sop_class_uids=tuple(sorted(classes)),
    )
