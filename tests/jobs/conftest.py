"""Fixtures for job tests: the real container engine, and worker processes on a private queue."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nps.broker import Topology
from nps.config import Settings
from nps.jobs import JobRecords, records_for
from schemas.messages import JobStatus
from tests.conftest import REPO, service_missing

BUSYBOX = "localhost/nps/busybox:1"


@pytest.fixture(scope="session")
def busybox_id(settings: Settings) -> str:
    from nps.engine import DockerEngine
    from nps.errors import NPSError

    try:
        return DockerEngine(settings.docker_host).resolve_image(BUSYBOX)
    except NPSError as exc:
        service_missing(f"container engine or {BUSYBOX} missing (run `make up`): {exc}")
        raise


def run_nps(*args: str, env: dict[str, str], ok: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "nps", *args], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=timeout)
    if ok:
        assert result.returncode == 0, f"nps {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
    return result


@pytest.fixture
def local_env(tmp_path: Path, busybox_id: str) -> dict[str, str]:
    """Environment for `nps run` against a private local store."""
    return dict(os.environ, NPS_HOME=str(tmp_path / "home"))


@pytest.fixture
def server_env(tmp_path: Path, minio_settings: Settings, busybox_id: str) -> Iterator[dict[str, str]]:
    """Environment for `nps submit` and workers: a private bucket and private queues."""
    if minio_settings.amqp_url is None:
        service_missing("RabbitMQ not configured: run `make up`")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, NPS_HOME=str(tmp_path / "home"), NPS_MINIO_BUCKET=minio_settings.minio_bucket,
               NPS_QUEUE_PREFIX=prefix, NPS_LEASE_SECONDS="3", NPS_JOB_DELIVERY_LIMIT="3")
    yield env
    from nps.broker import Topology

    Topology(url=minio_settings.amqp_url.get_secret_value(), prefix=prefix).delete()


@pytest.fixture
def workers(server_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start worker processes; every one still running at the end is stopped by its pid."""
    started: list[subprocess.Popen[str]] = []

    def start(concurrency: int = 1, extra: dict[str, str] | None = None,
              kind: str = "jobs") -> subprocess.Popen[str]:
        log = (tmp_path / f"worker-{len(started)}.log").open("w")
        args = ["worker", "jobs", "-c", str(concurrency)] if kind == "jobs" else ["worker", kind]
        proc = subprocess.Popen([sys.executable, "-m", "nps", *args],
                                env=server_env | (extra or {}), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)


@pytest.fixture
def server_records(minio_settings: Settings) -> JobRecords:
    """The job records the servers write, read in-process."""
    from nps.store.minio import MinioStore

    return records_for(MinioStore(minio_settings))


def wait_for_state(records: JobRecords, job_id: str, states: set[str], timeout: float = 120) -> JobStatus:
    """Poll a job's records until it reaches one of ``states``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = records.history(job_id)
        if history and history[-1].state.value in states:
            return history[-1]
        time.sleep(0.2)
    pytest.fail(f"job {job_id} never reached {states}: {[h.state.value for h in records.history(job_id)]}")


def jobs_topology(env: dict[str, str]) -> Topology:
    """The queues of ``env`` (its prefix and delivery limit), on the stack's RabbitMQ."""
    from nps.broker import topology
    from nps.config import load_settings

    return topology(load_settings(queue_prefix=env["NPS_QUEUE_PREFIX"],
                                  job_delivery_limit=int(env["NPS_JOB_DELIVERY_LIMIT"])))


def jobs_waiting(env: dict[str, str]) -> int:
    """Messages ready in the jobs queue of ``env`` (those delivered and not yet acked are not counted)."""
    topo = jobs_topology(env)
    conn = topo.connect()
    try:
        channel = conn.channel()
        topo.declare(channel)
        return int(channel.queue_declare(topo.jobs, passive=True).method.message_count)
    finally:
        conn.close()


def stop_when_idle(env: dict[str, str], procs: list[subprocess.Popen[str]], timeout: float = 60) -> int:
    """Wait until no job message is ready, then stop ``procs`` with SIGTERM (each finishes and
    acks what it holds) and wait for them; returns the messages left in the queue afterwards
    (unacked ones go back to it when a worker exits): 0 means every message was handled."""
    deadline = time.monotonic() + timeout
    while jobs_waiting(env):
        if time.monotonic() > deadline:
            pytest.fail(f"{jobs_waiting(env)} job message(s) still waiting after {timeout} s")
        time.sleep(0.2)
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout=timeout) == 0
    return jobs_waiting(env)
