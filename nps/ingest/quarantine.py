"""The quarantine: instances NPS refused, kept in the store with why, until someone retries or removes them.

Layout: ``quarantine/<id>/instance`` (the bytes as received) and ``quarantine/<id>/reason.json``.
Ids sort by time (``20261122T041500Z-1a2b3c4d``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from nps.errors import DatasetNotFound, NPSError
from nps.store.objects import ObjectStore

PREFIX = "quarantine/"
ID_CHARS = frozenset("0123456789abcdefTZ-")


class QuarantineNotFound(DatasetNotFound):
    """Raised when no quarantined item has that id."""


@dataclass(frozen=True)
class Quarantined:
    """One refused input and why."""

    id: str
    reason: str
    detail: str
    source: str
    at: str
    size: int
    calling_ae: str | None = None
    sop_instance_uid: str | None = None
    series_instance_uid: str | None = None


class Quarantine:
    """Quarantined inputs in the store's objects (the MinIO bucket)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def add(self, src: Path, reason: str, detail: str, source: str, calling_ae: str | None = None,
            sop_instance_uid: str | None = None, series_instance_uid: str | None = None) -> str:
        """Keep ``src`` and why it was refused; return the new item's id."""
        qid = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
        item = Quarantined(qid, reason, detail[:2000], source[:1000], datetime.now(UTC).isoformat(),
                           src.stat().st_size, calling_ae, sop_instance_uid, series_instance_uid)
        self.store.put_object_file(f"{PREFIX}{qid}/instance", src)
        self.store.put_object(f"{PREFIX}{qid}/reason.json", json.dumps(asdict(item), indent=2).encode())
        return qid

    def ls(self, limit: int = 1000) -> Iterator[Quarantined]:
        """Items, oldest first."""
        for n, obj in enumerate(self.store.list_objects(PREFIX, recursive=False)):
            if n >= limit:
                return
            qid = obj.key[len(PREFIX):].rstrip("/")
            item = self._read(qid)
            if item is not None:
                yield item

    def get(self, qid: str) -> Quarantined:
        """One item; QuarantineNotFound if there is none."""
        _check_id(qid)
        item = self._read(qid)
        if item is None:
            raise QuarantineNotFound(f"no quarantined item {qid!r} (see `nps quarantine ls`)")
        return item

    def download(self, qid: str, dest: Path) -> None:
        """The item's bytes into file ``dest``."""
        self.get(qid)
        if not self.store.get_object_file(f"{PREFIX}{qid}/instance", dest):
            raise QuarantineNotFound(f"quarantined item {qid!r} has lost its instance")

    def remove(self, qid: str) -> None:
        """Forget an item (after a successful retry, or when an admin gives up on it)."""
        self.get(qid)
        self.store.delete_object(f"{PREFIX}{qid}/reason.json")  # first: the item leaves `ls` at once
        self.store.delete_object(f"{PREFIX}{qid}/instance")

    def _read(self, qid: str) -> Quarantined | None:
        found = self.store.get_object(f"{PREFIX}{qid}/reason.json")
        if found is None:
            return None
        try:
            return Quarantined(**json.loads(found.data))
        except (ValueError, TypeError):
            return Quarantined(qid, "unknown", "reason.json is unreadable", "", "", 0)


def _check_id(qid: str) -> None:
    if not qid or len(qid) > 64 or not set(qid) <= ID_CHARS:
        raise NPSError(f"{qid[:80]!r} is not a quarantine id (they look like 20261122T041500Z-1a2b3c4d)")
