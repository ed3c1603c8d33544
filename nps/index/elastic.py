"""Elasticsearch adapter for the datasets index. Vendor errors become IndexUnavailable here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import elastic_transport
import elasticsearch
from elasticsearch import Elasticsearch, helpers

from nps.errors import IndexUnavailable, InvalidQuery
from nps.index.documents import MAX_GROUP_MEMBERS, index_mappings

MAX_QUERY_CHARS = 2000
MAX_RESULTS = 1000
# Member lists are fetched whole by a terms lookup, never searched: no inverted index, no doc values.
MEMBER_LIST_SETTINGS = {"number_of_shards": 1, "number_of_replicas": 0}
MEMBER_LIST_MAPPINGS = {"dynamic": "strict", "properties": {
    "members": {"type": "keyword", "index": False, "doc_values": False}}}


@dataclass(frozen=True)
class Page:
    """One page of search results and the cursor to the next (None on the last page)."""

    total: int
    hits: list[dict[str, Any]]
    after: list[Any] | None
    facets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class DatasetIndex:
    """The ``<prefix>-datasets`` index."""

    def __init__(self, url: str, prefix: str = "nps") -> None:
        self.url = url
        self.name = f"{prefix}-datasets"
        self.es = Elasticsearch(url, request_timeout=30, retry_on_timeout=True, max_retries=3)

    @contextlib.contextmanager
    def _es(self, what: str) -> Iterator[None]:
        try:
            yield
        except elasticsearch.BadRequestError as exc:
            raise InvalidQuery(f"{what}: {_reason(exc)}") from exc
        except (elasticsearch.ApiError, elastic_transport.TransportError) as exc:
            raise IndexUnavailable(f"{what}: Elasticsearch at {self.url} failed: {exc}") from exc

    def ensure(self) -> None:
        """Create the index with explicit mappings if it does not exist."""
        with self._es("creating the index"):
            if not self.es.indices.exists(index=self.name):
                try:
                    self.es.indices.create(index=self.name, **index_mappings())
                    return
                except elasticsearch.BadRequestError as exc:
                    if "resource_already_exists" not in str(exc):
                        raise
            # An index made by an older NPS gains the fields added since (adding is always allowed).
            mappings = index_mappings()["mappings"]
            self.es.indices.put_mapping(index=self.name, properties=mappings["properties"],
                                        dynamic_templates=mappings["dynamic_templates"])
            self.es.indices.put_settings(index=self.name, settings={"index.max_terms_count": MAX_GROUP_MEMBERS})

    def put(self, doc: dict[str, Any]) -> None:
        """Index (or replace) one dataset document; visible to searches at once."""
        with self._es(f"indexing {doc['id']}"):
            # Refreshed now, not at the next periodic refresh: processors and users look at a
            # dataset right after its event (one document per commit, so the cost is small).
            self.es.index(index=self.name, id=doc["id"], document=doc, refresh=True)

    def bulk(self, docs: Iterable[dict[str, Any]]) -> tuple[int, list[str]]:
        """Index many documents in bulk; return how many succeeded and why the others failed.
        Every document is visible to searches when this returns."""
        actions = ({"_index": self.name, "_id": d["id"], "_source": d} for d in docs)
        with self._es("bulk indexing"):
            # One refresh at the end, not refresh="wait_for" per request: that waits for the next
            # periodic refresh (1 s) after each 500-document chunk, ~1 s per chunk (100,000
            # documents: 200 s instead of about 12 s).
            ok, errors = helpers.bulk(self.es, actions, chunk_size=500, raise_on_error=False)
            self.es.indices.refresh(index=self.name)
        failed = errors if isinstance(errors, list) else []
        return int(ok), [str(e)[:300] for e in failed]

    def get(self, dataset_id: str) -> dict[str, Any] | None:
        """One document, or None."""
        with self._es(f"reading {dataset_id}"):
            try:
                return dict(self.es.get(index=self.name, id=dataset_id)["_source"])
            except elasticsearch.NotFoundError:
                return None

    def search(self, query: str, limit: int = 100) -> list[dict[str, Any]]:
        """Datasets matching a Lucene-style query string, newest first."""
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidQuery(f"query longer than {MAX_QUERY_CHARS} characters")
        limit = max(1, min(limit, MAX_RESULTS))
        with self._es("searching"):
            result = self.es.search(index=self.name, size=limit, sort=[{"created_at": "desc"}], query={
                "query_string": {"query": query, "allow_leading_wildcard": False, "default_field": "*"}})
        return [dict(hit["_source"]) for hit in result["hits"]["hits"]]

    def find(self, query: str, *, sort: list[tuple[str, str]] | None = None, size: int = 50,
             after: list[Any] | None = None, date_field: str | None = None, date_from: str | None = None,
             date_to: str | None = None, kind: str | None = None, source: list[str] | None = None,
             projects: tuple[str, ...] | None = None, leading_wildcards: bool = True,
             within: tuple[str, str] | None = None, terms: dict[str, list[str]] | None = None,
             facets: list[str] | None = None, facet_size: int = 10) -> Page:
        """One page of datasets matching a Lucene query string (``*`` for all), with optional
        date range and kind filters, sorted (then by id, so pages are stable); ``after`` is the
        previous page's cursor (``search_after``: deep paging without a 10,000 limit).
        ``terms`` are exact filters (any of a field's values, every field); ``facets`` are
        fields whose most frequent values (and counts) come back with the page."""
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidQuery(f"query longer than {MAX_QUERY_CHARS} characters")
        size = max(0, min(size, MAX_RESULTS))
        filters: list[dict[str, Any]] = []
        if date_from or date_to:
            if not date_field:
                raise InvalidQuery("a date range needs a date field")
            bounds = {k: v for k, v in (("gte", date_from), ("lte", date_to)) if v}
            filters.append({"range": {date_field: bounds}})
        if kind:
            filters.append({"term": {"kind": kind}})
        for name, values in (terms or {}).items():
            filters.append({"terms": {name: values}})
        if within is not None:  # members of a frozen group: (groups index, group id), looked up server-side
            filters.append({"terms": {"id": {"index": within[0], "id": within[1], "path": "members"}}})
        if projects is not None:  # only these projects; "default" is data without a project
            either: list[dict[str, Any]] = [{"terms": {"project": list(projects)}}]
            if "default" in projects:
                either.append({"bool": {"must_not": {"exists": {"field": "project"}}}})
            filters.append({"bool": {"should": either, "minimum_should_match": 1}})
        must = {"query_string": {"query": query or "*", "default_operator": "AND",
                                 "allow_leading_wildcard": leading_wildcards, "lenient": True}}
        order = [{field: {"order": direction, "unmapped_type": "keyword"}} for field, direction in (sort or [])]
        order.append({"id": {"order": "asc"}})
        body: dict[str, Any] = {"query": {"bool": {"must": [must], "filter": filters}}, "sort": order,
                                "size": size, "track_total_hits": True}
        if after:
            body["search_after"] = after
        if source is not None:
            body["source"] = source
        if facets:
            body["aggs"] = {name: {"terms": {"field": name, "size": facet_size}} for name in facets}
        with self._es("searching"):
            result = self.es.search(index=self.name, **body)
        hits = result["hits"]["hits"]
        total = int(result["hits"]["total"]["value"])
        cursor = list(hits[-1]["sort"]) if hits and len(hits) == size else None
        counts = {name: [{"value": b.get("key_as_string", b["key"]), "count": b["doc_count"]}
                         for b in agg["buckets"]] for name, agg in (result.get("aggregations") or {}).items()}
        return Page(total, [dict(h["_source"]) for h in hits], cursor, counts)

    def set_user(self, dataset_id: str, fields: dict[str, Any]) -> None:
        """Replace a document's user metadata (``user.*``) with ``fields``; visible at once.
        A value whose type clashes with the field's mapping is an InvalidQuery."""
        with self._es(f"updating {dataset_id}"):
            try:
                doc = dict(self.es.get(index=self.name, id=dataset_id)["_source"])
            except elasticsearch.NotFoundError:
                return  # not indexed yet: the indexer adds the layers when it indexes it
            doc.pop("user", None)
            if fields:
                doc["user"] = fields
            self.es.index(index=self.name, id=dataset_id, document=doc, refresh=True)

    def mget(self, ids: list[str], source: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Documents by id (missing ones left out), fetched 1,000 at a time."""
        found: dict[str, dict[str, Any]] = {}
        with self._es("reading documents"):
            for n in range(0, len(ids), 1000):
                answer = self.es.mget(index=self.name, ids=ids[n:n + 1000], source=source if source else True)
                found.update({d["_id"]: dict(d["_source"]) for d in answer["docs"] if d.get("found")})
        return found

    def delete(self, dataset_ids: Iterable[str]) -> int:
        """Remove documents by id (absent ones are no error); return how many were removed.
        The removal is visible to searches when this returns."""
        actions = ({"_op_type": "delete", "_index": self.name, "_id": i} for i in dataset_ids)
        with self._es("removing documents"):
            # A delete of a missing document reports not_found: harmless here, so not an error.
            ok, errors = helpers.bulk(self.es, actions, chunk_size=1000, raise_on_error=False,
                                      raise_on_exception=True)
            self.es.indices.refresh(index=self.name, ignore_unavailable=True)
        failed = [e for e in errors if _delete_status(e) not in (200, 404)] if isinstance(errors, list) else []
        if failed:
            raise IndexUnavailable(f"removing documents from {self.name} failed: {str(failed[0])[:300]}")
        return int(ok)

    def ids(self) -> Iterator[str]:
        """The id of every document in the index (a scroll: any number, in no particular order)."""
        with self._es("listing the index"):
            if not self.es.indices.exists(index=self.name):
                return
            for hit in helpers.scan(self.es, index=self.name, size=5000,
                                    query={"query": {"match_all": {}}, "_source": False}):
                yield str(hit["_id"])

    # ---- member lists: groups' members and analyses' job ids, for ``find(within=...)`` ----------

    @property
    def member_lists(self) -> str:
        """The small index of member lists beside this one (``<prefix>-groups``)."""
        return f"{self.name.removesuffix('-datasets')}-groups"

    def mirror_members(self, list_id: str, members: list[str]) -> None:
        """Keep a list of dataset ids under ``list_id`` (created with its index if missing);
        ``find(within=(member_lists, list_id))`` then selects them, searchable at once."""
        with self._es(f"mirroring member list {list_id}"):
            if not self.es.indices.exists(index=self.member_lists):
                try:
                    self.es.indices.create(index=self.member_lists, settings=MEMBER_LIST_SETTINGS,
                                           mappings=MEMBER_LIST_MAPPINGS)
                except elasticsearch.BadRequestError as exc:
                    if "resource_already_exists" not in str(exc):
                        raise
            self.es.index(index=self.member_lists, id=list_id, document={"members": members}, refresh=True)

    def has_members(self, list_id: str) -> bool:
        """True when a member list ``list_id`` is kept (a lost one is mirrored again by its owner)."""
        with self._es(f"reading member list {list_id}"):
            return bool(self.es.exists(index=self.member_lists, id=list_id))

    def drop(self) -> None:
        """Delete the index (for tests and a full reindex)."""
        with self._es("deleting the index"):
            self.es.indices.delete(index=self.name, ignore_unavailable=True)


def _delete_status(error: Any) -> int | None:
    """The HTTP status of one failed bulk delete (``{"delete": {"status": 404, ...}}``)."""
    try:
        return int(error["delete"]["status"])
    except (TypeError, KeyError, ValueError):
        return None


def _reason(exc: elasticsearch.ApiError) -> str:
    """The root cause Elasticsearch gave, followed down its caused_by chain to the real reason."""
    try:
        error = exc.body["error"]
        shards = error.get("failed_shards") or []
        node = shards[0]["reason"] if shards else (error.get("root_cause") or [error])[0]
        reasons = [str(node.get("reason") or node.get("type"))]
        while isinstance(node.get("caused_by"), dict):
            node = node["caused_by"]
            reasons.append(str(node.get("reason") or node.get("type")))
        return reasons[-1] if len(reasons) == 1 else f"{reasons[0]}: {reasons[-1]}"
    except (TypeError, KeyError, AttributeError):
        return str(exc)
