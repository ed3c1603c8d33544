"""A real API server (uvicorn on a free loopback port, in a thread) over the API test fixtures:
users alice/victor/bob in projects alpha/beta, one dataset in each; and workers on its queues."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.api.conftest import api  # noqa: F401 (fixture)
from tests.conftest import REPO
from tests.jobs.conftest import busybox_id  # noqa: F401 (fixture)

BUSYBOX = "localhost/nps/busybox:1"


@pytest.fixture
def served(api: dict[str, Any]) -> Iterator[dict[str, Any]]:  # noqa: F811
    """``api`` served over HTTP: adds ``url``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    server = uvicorn.Server(uvicorn.Config(api["app"], log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.05)
    assert server.started, "the API server did not start"
    yield api | {"url": f"http://127.0.0.1:{sock.getsockname()[1]}"}
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture
def workers(served: dict[str, Any], busybox_id: str, tmp_path: Path) -> Iterator[None]:  # noqa: F811
    """A job worker, an indexer and an analyst on the served API's bucket and queues; stopped by pid."""
    s = served["settings"]
    env = dict(os.environ, NPS_MINIO_BUCKET=s.minio_bucket, NPS_QUEUE_PREFIX=s.queue_prefix,
               NPS_HOME=str(tmp_path / "worker-home"))
    procs = [subprocess.Popen([sys.executable, "-m", "nps", "worker", *args], env=env, cwd=REPO,
                              stdout=(tmp_path / f"{args[0]}.log").open("w"), stderr=subprocess.STDOUT)
             for args in (["jobs", "-c", "2"], ["index"], ["analyses"])]
    yield
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
