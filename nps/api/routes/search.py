"""Search (query string, exact filters, facets, sort, deep paging) and export of result tables."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from nps.api.deps import FIELD, Caller, Svc, cursor
from nps.api.export import export_rows
from nps.api.models import SearchOut
from nps.api.streams import csv_stream, json_lines
from nps.errors import InvalidQuery

router = APIRouter(prefix="/api/v1")
FIELDS = rf"^{FIELD}(,{FIELD}){{0,99}}$"


def parse_filters(filters: list[str]) -> dict[str, list[str]]:
    """``field:value`` pairs as {field: [values]} (values of one field are alternatives)."""
    parsed: dict[str, list[str]] = {}
    for item in filters:
        name, sep, value = item.partition(":")
        if not sep or not name or not value:
            raise InvalidQuery(f"filter {item[:100]!r} is not field:value")
        parsed.setdefault(name, []).append(value)
    return parsed


@router.get("/search", tags=["search"], response_model=SearchOut)
def search(user: Caller, svc: Svc, q: Annotated[str, Query(max_length=2000)] = "*",
           filter_: Annotated[list[Annotated[str, Query(pattern=rf"^{FIELD}:.{{1,1000}}$")]], Query(
               alias="filter", max_length=50, description="field:value, exact; repeat for more")] = [],  # noqa: B006
           facet: Annotated[list[Annotated[str, Query(pattern=rf"^{FIELD}$")]], Query(
               max_length=20, description="a field whose value counts to return; repeat for more")] = [],  # noqa: B006
           facet_size: Annotated[int, Query(ge=1, le=100)] = 10,
           size: Annotated[int, Query(ge=0, le=1000)] = 50,
           sort: Annotated[list[Annotated[str, Query(pattern=rf"^{FIELD}:(asc|desc)$")]], Query(
               max_length=5, description="field:asc|desc; repeat for more (ties go to the next, then to id)")
           ] = ["created_at:desc"],  # noqa: B006
           after: Annotated[str | None, Query(max_length=4000)] = None) -> Response:
    """Lucene query (no leading wildcards) over the caller's projects, narrowed by exact
    ``filter``s (``modality:MR``; values of one field are alternatives), with ``facet`` counts
    (``manufacturer``); ``after`` is the previous answer's ``next``. ``size=0`` gives counts only."""
    order = [(field, direction) for field, _, direction in (key.partition(":") for key in sort)]
    page = svc.index.find(q, sort=order, size=size, after=cursor(after), projects=user.readable(),
                          leading_wildcards=False, terms=parse_filters(filter_), facets=facet or None,
                          facet_size=facet_size)
    # Hits are index documents as Elasticsearch returned them: serialized as they are, not
    # validated again field by field (the model above documents the shape).
    body = {"total": page.total, "hits": page.hits, "facets": page.facets,
            "next": json.dumps(page.after) if page.after else None}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get("/export", tags=["export"], responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
def export(user: Caller, svc: Svc, fields: Annotated[str, Query(pattern=FIELDS)],
           q: Annotated[str | None, Query(min_length=1, max_length=1900)] = None,
           analysis: Annotated[str | None, Query(pattern=r"^a-[0-9a-f]{12}$")] = None,
           input_fields: Annotated[str, Query(pattern=FIELDS)]
           = "patient_id,study_datetime,series_description,series_instance_uid",
           fmt: Annotated[str, Query(alias="format", pattern="^(csv|jsonl)$")] = "csv",
           limit: Annotated[int, Query(ge=1, le=100_000)] = 100_000) -> StreamingResponse:
    """A table of results: those a query finds (``kind:result AND (q)``), or those of an
    ``analysis`` (both: the analysis's results the query finds). One row per (result, source):
    the chosen result fields (``metadata.brain_mean``) beside the source's own
    (``input.patient_id``). Sources are the DICOM series at the root of the result's provenance,
    through up to 10 results in between (one row per series); a result whose provenance has no
    series has its direct inputs as sources."""
    if q is None and analysis is None:
        raise InvalidQuery("give a query (q), an analysis, or both")
    query = f"kind:result AND ({q or '*'})"
    within = None
    if analysis is not None:
        within = svc.analyses.results_filter(svc.analyses.get(user, analysis))
    # Asked once before streaming: a bad query must be a 400, not a broken stream.
    svc.index.find(query, size=1, projects=user.readable(), leading_wildcards=False, within=within)
    rows = export_rows(svc.index, user, query, fields.split(","), input_fields.split(","), limit, within)
    if fmt == "jsonl":
        return StreamingResponse(json_lines(rows), media_type="application/x-ndjson")
    columns = ["result", "input", *fields.split(","), *(f"input.{f}" for f in input_fields.split(","))]
    return StreamingResponse(csv_stream(columns, rows), media_type="text/csv")
