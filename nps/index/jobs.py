"""The jobs index (``<prefix>-jobs``): one searchable document per job, a derived view of the
job records in the store, which stay the system of record.

The indexer updates a job's document on each of its ``job.status`` events by reading the record
afresh (``index_job_status``), so events that arrive late or twice do no harm; ``nps reindex``
rebuilds it (``nps.index.sync.rebuild_jobs``). A document's version is the length of the job's
status history: a write made from an older read never replaces a newer one.
Vendor errors become IndexUnavailable (or InvalidQuery) here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import elastic_transport
import elasticsearch
from elasticsearch import Elasticsearch, helpers

from nps.errors import IndexUnavailable, InvalidQuery, JobNotFound
from nps.jobs.records import TERMINAL, JobRecords
from schemas.common import DEFAULT_PROJECT
from schemas.messages import JobRequested, JobState, JobStatus

COMMAND_CHARS = 1000  # a command is summarised: its words, cut at this length
MAX_PAGE = 1000
TIMEOUT_S = 10.0
RETRIES = 1
_STARTED = frozenset({JobState.STAGING, JobState.RUNNING})
_DATE = {"type": "date"}
_KEYWORD = {"type": "keyword", "ignore_above": 1024}


def jobs_mappings() -> dict[str, Any]:
    """Settings and explicit mappings of the jobs index."""
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": 0},
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": {"type": "keyword"},
                "state": {"type": "keyword"},
                "reason": {**_KEYWORD, "fields": {"text": {"type": "text"}}},
                "host": _KEYWORD,
                "image": {"type": "keyword"},
                "command": {**_KEYWORD, "fields": {"text": {"type": "text"}}},
                "project": {"type": "keyword"},
                "requested_by": {"type": "keyword"},
                "inputs": {"type": "keyword"},
                "submitted_at": _DATE,
                "queued_at": _DATE,
                "started_at": _DATE,
                "finished_at": _DATE,
                "updated": _DATE,
                "statuses": {"type": "integer"},
            },
        },
    }


def job_document(request: JobRequested, history: Sequence[JobStatus]) -> dict[str, Any]:
    """A job's index document from its request and status history (oldest first). The times
    are those of its latest run: a job submitted again after it failed starts afresh."""
    latest = history[-1] if history else None
    run = list(history)
    for n in range(len(history) - 1, -1, -1):
        if history[n].state == JobState.QUEUED:
            run = list(history[n:])
            break
    queued = run[0].created_at if run and run[0].state == JobState.QUEUED else None
    started = next((s.created_at for s in run if s.state in _STARTED), None)
    return {
        "id": request.job_id,
        "state": latest.state.value if latest else JobState.QUEUED.value,
        "reason": latest.reason if latest else None,
        "host": latest.host if latest else None,
        "image": request.spec.image,
        "command": " ".join(request.spec.command)[:COMMAND_CHARS],
        "project": request.project or DEFAULT_PROJECT,
        "requested_by": request.requested_by,
        "inputs": [i.dataset for i in request.spec.inputs],
        "submitted_at": request.created_at.isoformat(),
        "queued_at": queued.isoformat() if queued else None,
        "started_at": started.isoformat() if started else None,
        "finished_at": latest.created_at.isoformat() if latest and latest.state in TERMINAL else None,
        "updated": latest.created_at.isoformat() if latest else None,
        "statuses": len(history),
    }


def document_from_records(records: JobRecords, job_id: str) -> dict[str, Any]:
    """The document of a recorded job, read afresh (JobNotFound if it has no request)."""
    # A throwaway reader: JobRecords remembers each history it reads (for its own later writes),
    # which in a long-running indexer or a rebuild over every job would only grow.
    reader = JobRecords(records.blobs)
    return job_document(reader.request(job_id), reader.history(job_id))


def index_job_status(index: JobIndex, records: JobRecords, event: JobStatus) -> None:
    """The indexer's work for one ``job.status`` event: index the job as its record says now.
    A job whose request is not recorded (yet) is skipped; its next event indexes it."""
    try:
        doc = document_from_records(records, event.job_id)
    except JobNotFound:
        return
    index.put(doc)


def _safe_url(url: str) -> str:
    """The index's address without credentials, for error messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"


class JobIndex:
    """The ``<prefix>-jobs`` index."""

    def __init__(self, url: str, prefix: str = "nps") -> None:
        self.where = _safe_url(url)
        self.name = f"{prefix}-jobs"
        # Short timeouts and one retry: a page of jobs is a small search, and a caller waiting
        # on a dead index should hear 503 in seconds, not minutes.
        self.es = Elasticsearch(url, request_timeout=TIMEOUT_S, retry_on_timeout=True, max_retries=RETRIES)

    @contextlib.contextmanager
    def _es(self, what: str) -> Iterator[None]:
        try:
            yield
        except elasticsearch.BadRequestError as exc:
            raise InvalidQuery(f"{what}: {exc.message}") from exc
        except (elasticsearch.ApiError, elastic_transport.TransportError) as exc:
            raise IndexUnavailable(f"{what}: the jobs index (Elasticsearch at {self.where}) is unavailable: "
                                   f"{type(exc).__name__}") from exc

    def ensure(self) -> None:
        """Create the index with its explicit mappings, or add fields a newer NPS maps."""
        mappings = jobs_mappings()
        with self._es("creating the jobs index"):
            if not self.es.indices.exists(index=self.name):
                try:
                    self.es.indices.create(index=self.name, **mappings)
                    return
                except elasticsearch.BadRequestError as exc:
                    if "resource_already_exists" not in str(exc):
                        raise
            self.es.indices.put_mapping(index=self.name, properties=mappings["mappings"]["properties"])

    def put(self, doc: dict[str, Any]) -> bool:
        """Index a job's document unless a newer one is there (False then). Searchable within
        the index's refresh interval (a second)."""
        with self._es(f"indexing job {doc['id']}"):
            try:
                self.es.index(index=self.name, id=doc["id"], document=doc, version=doc["statuses"],
                              version_type="external_gte")
            except elasticsearch.ConflictError:
                return False
        return True

    def bulk(self, docs: Iterable[dict[str, Any]]) -> tuple[int, list[str]]:
        """Index many documents (a newer one in the index is kept); how many were written or
        already newer, and why the others failed. Searchable when this returns."""
        actions = ({"_index": self.name, "_id": d["id"], "_source": d, "version": d["statuses"],
                    "version_type": "external_gte"} for d in docs)
        with self._es("bulk indexing jobs"):
            ok, errors = helpers.bulk(self.es, actions, chunk_size=500, raise_on_error=False)
            self.es.indices.refresh(index=self.name)
        failed = [e for e in errors if _status(e, "index") != 409] if isinstance(errors, list) else []
        newer = len(errors) - len(failed) if isinstance(errors, list) else 0
        return int(ok) + newer, [str(e)[:300] for e in failed]

    def get(self, job_id: str) -> dict[str, Any] | None:
        """One job's document, or None."""
        with self._es(f"reading job {job_id}"):
            try:
                return dict(self.es.get(index=self.name, id=job_id)["_source"])
            except elasticsearch.NotFoundError:
                return None

    def page(self, projects: Sequence[str] | None, states: Sequence[str] = (), size: int = 100,
             after: str | None = None) -> list[dict[str, Any]]:
        """Jobs of ``projects`` (None: every project) in id order, optionally only in ``states``,
        starting after job id ``after``; at most ``size``. No index yet: no jobs."""
        filters: list[dict[str, Any]] = []
        if projects is not None:
            filters.append({"terms": {"project": list(projects)}})
        if states:
            filters.append({"terms": {"state": list(states)}})
        body: dict[str, Any] = {"query": {"bool": {"filter": filters}}, "sort": [{"id": "asc"}],
                                "size": max(1, min(size, MAX_PAGE)), "track_total_hits": False}
        if after:
            body["search_after"] = [after]
        with self._es("listing jobs"):
            result = self.es.search(index=self.name, ignore_unavailable=True, **body)
        return [dict(hit["_source"]) for hit in result["hits"]["hits"]]

    def ids(self) -> Iterator[str]:
        """Every job id in the index (a scroll, in no particular order)."""
        with self._es("listing the jobs index"):
            if not self.es.indices.exists(index=self.name):
                return
            for hit in helpers.scan(self.es, index=self.name, size=5000,
                                    query={"query": {"match_all": {}}, "_source": False}):
                yield str(hit["_id"])

    def delete(self, job_ids: Iterable[str]) -> int:
        """Remove documents by id (absent ones are no error); how many were removed."""
        actions = ({"_op_type": "delete", "_index": self.name, "_id": i} for i in job_ids)
        with self._es("removing job documents"):
            ok, errors = helpers.bulk(self.es, actions, chunk_size=1000, raise_on_error=False)
            self.es.indices.refresh(index=self.name, ignore_unavailable=True)
        failed = [e for e in errors if _status(e, "delete") not in (200, 404)] if isinstance(errors, list) else []
        if failed:
            raise IndexUnavailable(f"removing documents from {self.name} failed: {str(failed[0])[:300]}")
        return int(ok)

    def drop(self) -> None:
        """Delete the index (for tests)."""
        with self._es("deleting the jobs index"):
            self.es.indices.delete(index=self.name, ignore_unavailable=True)


def _status(error: Any, op: str) -> int | None:
    """The HTTP status of one failed bulk action (``{"index": {"status": 409, ...}}``)."""
    try:
        return int(error[op]["status"])
    except (TypeError, KeyError, ValueError):
        return None
