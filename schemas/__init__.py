"""NPS wire and storage formats (pydantic v2), exported as JSON Schema in ``schemas/json/``.

Everything another program may read or write lives here: the dataset record
(``.nps/dataset.json``), the manifest (``.nps/manifest.json``), the job spec and the
versioned message envelopes carried by RabbitMQ.
"""

from schemas.dataset import DatasetRecord, ResultOrigin, SeriesOrigin, UploadOrigin
from schemas.job import JobInput, JobSpec, Resources
from schemas.manifest import Manifest, ManifestFile
from schemas.messages import (
    BatchClosed,
    DatasetCreated,
    InstanceReceived,
    JobRequested,
    JobState,
    JobStatus,
    Message,
    decode_message,
)
from schemas.series import SeriesSummary

__all__ = [
    "BatchClosed",
    "DatasetCreated",
    "DatasetRecord",
    "InstanceReceived",
    "JobInput",
    "JobRequested",
    "JobSpec",
    "JobState",
    "JobStatus",
    "Manifest",
    "ManifestFile",
    "Message",
    "Resources",
    "ResultOrigin",
    "SeriesOrigin",
    "SeriesSummary",
    "UploadOrigin",
    "decode_message",
]
