"""The catalog processors plan against: series and results as Elasticsearch indexes them.

Two modes. Per event (``preload=False``): each query is asked of Elasticsearch within the
target (a study's series, a subject's series), and results are checked in the store. For a
sweep (``preload=True``): each distinct query is asked once over everything, paged, and
targets are cut out in memory; results come from one listing of indexed results. A sweep
over 10,000 series thus costs a few dozen requests, not tens of thousands.
"""

from __future__ import annotations

from typing import Any

from nps.errors import InvalidQuery
from nps.index import DatasetIndex
from nps.processors.plan import NO_PROJECT, SeriesRef, Target
from nps.store import DatasetStore
from schemas.processor import Level

PAGE = 1000
FIELDS = ["id", "kind", "revision", "study_instance_uid", "patient_id", "project", "acquisition_datetime",
          "study_datetime"]


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def target_query(target: Target) -> str:
    """A Lucene filter for the series of ``target``."""
    if target.level == Level.SERIES:
        return f"id:{_quoted(target.key)}"
    if target.level == Level.STUDY:
        return f"study_instance_uid:{_quoted(target.key)}"
    if target.level == Level.SUBJECT:
        return f"patient_id:{_quoted(target.key)}"
    return "NOT _exists_:project" if target.key == NO_PROJECT else f"project:{_quoted(target.key)}"


class QueryRefused(InvalidQuery):
    """Raised when Elasticsearch refuses a processor's query while planning."""

    def __init__(self, query: str, reason: str) -> None:
        super().__init__(f"Elasticsearch refuses the query {query!r}: {reason}")
        self.query = query
        self.reason = reason


def series_query(query: str, target: Target | None) -> str:
    """What the index is asked for the series ``query`` selects (within ``target``, if given)."""
    return f"kind:series AND ({query or '*'})" + (f" AND {target_query(target)}" if target else "")


def query_problem(index: DatasetIndex, query: str) -> str | None:
    """Why Elasticsearch refuses ``query`` (None: it runs), asked with no hits wanted: alone
    first (so a parse error's column is the user's), then exactly as planning asks it.
    IndexUnavailable when Elasticsearch cannot be asked."""
    for asked in (query or "*", series_query(query, None)):
        try:
            index.find(asked, size=0)
        except InvalidQuery as exc:
            return _reason(exc)
    return None


def _reason(exc: InvalidQuery) -> str:
    """Elasticsearch's reason on one line: no list of expected tokens, no repeated cause."""
    parts = str(exc).splitlines()[0].removeprefix("searching: ").split(": ")
    return ": ".join(p for n, p in enumerate(parts) if n == 0 or p != parts[n - 1])


class IndexCatalog:
    """``nps.processors.plan.Catalog`` over the datasets index (and the store for results)."""

    def __init__(self, index: DatasetIndex, store: DatasetStore, preload: bool = False) -> None:
        self.index = index
        self.store = store
        self.preload = preload
        self._queries: dict[tuple[str, str], list[SeriesRef]] = {}
        self._results: set[str] | None = None
        self._grouped: dict[tuple[str, Level], dict[str, list[SeriesRef]]] = {}
        self.requests = 0

    def matching(self, query: str, target: Target | None) -> list[SeriesRef]:
        if self.preload or target is None:
            everything = self._fetch(query, None)
            if target is None:
                return everything
            grouped = self._grouped.get((query, target.level))
            if grouped is None:  # once per query and level: targets are then dictionary lookups
                grouped = {}
                for s in everything:
                    key = s.key(target.level)
                    if key is not None:
                        grouped.setdefault(key, []).append(s)
                self._grouped[(query, target.level)] = grouped
            return grouped.get(target.key, [])
        return self._fetch(query, target)

    def _fetch(self, query: str, target: Target | None) -> list[SeriesRef]:
        key = (query, str(target) if target else "")
        if key not in self._queries:
            try:
                docs = self._all(series_query(query, target))
            except InvalidQuery as exc:
                raise QueryRefused(query, _reason(exc)) from exc
            self._queries[key] = [SeriesRef.from_doc(d) for d in docs]
        return self._queries[key]

    def _all(self, query: str) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = []
        after = None
        while True:
            self.requests += 1
            page = self.index.find(query, size=PAGE, after=after, source=FIELDS)
            docs.extend(page.hits)
            if page.after is None:
                return docs
            after = page.after

    def result_exists(self, dataset_id: str) -> bool:
        if not self.preload:
            return self.store.exists(dataset_id)
        if self._results is None:
            self._results = {d["id"] for d in self._all("kind:result")}
        return dataset_id in self._results
