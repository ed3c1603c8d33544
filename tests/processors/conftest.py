"""Processor tests reuse the import fixtures (private queues, bucket, index; real processes)."""

from tests.ingest.conftest import ingest_settings, pipeline, processes  # noqa: F401 (fixtures)
from tests.jobs.conftest import busybox_id  # noqa: F401 (fixture)
