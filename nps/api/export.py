"""Export tables: each result beside the DICOM series its provenance starts from.

A result's input fields come from the series at the root of its provenance, however many
results lie between (dcm2niix, then statistics on its NIfTI, ...). Provenance is followed
through the index documents' ``inputs``, one batched lookup per level for a whole page of
results, at most ``MAX_HOPS`` levels deep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from nps.api.auth import User
from nps.api.streams import dotted
from nps.index import DatasetIndex

MAX_HOPS = 10  # as deep as the provenance route goes: a chain of ten results
PAGE = 1000
Doc = dict[str, Any]


def source_ids(result: Doc, ancestors: Mapping[str, Doc], max_hops: int = MAX_HOPS) -> list[str | None]:
    """Where a result's row(s) take their input fields from: every series reached by following
    ``inputs`` through results, up to ``max_hops`` levels, nearest first. A result
    whose provenance reaches no series (an upload's analysis) falls back to its direct inputs;
    one without inputs has a single row with no input (``[None]``).

    ``ancestors`` holds the documents the caller may read; anything else is a dead end."""
    direct: list[str] = list(result.get("inputs") or [])
    series: list[str] = []
    seen: set[str] = set()
    frontier = direct
    for _ in range(max_hops):
        following: list[str] = []
        for dataset_id in frontier:
            if dataset_id in seen:
                continue
            seen.add(dataset_id)
            doc = ancestors.get(dataset_id)
            kind = doc.get("kind") if doc else None
            if kind == "series":
                series.append(dataset_id)
            elif kind == "result" and doc is not None:
                following.extend(doc.get("inputs") or [])
        frontier = following
        if not frontier:
            break
    found: list[str | None] = list(series or direct)
    return found or [None]


def export_row(result: Doc, source_id: str | None, source: Doc, fields: list[str],
               input_fields: list[str]) -> Doc:
    """One row: the result's chosen fields beside its source's (``input.<field>``)."""
    row: Doc = {"result": result["id"], "input": source_id}
    row.update({f: dotted(result, f) for f in fields})
    row.update({f"input.{f}": dotted(source, f) for f in input_fields})
    return row


def load_ancestors(mget: Callable[[list[str], list[str]], dict[str, Doc]], results: Iterable[Doc],
                   input_fields: list[str], readable: Callable[[Any], bool],
                   max_hops: int = MAX_HOPS) -> dict[str, Doc]:
    """The readable documents of every ancestor of ``results`` up to ``max_hops`` levels:
    one ``mget`` per level for all of them, with only the fields a row and the walk need."""
    wanted = ["id", "kind", "inputs", "project", *input_fields]
    found: dict[str, Doc] = {}
    asked: set[str] = set()
    frontier = {i for r in results for i in r.get("inputs") or []}
    for _ in range(max_hops):
        ids = sorted(frontier - asked)
        if not ids:
            break
        asked.update(ids)
        level = {i: d for i, d in mget(ids, wanted).items() if readable(d.get("project"))}
        found.update(level)
        frontier = {i for d in level.values() if d.get("kind") == "result" for i in d.get("inputs") or []}
    return found


def export_rows(index: DatasetIndex, user: User, query: str, fields: list[str], input_fields: list[str],
                limit: int, within: tuple[str, str] | None = None) -> Iterator[Doc]:
    """Rows of the export table: one per (result, source series), a page of results (and one
    lookup per provenance level) at a time."""
    after = None
    emitted = 0
    while emitted < limit:
        page = index.find(query, size=PAGE, after=after, projects=user.readable(), within=within,
                          leading_wildcards=False, sort=[("id", "asc")])
        ancestors = load_ancestors(lambda ids, wanted: index.mget(ids, source=wanted), page.hits,
                                   input_fields, user.can_read)
        for hit in page.hits:
            for source_id in source_ids(hit, ancestors):
                yield export_row(hit, source_id, ancestors.get(source_id or "", {}), fields, input_fields)
                emitted += 1
                if emitted >= limit:
                    return
        if page.after is None:
            return
        after = page.after
