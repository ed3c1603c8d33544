"""Versioned message envelopes carried by RabbitMQ. Large bytes never travel in messages.

Every message has ``type`` (what happened or is asked), ``version`` (of that type's shape),
``id`` (unique, for idempotency and tracing) and ``created_at``. ``decode_message`` turns
bytes into exactly one of these or raises one well-defined error.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeAlias, cast
from uuid import UUID, uuid4

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError, model_validator

from schemas.common import DatasetId, Frozen, Hex64, utcnow
from schemas.errors import NPSError
from schemas.hashing import series_dataset_id
from schemas.job import JobSpec, Resources

MAX_MESSAGE_BYTES = 1024 * 1024


class MalformedMessage(NPSError):
    """Raised when message bytes are not valid JSON or not a known, valid message."""


class Envelope(Frozen):
    """Fields every message carries."""

    id: UUID = Field(default_factory=uuid4)
    created_at: datetime = Field(default_factory=utcnow)


Uid = Annotated[str, StringConstraints(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)]


class InstanceReceived(Envelope):
    """One DICOM instance is durable in the object store, at its place in its series' dataset
    (``datasets/.../<sha1(SeriesInstanceUID)>/dicom/<SOPInstanceUID>.dcm``), and waits to be
    committed into the series' manifest by the assembler."""

    type: Literal["instance.received"] = "instance.received"
    version: Literal[1] = 1
    dataset_id: DatasetId = Field(description="sha1(SeriesInstanceUID)")
    path: Annotated[str, StringConstraints(pattern=r"^dicom/[0-9.]{1,64}\.dcm$")]
    size: int = Field(ge=0)
    blake3: Hex64 = Field(description="BLAKE3 of the stored bytes")
    sop_instance_uid: Uid
    series_instance_uid: Uid
    study_instance_uid: Uid | None = None
    sop_class_uid: Uid | None = None
    transfer_syntax_uid: Uid | None = None
    header: dict[str, Any] = Field(default_factory=dict, description="indexed fields read from the header")
    calling_ae: Annotated[str, Field(max_length=16)] | None = None
    called_ae: Annotated[str, Field(max_length=16)] | None = None
    project: Annotated[str, Field(max_length=128)] | None = None
    batch_id: UUID | None = Field(default=None, description="set by file imports to close a batch early")

    @model_validator(mode="after")
    def _consistent(self) -> InstanceReceived:
        if self.dataset_id != series_dataset_id(self.series_instance_uid):
            raise ValueError("dataset_id is not sha1 of the SeriesInstanceUID")
        if self.path != f"dicom/{self.sop_instance_uid}.dcm":
            raise ValueError("path is not dicom/<SOPInstanceUID>.dcm")
        return self


class BatchClosed(Envelope):
    """A file import finished: commit its series now instead of waiting for the stable age."""

    type: Literal["batch.closed"] = "batch.closed"
    version: Literal[1] = 1
    batch_id: UUID
    dataset_ids: tuple[DatasetId, ...] = Field(max_length=100_000)


class DatasetCreated(Envelope):
    """A dataset was committed (or amended: ``revision`` > 1)."""

    type: Literal["dataset.created"] = "dataset.created"
    version: Literal[1] = 1
    dataset_id: DatasetId
    kind: Literal["series", "result", "upload"]
    revision: int = Field(default=1, ge=1)
    project: Annotated[str, Field(max_length=128)] | None = None


class DatasetIndexed(Envelope):
    """A dataset's document (at ``revision``) is searchable: what processors react to."""

    type: Literal["dataset.indexed"] = "dataset.indexed"
    version: Literal[1] = 1
    dataset_id: DatasetId
    kind: Literal["series", "result", "upload"]
    revision: int = Field(default=1, ge=1)
    project: Annotated[str, Field(max_length=128)] | None = None


class JobRequested(Envelope):
    """Run ``spec`` with ``resources``; ``job_id`` must be the spec's hash."""

    type: Literal["job.requested"] = "job.requested"
    version: Literal[1] = 1
    job_id: DatasetId
    spec: JobSpec
    resources: Resources = Resources()
    project: Annotated[str, Field(max_length=128)] | None = None
    requested_by: Annotated[str, Field(max_length=128)] | None = None

    @model_validator(mode="after")
    def _id_is_spec_hash(self) -> JobRequested:
        if self.job_id != self.spec.job_id:
            raise ValueError(f"job_id {self.job_id} is not the hash of its spec ({self.spec.job_id})")
        return self


class JobState(StrEnum):
    """Where a job is in its life."""

    QUEUED = "QUEUED"
    STAGING = "STAGING"
    RUNNING = "RUNNING"
    UPLOADING = "UPLOADING"
    COMPLETE = "COMPLETE"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class JobStatus(Envelope):
    """A job changed state; FAILED carries a reason a user understands."""

    type: Literal["job.status"] = "job.status"
    version: Literal[1] = 1
    job_id: DatasetId
    state: JobState
    reason: Annotated[str, Field(max_length=4096)] | None = None
    host: Annotated[str, Field(max_length=255)] | None = None

    @model_validator(mode="after")
    def _failed_has_reason(self) -> JobStatus:
        if self.state == JobState.FAILED and not self.reason:
            raise ValueError("a FAILED status needs a reason")
        return self


class AnalysisRequested(Envelope):
    """Plan analysis ``analysis_id`` (recorded in the object store, ``analyses/<id>/``) and submit
    its jobs. The analyst does a bounded step of that work per message and sends the next step
    itself; a message whose ``step`` is behind the analysis's recorded step is stale and dropped."""

    type: Literal["analysis.requested"] = "analysis.requested"
    version: Literal[1] = 1
    analysis_id: Annotated[str, StringConstraints(pattern=r"^a-[0-9a-f]{12}$")]
    step: int = Field(default=0, ge=0, description="0 from the API, then one more per step")


Message: TypeAlias = Annotated[
    InstanceReceived | BatchClosed | DatasetCreated | DatasetIndexed | JobRequested | JobStatus | AnalysisRequested,
    Field(discriminator="type"),
]
# cast: mypy cannot see an Annotated union as a type form (and flips between two errors about it)
_MESSAGE: TypeAdapter[Message] = TypeAdapter(cast(Any, Message))


def decode_message(raw: bytes) -> Message:
    """Parse one message; raise MalformedMessage (with a short reason) for anything else."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return _MESSAGE.validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise MalformedMessage(f"{where}: {first['msg']} ({exc.error_count()} error(s))") from exc
    except (ValueError, ArithmeticError, RecursionError, TypeError) as exc:  # validators can still trip
        raise MalformedMessage(f"message could not be validated: {type(exc).__name__}: {exc}"[:500]) from exc


def encode_message(message: Message) -> bytes:
    """The JSON bytes of ``message`` (what ``decode_message`` reads back)."""
    return message.model_dump_json(by_alias=True).encode("utf-8")
