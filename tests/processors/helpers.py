"""Helpers of the processor tests: synthetic series, `nps processors status`, readiness waits."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nps.broker import Topology, queue_state
from nps.config import Settings
from tests.conftest import REPO
from tests.jobs.conftest import run_nps


def synthetic(folder: Path, *args: str) -> str:
    """Write a small synthetic MR series into ``folder``; its SeriesInstanceUID."""
    return subprocess.run([sys.executable, str(REPO / "examples" / "synthetic_series.py"), str(folder), "--slices",
                           "8", "--size", "32", *args], capture_output=True, text=True, check=True).stdout.strip()


def status(env: dict[str, str], folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """`nps processors status` rows by (processor, target)."""
    rows = json.loads(run_nps("processors", "status", "--dir", str(folder), "-f", "json", env=env).stdout)
    return {(r["processor"], r["target"]): r for r in rows}


def wait_status(env: dict[str, str], folder: Path, key: tuple[str, str], states: set[str],
                timeout: float = 240) -> dict[str, Any]:
    """Poll `nps processors status` until the row ``key`` is in one of ``states``."""
    deadline = time.monotonic() + timeout
    row: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        row = status(env, folder).get(key)
        if row is not None and row["state"] in states:
            return row
        time.sleep(1)
    pytest.fail(f"{key} never reached {states}: {row}")


def topology_of(settings: Settings) -> Topology:
    """The queues of ``settings``' prefix."""
    assert settings.amqp_url is not None
    return Topology(url=settings.amqp_url.get_secret_value(), prefix=settings.queue_prefix)


def queue_counts(settings: Settings, queue: str) -> tuple[int, int] | None:
    """(messages, consumers) of ``queue`` as RabbitMQ reports them; None if it does not exist."""
    state = queue_state(topology_of(settings), queue)
    return None if state is None else (state.messages, state.consumers)


def wait_consuming(settings: Settings, queue: str, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    """Wait until a consumer is attached to ``queue`` (a worker is ready: the processor worker
    loads its files before it consumes); fail if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args} exited with {proc.returncode} before consuming {queue}")
        counts = queue_counts(settings, queue)
        if counts is not None and counts[1] >= 1:
            return
        time.sleep(0.2)
    pytest.fail(f"nothing consumes {queue} after {timeout}s")
