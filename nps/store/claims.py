"""Leases held through conditional writes of one small object: the MinIO store's write claims
(``.nps/claim.json``) and named locks (``locks/<name>.json``), across processes and machines.

A holder creates the object (``if_absent``: exactly one wins) and rewrites it every third of
the lease (``if_match`` on the ETag it last wrote). An object not rewritten for a whole lease
(by the store's clock, its modification time) belongs to a dead or paused holder and may be
taken over (``if_match`` on the stale ETag, so of two successors one wins). A holder that
cannot renew finds out (``Claim.lost``) and never removes a successor's object.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from nps.errors import NPSError, PreconditionFailed
from nps.store.objects import ObjectStore


@dataclass
class Claim:
    """A lease we hold: its object, the ETag we last wrote, and whether it was taken from us."""

    key: str
    etag: str
    lost: threading.Event
    stop: threading.Event
    writer: str = ""


class Leases:
    """Take, renew and release leases of ``lease`` seconds in ``objects``."""

    def __init__(self, objects: ObjectStore, lease: float) -> None:
        self.objects = objects
        self.lease = lease

    def take(self, key: str, lost: threading.Event | None = None) -> Claim | None:
        """Hold the lease at ``key`` (renewed in the background until ``release``); None if a
        live holder has it. ``lost`` is set if it is taken over while held."""
        writer = uuid.uuid4().hex
        etag = self._write(key, writer, if_absent=True) or self._take_over_if_stale(key, writer)
        if etag is None:
            return None
        claim = Claim(key, etag, lost or threading.Event(), threading.Event(), writer)
        threading.Thread(target=self._heartbeat, args=(claim,), daemon=True).start()
        return claim

    def release(self, claim: Claim) -> None:
        """Stop renewing and remove the object, unless a successor took it over meanwhile."""
        claim.stop.set()
        with contextlib.suppress(NPSError):
            if self.holder(claim.key) == claim.writer:
                self.objects.delete_object(claim.key)

    def age(self, key: str) -> tuple[str, float] | None:
        """The lease object's ETag and seconds since it was last written, or None if there is none."""
        info = self.objects.stat_object(key)
        if info is None:
            return None
        modified = info.modified or datetime.now(UTC)
        return info.etag or "", (datetime.now(UTC) - modified).total_seconds()

    def holder(self, key: str) -> str | None:
        """The writer id recorded at ``key`` (None if absent or unreadable)."""
        found = self.objects.get_object(key)
        try:
            return str(json.loads(found.data)["writer"]) if found else None
        except (ValueError, KeyError, TypeError):
            return None

    def _write(self, key: str, writer: str, *, if_absent: bool = False, if_match: str | None = None) -> str | None:
        """Write the lease object; its ETag, or None if the condition failed."""
        body = json.dumps({"writer": writer, "host": socket.gethostname(), "pid": os.getpid(),
                           "at": datetime.now(UTC).isoformat()}).encode()
        try:
            return self.objects.put_object(key, body, if_absent=if_absent, if_match=if_match)
        except PreconditionFailed:
            return None

    def _take_over_if_stale(self, key: str, writer: str) -> str | None:
        found = self.age(key)
        if found is None or found[1] < self.lease:
            return None
        return self._write(key, writer, if_match=found[0])

    def _heartbeat(self, claim: Claim) -> None:
        while not claim.stop.wait(self.lease / 3):
            try:
                etag = self._write(claim.key, claim.writer, if_match=claim.etag)
                if etag is None:
                    # An earlier heartbeat may have been stored although it raised (so claim.etag
                    # is stale): the claim is lost only if it now names another writer.
                    current = self.age(claim.key)
                    if current is not None and self.holder(claim.key) == claim.writer:
                        etag = current[0]
            except NPSError:
                continue  # transient; a real loss shows as a failed condition next time
            if etag is None:
                claim.lost.set()
                return
            claim.etag = etag
