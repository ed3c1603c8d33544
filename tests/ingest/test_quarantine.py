"""The quarantine through the object interface, on both stores (the local folder and the real MinIO)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nps.errors import NPSError
from nps.ingest.quarantine import Quarantine, QuarantineNotFound
from nps.store import DatasetStore, ObjectStore


def test_a_refused_instance_is_kept_listed_fetched_and_forgotten(store: DatasetStore, tmp_path: Path) -> None:
    assert isinstance(store, ObjectStore)
    quarantine = Quarantine(store)
    refused = tmp_path / "refused.dcm"
    refused.write_bytes(os.urandom(2 * 1024 * 1024))  # above one lean request
    first = quarantine.add(refused, "truncated", "ends early", "dicom from MRI3T", calling_ae="MRI3T")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    second = quarantine.add(empty, "not_dicom", "no DICM", "import x")
    assert [(q.id, q.reason) for q in quarantine.ls()] == sorted([(first, "truncated"), (second, "not_dicom")])
    item = quarantine.get(first)
    assert (item.reason, item.size, item.calling_ae) == ("truncated", 2 * 1024 * 1024, "MRI3T")
    quarantine.download(first, tmp_path / "back.dcm")
    assert (tmp_path / "back.dcm").read_bytes() == refused.read_bytes()
    quarantine.remove(first)
    assert [q.id for q in quarantine.ls()] == [second]
    with pytest.raises(QuarantineNotFound):
        quarantine.get(first)
    with pytest.raises(NPSError, match="not a quarantine id"):
        quarantine.get("../../etc")

