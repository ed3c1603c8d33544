"""Job records: the request, a timestamped status history, logs and a cancel flag, per job id.

They live beside the datasets (``jobs/<id>/`` in the same store), so MinIO stays the system
of record for jobs too and ``nps status`` needs nothing but the store.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from nps.blobs import Blobs
from nps.errors import CorruptDataset, JobNotFound
from nps.hashing import check_dataset_id
from nps.jobs.outbox import Outbox
from schemas.messages import JobRequested, JobState, JobStatus

TERMINAL = frozenset({JobState.COMPLETE, JobState.FAILED, JobState.CANCELLED})
_HISTORY = TypeAdapter(list[JobStatus])
LOG_NAMES = ("stdout", "stderr")
MAX_REASON = 4000  # JobStatus allows 4096
KNOWN_HISTORIES = 1024  # histories remembered per JobRecords; a forgotten one is read again


class JobRecords:
    """Read and write job records in a ``Blobs`` space."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs
        #: submissions whose message is not confirmed yet (see ``nps.jobs.outbox``)
        self.outbox = Outbox(blobs)
        #: called with every new status (the worker publishes them as job.status events)
        self.listeners: list[Callable[[JobStatus], None]] = []
        # The history last read or written, per job: whoever runs a job is its only writer
        # (it holds the job lock), so appending needs no read-back. ``history`` reads afresh.
        # At most KNOWN_HISTORIES, oldest forgotten first: a long-lived API or indexer reads
        # the records of every job it is asked about.
        self._known: dict[str, list[JobStatus]] = {}
        self._known_lock = threading.Lock()

    def _remember(self, job_id: str, history: list[JobStatus]) -> None:
        with self._known_lock:
            self._known.pop(job_id, None)
            self._known[job_id] = history
            while len(self._known) > KNOWN_HISTORIES:
                del self._known[next(iter(self._known))]

    @staticmethod
    def _key(job_id: str, name: str) -> str:
        return f"jobs/{check_dataset_id(job_id)}/{name}"

    def save_request(self, request: JobRequested) -> None:
        """Remember what was asked (spec and resources), for status, retries and replay."""
        self.blobs.put(self._key(request.job_id, "request.json"), request.model_dump_json().encode())

    def request(self, job_id: str) -> JobRequested:
        """The saved request; JobNotFound if the job was never submitted."""
        raw = self.blobs.get(self._key(job_id, "request.json"))
        if raw is None:
            raise JobNotFound(f"no job {job_id}")
        try:
            return JobRequested.model_validate_json(raw)
        except ValidationError as exc:
            raise CorruptDataset(f"job {job_id}: request.json is invalid") from exc

    def history(self, job_id: str) -> list[JobStatus]:
        """Every status the job went through, oldest first ([] if none)."""
        raw = self.blobs.get(self._key(job_id, "status.json"))
        if raw is None:
            history: list[JobStatus] = []
        else:
            try:
                history = _HISTORY.validate_json(raw)
            except ValidationError as exc:
                raise CorruptDataset(f"job {job_id}: status.json is invalid") from exc
        self._remember(job_id, history)
        return list(history)

    def state(self, job_id: str) -> JobStatus:
        """The latest status; JobNotFound if there is none."""
        history = self.history(job_id)
        if not history:
            raise JobNotFound(f"no job {job_id}")
        return history[-1]

    def set_state(self, job_id: str, state: JobState, reason: str | None = None) -> JobStatus:
        """Append a status to the history and return it."""
        if reason and len(reason) > MAX_REASON:
            reason = reason[: MAX_REASON - 20] + " ... (truncated)"
        status = JobStatus(job_id=job_id, state=state, reason=reason, host=socket.gethostname())
        known = self._known.get(job_id)
        history = [*(known if known is not None else self.history(job_id)), status]
        self._remember(job_id, history)
        self.blobs.put(self._key(job_id, "status.json"), _HISTORY.dump_json(history))
        for listener in self.listeners:
            listener(status)
        return status

    def save_log(self, job_id: str, name: str, path: Path) -> None:
        """Keep a job's log file with its record."""
        self.blobs.put_file(self._key(job_id, f"{name}.log"), path)

    def log(self, job_id: str, name: str) -> bytes | None:
        """A saved log, or None."""
        return self.blobs.get(self._key(job_id, f"{name}.log"))

    def request_cancel(self, job_id: str) -> None:
        """Ask whoever runs (or will run) the job to stop it."""
        self.blobs.put(self._key(job_id, "cancel"), json.dumps({"by": socket.gethostname()}).encode())

    def clear_cancel(self, job_id: str) -> None:
        """Forget an earlier cancellation (the job is being submitted again)."""
        self.blobs.delete(self._key(job_id, "cancel"))

    def cancel_requested(self, job_id: str) -> bool:
        """True once ``request_cancel`` was called for the job."""
        return self.blobs.get(self._key(job_id, "cancel")) is not None

    def ids(self) -> Iterator[str]:
        """Every job id with a record."""
        yield from self.blobs.children("jobs")
