"""Fixtures for DICOM import: private queues, bucket and index; real receiver, assembler and indexer."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage, Verification  # type: ignore[attr-defined]

from nps.config import Settings
from tests.conftest import REPO, service_missing


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ingest_settings(minio_settings: Settings) -> Iterator[Settings]:
    """Settings on a private bucket, queue prefix and index; series stable after 1 s."""
    if minio_settings.amqp_url is None:
        service_missing("RabbitMQ not configured: run `make up`")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    s = minio_settings.model_copy(update={"queue_prefix": prefix, "series_stable_seconds": 1.0,
                                          "dicom_port": free_port(), "job_delivery_limit": 3})
    yield s
    from nps.broker import Topology
    from nps.index import DatasetIndex

    assert s.amqp_url is not None
    Topology(url=s.amqp_url.get_secret_value(), prefix=prefix).delete()
    DatasetIndex(s.es_url, prefix).drop()


def env_for(s: Settings) -> dict[str, str]:
    """Environment for child processes using settings ``s``."""
    return dict(os.environ, NPS_MINIO_BUCKET=s.minio_bucket, NPS_QUEUE_PREFIX=s.queue_prefix,
                NPS_SERIES_STABLE_SECONDS=str(s.series_stable_seconds), NPS_DICOM_PORT=str(s.dicom_port),
                NPS_LEASE_SECONDS=str(s.lease_seconds), NPS_JOB_DELIVERY_LIMIT=str(s.job_delivery_limit),
                NPS_SERIES_PREFETCH=str(s.series_prefetch))


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start `nps ...` server processes; each still running at the end is stopped by its pid."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        log = (tmp_path / f"{args[0]}-{args[1] if len(args) > 1 else ''}-{len(started)}.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "nps", *args], env=env, cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def pipeline(ingest_settings: Settings, processes: Callable[..., subprocess.Popen[str]]) -> Settings:
    """The assembler and the indexer running for ``ingest_settings``."""
    env = env_for(ingest_settings)
    processes("worker", "assemble", env=env)
    processes("worker", "index", env=env)
    return ingest_settings


@pytest.fixture
def receiver(pipeline: Settings, processes: Callable[..., subprocess.Popen[str]]) -> Settings:
    """A real receiver process on a free loopback port, answering C-ECHO."""
    proc = processes("receiver", "--processes", "1", env=env_for(pipeline))
    wait_for_echo(pipeline.dicom_port, proc)
    return pipeline


def wait_for_echo(port: int, proc: subprocess.Popen[str] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the receiver exited with {proc.returncode}")
        if echo(port) == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"no DICOM receiver answered C-ECHO on port {port}")


def echo(port: int, aet: str = "NPS") -> int | None:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return None
    try:
        status = assoc.send_c_echo()
        return int(status.Status) if status else None
    finally:
        assoc.release()


def send(port: int, files: list[Path], calling: str = "TESTSCU", as_is: bool = False) -> list[int | None]:
    """C-STORE each file over one association (pynetdicom as the sender); their statuses.
    ``as_is``: propose only the files' own transfer syntax (for sending their bytes unchanged)."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian] if as_is else None)
    ae.add_requested_context("1.2.840.10008.1.3.10")  # so a DICOMDIR can be sent too
    assoc = ae.associate("127.0.0.1", port, ae_title="NPS")
    assert assoc.is_established, f"association to port {port} refused"
    statuses: list[int | None] = []
    try:
        for f in files:
            status = assoc.send_c_store(f)
            statuses.append(int(status.Status) if status and "Status" in status else None)
    finally:
        assoc.release()
    return statuses


def wait_indexed(s: Settings, dataset_id: str, revision: int = 1, timeout: float = 60) -> dict[str, Any]:
    """Poll Elasticsearch until the dataset's document has (at least) ``revision``."""
    from nps.index import DatasetIndex

    index = DatasetIndex(s.es_url, s.queue_prefix)
    deadline = time.monotonic() + timeout
    doc = None
    while time.monotonic() < deadline:
        try:
            doc = index.get(dataset_id)
        except Exception:
            doc = None
        if doc is not None and doc.get("revision", 0) >= revision:
            return doc
        time.sleep(0.2)
    pytest.fail(f"{dataset_id} revision {revision} not searchable after {timeout}s (last: {doc})")
