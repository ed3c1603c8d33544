"""API fixtures: a private queue prefix, bucket and index, three users in two projects, and
one dataset in each project."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta  # noqa: F401
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nps.api.app import create_app
from nps.api.auth import Auth, Role
from nps.blobs import MinioBlobs
from nps.config import Settings
from nps.index import DatasetIndex
from nps.index.sync import document_from_store
from nps.store import upload_dataset_id
from nps.store.minio import MinioStore
from nps.store.source import hash_sources, scan_source
from schemas.dataset import DatasetRecord, UploadOrigin
from tests.conftest import service_missing
from tests.ingest.conftest import ingest_settings, pipeline, processes  # noqa: F401 (fixtures)
from tests.jobs.conftest import busybox_id  # noqa: F401 (fixture)
from tests.store.helpers import make_tree


@pytest.fixture
def api(minio_settings: Settings, tmp_path: Path) -> Iterator[dict[str, Any]]:
    if minio_settings.amqp_url is None:
        service_missing("RabbitMQ not configured: run `make up`")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    s = minio_settings.model_copy(update={"queue_prefix": prefix})
    store = MinioStore(s)
    index = DatasetIndex(s.es_url, prefix)
    index.ensure()
    auth = Auth(MinioBlobs(store))
    auth.add_user("alice", Role.MEMBER, ("alpha",))
    auth.add_user("victor", Role.VIEWER, ("alpha",))
    auth.add_user("bob", Role.MEMBER, ("beta",))
    tokens = {n: auth.create_token(n)[0] for n in ("alice", "victor", "bob")}
    data = {}
    for project, content in (("alpha", b"alpha data\n" * 1000), ("beta", b"beta secrets\n")):
        src = make_tree(tmp_path / project, {"notes.txt": content, "sub/x.bin": bytes(range(256)) * 4})
        files = scan_source(src)
        dataset_id = upload_dataset_id((f.path, f.size, h) for f, h in zip(files, hash_sources(files, 4), strict=True))
        store.put(dataset_id, src, DatasetRecord(id=dataset_id, project=project, origin=UploadOrigin(source=project)))
        index.put(document_from_store(store, dataset_id))
        data[project] = dataset_id
    app = create_app(s)
    client = TestClient(app)
    yield {"app": app, "client": client, "tokens": tokens, "data": data, "auth": auth, "settings": s, "store": store}
    from nps.broker import Topology

    Topology(url=s.amqp_url.get_secret_value(), prefix=prefix).delete()  # type: ignore[union-attr]
    index.drop()


