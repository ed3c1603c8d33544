"""Shared fixtures. Service tests talk to the real stack started by ``infra/stack.sh up``.

When a service is missing, its tests skip on a developer machine but FAIL when ``CI=true``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nps.config import Settings, load_settings
from nps.store import DatasetStore, LocalStore

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def _no_personal_api_config(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never pick up the API login of whoever runs them (which would send `nps` commands
    without --store to that API): no NPS_API_* variables, an empty config home."""
    monkeypatch.delenv("NPS_API_URL", raising=False)
    monkeypatch.delenv("NPS_API_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


def dcmtk(tool: str) -> str:
    """Path of a dcmtk program. Not looked up on PATH: pynetdicom installs Python apps with the
    same names (storescu, echoscu...) into the virtualenv's bin."""
    path = Path("/usr/bin") / tool
    if not path.is_file():
        service_missing(f"dcmtk's {tool} is missing: `make up` installs it")
    return str(path)


def service_missing(reason: str) -> None:
    """Fail in CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def minio_settings(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a fresh bucket on the real MinIO (one per test), removed afterwards."""
    if settings.minio_access_key is None:
        service_missing("MinIO credentials not found: run `make up`")
    bucket = f"nps-test-{uuid.uuid4().hex[:12]}"
    s = settings.model_copy(update={"minio_bucket": bucket, "lease_seconds": 2.0})
    from nps.store.minio import MinioStore

    store = MinioStore(s)
    try:
        store.ensure_bucket()
    except Exception as exc:
        service_missing(f"MinIO at {s.minio_endpoint} unusable: {exc}")
    yield s
    store.remove_bucket()


@pytest.fixture(params=["local", "minio"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DatasetStore:
    """Each contract test runs against both real implementations."""
    if request.param == "local":
        return LocalStore(tmp_path / "home")
    from nps.store.minio import MinioStore

    return MinioStore(request.getfixturevalue("minio_settings"))


def store_env(store: DatasetStore) -> dict[str, str]:
    """Environment for a child process that must open the same store."""
    env = dict(os.environ)
    if isinstance(store, LocalStore):
        env.update(NPS_STORE="local", NPS_HOME=str(store.home))
    else:
        env.update(NPS_STORE="minio", NPS_MINIO_BUCKET=store.bucket, NPS_LEASE_SECONDS=str(store.lease))  # type: ignore[attr-defined]
    return env
