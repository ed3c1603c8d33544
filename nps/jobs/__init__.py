"""Jobs: a container image, a command and read-only input datasets; the output becomes a dataset.

``plan`` turns arguments into a spec (pure), ``stage`` brings inputs to local disk,
``execute`` runs one job to a terminal status, ``records`` keeps status and logs.
"""

from __future__ import annotations

from nps.blobs import LocalBlobs, MinioBlobs
from nps.config import Settings
from nps.jobs.execute import JobContext, execute
from nps.jobs.records import TERMINAL, JobRecords
from nps.jobs.stage import StageCache
from nps.store import DatasetStore, LocalStore

__all__ = ["TERMINAL", "JobContext", "JobRecords", "execute", "job_context", "records_for"]


def records_for(store: DatasetStore) -> JobRecords:
    """Job records kept in the same place as the store's datasets."""
    if isinstance(store, LocalStore):
        return JobRecords(LocalBlobs(store.home))
    from nps.store.minio import MinioStore

    assert isinstance(store, MinioStore)
    return JobRecords(MinioBlobs(store))


def job_context(settings: Settings, store: DatasetStore) -> JobContext:
    """A context to run jobs on this machine against ``store``."""
    from nps.engine.docker import DockerEngine  # here: whoever only reads job records needs no engine

    return JobContext(
        store=store,
        engine=DockerEngine(settings.docker_host),
        records=records_for(store),
        stage=StageCache(settings.stage_dir, int(settings.stage_limit_gb * 1024**3)),
        workdir=settings.work_dir,
        log_limit_bytes=settings.log_limit_mb * 1024 * 1024,
    )
