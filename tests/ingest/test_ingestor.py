"""The ingest step that the receiver and ``nps import`` share, against the real MinIO and
RabbitMQ: what its outcomes promise the importer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nps.broker import topology
from nps.config import Settings
from nps.ingest import Ingestor, Quarantine
from nps.store.minio import MinioStore
from tests.dicom.factory import make_instance


@pytest.fixture
def ingestor(ingest_settings: Settings) -> Iterator[Ingestor]:
    made = Ingestor(MinioStore(ingest_settings), topology(ingest_settings))
    yield made
    made.close()


def test_a_differing_duplicate_is_not_a_refusal_and_keeps_the_first_copy(ingestor: Ingestor, tmp_path: Path) -> None:
    series, sop = make_instance(tmp_path / "cd.dcm")  # imported from a CD first
    make_instance(tmp_path / "pacs.dcm", series, sop, SeriesDescription="re-encoded by the PACS")
    first = ingestor.ingest(tmp_path / "cd.dcm", "import cd.dcm")
    assert first.status == "stored" and first.instance is not None
    stored = ingestor.store.get_object(ingestor.store.key(first.instance.dataset_id, first.instance.path))

    later = ingestor.ingest(tmp_path / "pacs.dcm", "dicom from PACS")
    assert later.status == "duplicate_differs" and later.reason is None and later.quarantine_id is not None
    assert later.detail is not None and later.detail.startswith("duplicate with different bytes; first copy kept")
    assert later.instance is not None and later.instance.dataset_id == first.instance.dataset_id
    assert ingestor.store.get_object(ingestor.store.key(first.instance.dataset_id, first.instance.path)) == stored
    (item,) = Quarantine(ingestor.store).ls()
    assert (item.id, item.reason, item.sop_instance_uid) == (later.quarantine_id, "duplicate_differs", sop)

    unrecorded = ingestor.ingest(tmp_path / "pacs.dcm", "quarantine retry", quarantine=False)
    assert unrecorded.status == "duplicate_differs" and unrecorded.quarantine_id is None
    assert ingestor.ingest(tmp_path / "cd.dcm", "import cd.dcm").status == "duplicate"
    assert len(list(Quarantine(ingestor.store).ls())) == 1
