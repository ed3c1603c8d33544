"""Series assembly: which received instances are ready to commit, and committing them.

``Assembly`` is the assembler's memory, pure and clock-driven (tests pass ``now``): instances
wait per series until no new one arrived for the stable age (Orthanc's default is 60 s), a
file import closes its batch, or a series has been open too long. Their broker deliveries
are acknowledged only after the commit, so an assembler that dies loses nothing: RabbitMQ
redelivers and the next one rebuilds the same state.

``commit_series`` writes one revision: the first commit creates the dataset, a later one
(an instance that arrived after its series was committed) amends it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nps.broker.rabbitmq import backoff_delay
from nps.dicom.series import summarize
from nps.errors import CorruptDataset, StoreBusy
from nps.layout import RECORD_PATH
from nps.store import series as series_store
from nps.store.minio import MinioStore
from nps.store.source import HashingReader
from schemas.dataset import DatasetRecord, SeriesOrigin
from schemas.manifest import Manifest, ManifestFile
from schemas.messages import InstanceReceived
from schemas.series import SERIES_DIR, SeriesSummary, summary_path


@dataclass
class Pending:
    """Instances of one series waiting to be committed, and the deliveries to ack after."""

    dataset_id: str
    series_instance_uid: str
    study_instance_uid: str | None
    project: str | None
    first_seen: float
    last_seen: float
    instances: dict[str, InstanceReceived] = field(default_factory=dict)
    tags: list[int] = field(default_factory=list)
    closed: bool = False
    not_before: float = 0.0  # backoff after a failed commit
    failures: int = 0


class Assembly:
    """Open series, keyed by dataset id."""

    def __init__(self, stable_age: float = 60.0, max_open: float = 600.0) -> None:
        self.stable_age = stable_age
        self.max_open = max_open
        self.open: dict[str, Pending] = {}

    @property
    def held(self) -> int:
        """Deliveries held unacknowledged."""
        return sum(len(p.tags) for p in self.open.values())

    def add(self, message: InstanceReceived, tag: int, now: float) -> None:
        """Remember an instance (a duplicate SOPInstanceUID is remembered once)."""
        pending = self.open.get(message.dataset_id)
        if pending is None:
            pending = self.open[message.dataset_id] = Pending(
                message.dataset_id, message.series_instance_uid, message.study_instance_uid, message.project,
                now, now)
        pending.instances.setdefault(message.path, message)
        pending.tags.append(tag)
        pending.last_seen = now
        pending.study_instance_uid = pending.study_instance_uid or message.study_instance_uid
        pending.project = pending.project or message.project

    def close(self, dataset_ids: tuple[str, ...], tag: int) -> bool:
        """A batch is complete: its open series are due now. The batch message's delivery is
        acked with the first of them (False: none is open, ack it at once)."""
        attached = False
        for dataset_id in dataset_ids:
            pending = self.open.get(dataset_id)
            if pending is not None:
                pending.closed = True
                if not attached:
                    pending.tags.append(tag)
                    attached = True
        return attached

    def due(self, now: float, capacity: int | None = None) -> list[Pending]:
        """Series to commit now, oldest first. With ``capacity`` (the prefetch), also the oldest
        ones while the held deliveries would otherwise stop the broker from sending more."""
        ready = [p for p in self.open.values() if p.not_before <= now and (
            p.closed or now - p.last_seen >= self.stable_age or now - p.first_seen >= self.max_open)]
        if capacity is not None and self.held >= capacity * 0.9:
            rest = sorted((p for p in self.open.values() if p not in ready and p.not_before <= now),
                          key=lambda p: p.first_seen)
            ready.extend(rest[:1])
        return sorted(ready, key=lambda p: p.first_seen)

    def done(self, dataset_id: str) -> Pending:
        """Forget a committed series; returns it (its tags are now to be acked)."""
        return self.open.pop(dataset_id)

    def retry_later(self, dataset_id: str, now: float) -> float:
        """A commit failed: back off as reconnects do (``nps.broker.backoff_delay``: a retry of a
        commit while MinIO or RabbitMQ is down is cheap, and spends no delivery); returns the delay."""
        pending = self.open[dataset_id]
        delay = backoff_delay(pending.failures)
        pending.failures += 1
        pending.not_before = now + delay
        return delay


@dataclass(frozen=True)
class Committed:
    """The outcome of one commit."""

    manifest: Manifest | None
    changed: bool
    added: int
    missing: tuple[str, ...] = ()


def commit_series(store: MinioStore, pending: Pending) -> Committed:
    """Commit the pending instances as a new revision of their series (see the module docstring)."""
    dataset_id = pending.dataset_id
    with store.exclusive(f"series-{dataset_id}") as held:
        if not held:
            raise StoreBusy(f"series {dataset_id} is being committed by another assembler")
        found = series_store.current(store, dataset_id)
        old, etag = found if found else (None, None)
        new = [m for path, m in sorted(pending.instances.items()) if old is None or old.file(path) is None]
        if not new:
            return Committed(old, False, 0)
        # A message whose object is gone (removed by an admin?) must not put a hole in the manifest.
        sizes = series_store.stored_sizes(store, dataset_id)
        missing = tuple(m.path for m in new if sizes.get(m.path) != m.size)
        new = [m for m in new if sizes.get(m.path) == m.size]
        if not new:
            return Committed(old, False, 0, missing)
        revision = old.revision + 1 if old else 1
        summary = summarize(dataset_id, revision, [m.header for m in new], [m.sop_class_uid for m in new],
                            previous=_summary(store, old) if old else None)
        blobs = {summary_path(revision): summary.model_dump_json(by_alias=True, indent=2).encode()}
        files = [f for f in old.files if not f.path.startswith(SERIES_DIR + "/")] if old else []
        if old is None:
            record = DatasetRecord(id=dataset_id, project=pending.project, origin=SeriesOrigin(
                series_instance_uid=pending.series_instance_uid, study_instance_uid=pending.study_instance_uid))
            blobs[RECORD_PATH] = record.model_dump_json(by_alias=True, indent=2).encode()
        files += [ManifestFile(path=path, size=len(data), blake3=HashingReader.digest_of(data))
                  for path, data in blobs.items()]
        files += [ManifestFile(path=m.path, size=m.size, blake3=m.blake3) for m in new]
        manifest = Manifest(dataset_id=dataset_id, revision=revision, files=tuple(files))
        series_store.commit(store, manifest, etag, blobs)
        return Committed(manifest, True, len(new), missing)


def _summary(store: MinioStore, manifest: Manifest) -> SeriesSummary | None:
    path = summary_path(manifest.revision)
    if manifest.file(path) is None:
        return None
    raw = b"".join(store.read(manifest.dataset_id, path, manifest=manifest))
    try:
        return SeriesSummary.model_validate_json(raw)
    except ValueError as exc:
        raise CorruptDataset(f"{manifest.dataset_id}: {path} is unreadable: {exc}") from exc
