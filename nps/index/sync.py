"""Reading datasets (and job records) from the store into the index: one document (the
indexer's work), or the whole index made to agree with the store (``nps reindex``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nps.errors import CorruptDataset, DatasetNotFound, InvalidDatasetId, JobNotFound
from nps.index.documents import METADATA_LIMIT_BYTES, METADATA_PATH, dataset_document, parse_metadata
from nps.index.elastic import DatasetIndex
from nps.index.jobs import JobIndex, document_from_records
from nps.jobs.records import JobRecords
from nps.layers import Layers, merged
from nps.store import DatasetStore
from schemas.series import SeriesSummary, summary_path


def document_from_store(store: DatasetStore, dataset_id: str, layers: Layers | None = None) -> dict[str, Any]:
    """The index document of a committed dataset, with its job's metadata.json if it has one
    and the merged user metadata ``layers`` hold for it."""
    manifest = store.manifest(dataset_id)
    record = store.record(dataset_id)
    metadata = error = None
    entry = manifest.file(METADATA_PATH)
    if entry is not None:
        if entry.size > METADATA_LIMIT_BYTES:
            error = f"metadata.json larger than {METADATA_LIMIT_BYTES} bytes"
        else:
            metadata, error = parse_metadata(b"".join(store.read(dataset_id, METADATA_PATH, manifest=manifest)))
    series = None
    summary = manifest.file(summary_path(manifest.revision))
    if summary is not None:
        raw = b"".join(store.read(dataset_id, summary.path, manifest=manifest))
        try:
            series = SeriesSummary.model_validate_json(raw)
        except ValueError as exc:
            raise CorruptDataset(f"{dataset_id}: {summary.path} is unreadable: {exc}") from exc
    doc = dataset_document(record, manifest, metadata, error, series)
    user = merged(layers.list(dataset_id)) if layers is not None else {}
    if user:
        doc["user"] = user
    return doc


@dataclass(frozen=True)
class Rebuilt:
    """What ``rebuild`` did: documents written, why others were not, stale documents removed."""

    indexed: int
    failures: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def rebuild(store: DatasetStore, index: DatasetIndex, layers: Layers | None = None) -> Rebuilt:
    """Make the index agree with the store: index every dataset, then remove the documents of
    datasets the store no longer has (deleted ones must not stay searchable)."""
    listed: set[str] = set()
    unreadable: list[str] = []
    indexed, failures = index.bulk(_documents(store, layers, listed, unreadable))
    removed = sorted(i for i in stale_ids(listed, index.ids()) if not store.exists(i))
    # Checked once more against the store: a dataset committed (and indexed by a running
    # indexer) after the listing above is not stale. A document exists only for a dataset that
    # was committed, so one whose manifest is now absent was deleted.
    index.delete(removed)
    return Rebuilt(indexed, unreadable + failures, removed)


def stale_ids(stored: set[str], indexed: Iterable[str]) -> list[str]:
    """Ids in the index that are not among the ``stored`` ones."""
    return [i for i in indexed if i not in stored]


def _documents(store: DatasetStore, layers: Layers | None, listed: set[str],
               unreadable: list[str]) -> Iterator[dict[str, Any]]:
    for dataset_id in store.ids():
        listed.add(dataset_id)
        try:
            doc = document_from_store(store, dataset_id, layers)
        except DatasetNotFound:  # deleted since it was listed: removed from the index below
            listed.discard(dataset_id)
            continue
        except CorruptDataset as exc:  # one damaged dataset does not stop the rebuild; its entry stays
            unreadable.append(f"{dataset_id}: {exc}"[:300])
            continue
        yield doc


def rebuild_jobs(records: JobRecords, index: JobIndex, threads: int = 8) -> Rebuilt:
    """Make the jobs index agree with the job records: index every job (a newer document a
    running indexer wrote meanwhile is kept), then remove documents of jobs with no record."""
    listed: set[str] = set()
    unreadable: list[str] = []
    indexed, failures = index.bulk(_job_documents(records, listed, unreadable, threads))
    removed = sorted(i for i in stale_ids(listed, index.ids()) if not _recorded(records, i))
    index.delete(removed)
    return Rebuilt(indexed, unreadable + failures, removed)


def _job_documents(records: JobRecords, listed: set[str], unreadable: list[str],
                   threads: int) -> Iterator[dict[str, Any]]:
    def read(job_id: str) -> dict[str, Any] | None:
        try:
            return document_from_records(records, job_id)
        except (JobNotFound, InvalidDatasetId):  # half-written, or not a job's folder: nothing to show
            return None
        except CorruptDataset as exc:
            unreadable.append(f"job {job_id}: {exc}"[:300])
            return None

    ids = records.ids()
    with ThreadPoolExecutor(threads) as pool:  # two small reads per job: in parallel, a chunk at a time
        while chunk := [i for _, i in zip(range(256), ids, strict=False)]:
            listed.update(chunk)
            yield from (doc for doc in pool.map(read, chunk) if doc is not None)


def _recorded(records: JobRecords, job_id: str) -> bool:
    try:
        records.request(job_id)
    except (JobNotFound, InvalidDatasetId):
        return False
    except CorruptDataset:  # damaged, but there: its document stays
        return True
    return True
