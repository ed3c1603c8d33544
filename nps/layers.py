"""User metadata layers: what people add to a dataset after it exists.

A dataset never changes, but what people know about it does (QC verdicts, subject groups,
notes). Each addition is a *layer*: a set of fields, who added it and when, stored as
``layers/<dataset>/<seq>.json`` with a create-only write, so layers are append-only and two
writers at once both land (one gets the next number). The dataset's search document carries the
merged view under ``user.*`` (a later layer's value of a field wins); a reindex rebuilds it
from the layers.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from nps.blobs import Blobs
from nps.errors import InvalidQuery
from schemas.common import Frozen, utcnow

FieldName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")]
Scalar = str | int | float | bool | None
Value = Annotated[Scalar | list[Annotated[Scalar, Field()]], Field()]
MAX_FIELDS = 100
MAX_LAYERS = 10_000


class Layer(Frozen):
    """One addition to a dataset's user metadata."""

    dataset: str
    seq: int = Field(ge=1)
    fields: dict[FieldName, Value]
    author: str
    note: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


def check_fields(fields: dict[str, Any]) -> None:
    """Refuse what cannot be searched sensibly: too many fields, long strings, long lists."""
    if not fields:
        raise InvalidQuery("a layer needs at least one field")
    if len(fields) > MAX_FIELDS:
        raise InvalidQuery(f"a layer holds at most {MAX_FIELDS} fields")
    for name, value in fields.items():
        values = value if isinstance(value, list) else [value]
        if len(values) > 100:
            raise InvalidQuery(f"{name}: at most 100 values")
        if any(isinstance(v, str) and len(v) > 4096 for v in values):
            raise InvalidQuery(f"{name}: strings are at most 4096 characters")
        if len({type(v) for v in values if v is not None} - {int, float}) > 1 or (
                any(isinstance(v, str) for v in values) and any(isinstance(v, int | float) for v in values)):
            raise InvalidQuery(f"{name}: a list must hold values of one type")


def merged(layers: list[Layer]) -> dict[str, Any]:
    """The current view: fields of later layers win; a field set to null is removed."""
    view: dict[str, Any] = {}
    for layer in sorted(layers, key=lambda item: item.seq):
        for name, value in layer.fields.items():
            if value is None:
                view.pop(name, None)
            else:
                view[name] = value
    return view


class Layers:
    """Layers of every dataset, in ``blobs``."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def list(self, dataset_id: str) -> list[Layer]:
        """A dataset's layers, oldest first."""
        found = []
        for name in self.blobs.children(f"layers/{dataset_id}"):
            raw = self.blobs.get(f"layers/{dataset_id}/{name}")
            if raw:
                found.append(Layer.model_validate_json(raw))
        return sorted(found, key=lambda layer: layer.seq)

    def add(self, dataset_id: str, fields: dict[str, Any], author: str, note: str | None = None) -> Layer:
        """Append a layer (the next number; a concurrent writer makes us take the one after)."""
        check_fields(fields)
        seq = len(self.list(dataset_id)) + 1
        while seq <= MAX_LAYERS:
            layer = Layer(dataset=dataset_id, seq=seq, fields=fields, author=author, note=note)
            if self.blobs.create(f"layers/{dataset_id}/{seq:06d}.json", layer.model_dump_json().encode()):
                return layer
            seq += 1
        raise InvalidQuery(f"{dataset_id} already has {MAX_LAYERS} layers")


def layer_json(layer: Layer) -> dict[str, Any]:
    """A layer as the API shows it."""
    return dict(json.loads(layer.model_dump_json()))
