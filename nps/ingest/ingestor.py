"""Taking one DICOM file into NPS: the step the receiver and ``nps import`` share.

1. Read the header once (``nps.dicom.instance.read_instance``); refuse what NPS cannot take.
2. Write the bytes once, where they will live (``nps.store.series.put_instance``).
3. Publish ``instance.received`` and wait for the broker's confirm.

Only then is the instance durable and announced, so only then may a sender hear "success".
Refused inputs go to the quarantine with their reason.

An instance already stored under its SOPInstanceUID is never replaced: the same data set again
is a duplicate; a different one (a sender that re-encodes, drops padding, a CD imported before
the PACS forwards the same study) is a *differing duplicate*: the first copy is kept, the new
one goes to the quarantine as ``duplicate_differs`` for an admin to see, and the outcome is not
a refusal (Orthanc with ``OverwriteInstances: false`` also keeps the first copy and answers
success). The kept copy is announced again, in case its own announcement was lost.

When MinIO or RabbitMQ is down the error propagates (StoreUnavailable / BrokerUnavailable): the
caller reports a failure and the sender retries; nothing half-written is ever visible
(instances count only once committed). Once one is known down, ``ingest`` raises at once
without trying it, until a background probe finds it back (``nps.ingest.outages``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from uuid import UUID

from nps.broker import PublisherPool, Topology, probe
from nps.dicom.instance import Instance, InstanceRejected, RejectReason, read_instance
from nps.errors import BrokerUnavailable, StoreUnavailable
from nps.ingest.outages import Dependency, Outages
from nps.ingest.quarantine import Quarantine
from nps.store import series as series_store
from nps.store.minio import MinioStore
from nps.store.series import InstanceConflict, StoredInstance, put_instance
from schemas.messages import BatchClosed, InstanceReceived, encode_message

Status = Literal["stored", "duplicate", "duplicate_differs", "rejected"]
DIFFERING_DUPLICATE = "duplicate_differs"  # the quarantine reason of a differing copy


@dataclass(frozen=True)
class Outcome:
    """What happened to one input."""

    status: Status
    instance: Instance | None = None
    reason: RejectReason | None = None
    detail: str | None = None
    quarantine_id: str | None = None


def project_for(calling_ae: str | None, ae_projects: dict[str, str], default: str | None) -> str | None:
    """The project of an instance: the one its sender's AE title maps to (titles compared
    without padding, case-sensitively as DICOM does), else ``default`` (None: ``default``)."""
    if calling_ae is not None and calling_ae.strip() in ae_projects:
        return ae_projects[calling_ae.strip()]
    return default


class Ingestor:
    """Thread-safe: each caller borrows its own broker connection from a small pool."""

    # One connection attempt: a refused connection is an outage to report (and probe) at once,
    # not one to wait out instance by instance.
    CONNECT_ATTEMPTS = 1

    def __init__(self, store: MinioStore, topology: Topology, project: str | None = None,
                 ae_projects: dict[str, str] | None = None) -> None:
        self.store = store
        self.topology = topology
        self.project = project
        self.ae_projects = ae_projects or {}
        self.quarantine = Quarantine(store)
        self.outages = Outages([
            Dependency("MinIO", StoreUnavailable, lambda: series_store.probe(store)),
            Dependency("RabbitMQ", BrokerUnavailable, lambda: probe(topology.url)),
        ])
        self.publishers = PublisherPool(topology, connect_attempts=self.CONNECT_ATTEMPTS)

    def ingest(self, path: Path, source: str, *, calling_ae: str | None = None, called_ae: str | None = None,
               batch_id: UUID | None = None, quarantine: bool = True,
               skip_quarantine: tuple[RejectReason, ...] = ()) -> Outcome:
        """Take the file at ``path`` (see the module docstring); ``source`` says where it came from.

        Refused files (and differing duplicates) are quarantined unless ``quarantine`` is False
        or their reason is in ``skip_quarantine`` (a file import leaves non-DICOM files where
        they are). Raises StoreUnavailable / BrokerUnavailable, at once while one is known down."""
        self.outages.check()
        with self.outages.watching():
            try:
                inst = read_instance(path)
            except InstanceRejected as exc:
                return self._reject(path, exc, source, calling_ae, None,
                                    quarantine and exc.reason not in skip_quarantine)
            try:
                stored = put_instance(self.store, inst.dataset_id, inst.path, path)
            except InstanceConflict as conflict:
                return self._differing_duplicate(path, inst, conflict, source, calling_ae, called_ae, batch_id,
                                                 quarantine)
            self._announce(inst, stored, calling_ae, called_ae, batch_id)
        return Outcome("stored" if stored.created else "duplicate", inst)

    def _differing_duplicate(self, path: Path, inst: Instance, conflict: InstanceConflict, source: str,
                             calling_ae: str | None, called_ae: str | None, batch_id: UUID | None,
                             quarantine: bool) -> Outcome:
        """The first copy stays; this one is recorded for an admin (see the module docstring)."""
        detail = (f"duplicate with different bytes; first copy kept: SOPInstanceUID {inst.sop_instance_uid} "
                  f"is already stored with another data set ({conflict.detail})")
        qid = None
        if quarantine:
            qid = self.quarantine.add(path, DIFFERING_DUPLICATE, detail, source, calling_ae, inst.sop_instance_uid,
                                      inst.series_instance_uid)
        if conflict.stored is not None:
            # Announced with the kept object's size and checksum (what the manifest will list);
            # its header fields are this copy's, which describe the same instance.
            self._announce(inst, conflict.stored, calling_ae, called_ae, batch_id)
        return Outcome("duplicate_differs", inst, None, detail, qid)

    def _announce(self, inst: Instance, stored: StoredInstance, calling_ae: str | None, called_ae: str | None,
                  batch_id: UUID | None) -> None:
        message = InstanceReceived(
            dataset_id=inst.dataset_id, path=inst.path, size=stored.size, blake3=stored.checksum,
            sop_instance_uid=inst.sop_instance_uid, series_instance_uid=inst.series_instance_uid,
            study_instance_uid=inst.study_instance_uid, sop_class_uid=inst.sop_class_uid,
            transfer_syntax_uid=inst.transfer_syntax_uid, header=inst.header, calling_ae=calling_ae,
            called_ae=called_ae, project=project_for(calling_ae, self.ae_projects, self.project), batch_id=batch_id,
        )
        self.publishers.publish_raw("", self.topology.instances, encode_message(message), message_id=str(message.id))

    def close_batch(self, batch_id: UUID, dataset_ids: set[str]) -> None:
        """Tell the assembler this import is complete: commit its series without waiting."""
        message = BatchClosed(batch_id=batch_id, dataset_ids=tuple(sorted(dataset_ids)))
        self.publishers.publish_raw("", self.topology.instances, encode_message(message), message_id=str(message.id))

    def _reject(self, path: Path, exc: InstanceRejected, source: str, calling_ae: str | None,
                inst: Instance | None, quarantine: bool) -> Outcome:
        qid = None
        if quarantine:
            qid = self.quarantine.add(
                path, exc.reason.value, exc.detail, source, calling_ae,
                inst.sop_instance_uid if inst else None, inst.series_instance_uid if inst else None,
            )
        return Outcome("rejected", inst, exc.reason, exc.detail, qid)

    def close(self) -> None:
        """Close every broker connection, stop probing."""
        self.outages.close()
        self.publishers.close()
