"""Broker outages produced for real: a loopback proxy between a real NPS process and the real
RabbitMQ is cut (open connections reset, new ones refused, as when the broker is down) and
restored. Consumers are back within the reconnect back-off's cap of the broker's return, and
the processes log each expected event as one line, with no traceback."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nps.broker import RECONNECT_BACKOFF_S, Topology, queue_state, topology
from nps.config import Settings
from tests.broker.conftest import proxied_url
from tests.dicom.factory import make_series
from tests.faults import Proxy
from tests.ingest.conftest import env_for, free_port, send, wait_for_echo

OUT_OF_RESOURCES = 0xA700
CAP_S = max(RECONNECT_BACKOFF_S)
SERVICE_BACK_WITHIN_S = 3  # what users are promised: work resumes a few seconds after a service returns
# Connecting, declaring the queues and consuming again after the broker answers: well under a
# second here. The bound below is the back-off's cap plus this, so it is about the schedule,
# not about how fast a machine is.
RESUME_SLACK_S = 1.5
# Long enough for the waits to have grown to their cap a few times over.
OUTAGE_S = sum(RECONNECT_BACKOFF_S) + 3 * CAP_S
QUEUE_OF = {"assemble": "instances", "index": "index", "jobs": "jobs"}

Start = Callable[..., subprocess.Popen[str]]


def consumer_count(topo: Topology, queue: str) -> int:
    """Consumers RabbitMQ has on ``queue`` now (0 if the queue does not exist yet), asked
    directly, not through the proxy."""
    state = queue_state(topo, queue)
    return 0 if state is None else state.consumers


def wait_consumers(topo: Topology, queue: str, wanted: Callable[[int], bool], proc: subprocess.Popen[str],
                   timeout: float = 60) -> float:
    """Poll until ``queue``'s consumer count satisfies ``wanted``; when (monotonic)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the consumer exited with {proc.returncode}"
        if wanted(consumer_count(topo, queue)):
            return time.monotonic()
        time.sleep(0.05)
    pytest.fail(f"{queue}: the consumer count never became what the test waits for")


def stay_down(seconds: float, *procs: subprocess.Popen[str]) -> None:
    """The outage: it lasts ``seconds`` (the fault's length, not a wait for something), and no
    process may die of it."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for proc in procs:
            assert proc.poll() is None, f"a process died of the outage ({proc.returncode})"
        time.sleep(0.1)


def log_of(tmp_path: Path, prefix: str) -> str:
    """What a process started by the ``processes`` fixture wrote (``receiver-``, ``worker-assemble-``)."""
    logs = sorted(tmp_path.glob(f"{prefix}*.log"))
    assert len(logs) == 1, logs
    return logs[0].read_text()


def stop(proc: subprocess.Popen[str]) -> None:
    """A normal stop: SIGTERM, and the process exits 0 of its own accord."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def lines_at(level: str, log: str) -> list[str]:
    return [line for line in log.splitlines() if f" {level} " in line]


@pytest.mark.parametrize("worker", ["assemble", "index", "jobs"])
def test_a_consumer_is_back_within_the_backoff_cap_of_its_broker_returning(
        worker: str, ingest_settings: Settings, processes: Start, broker_proxy: Proxy) -> None:
    assert CAP_S <= SERVICE_BACK_WITHIN_S, "a consumer would wait longer than promised between reconnect attempts"
    topo = topology(ingest_settings)
    queue = getattr(topo, QUEUE_OF[worker])
    proc = processes("worker", worker, env=env_for(ingest_settings) | {
        "NPS_AMQP_URL": proxied_url(ingest_settings, broker_proxy)})
    wait_consumers(topo, queue, lambda n: n >= 1, proc)
    broker_proxy.cut()
    wait_consumers(topo, queue, lambda n: n == 0, proc)
    stay_down(OUTAGE_S, proc)
    broker_proxy.restore()
    back = time.monotonic()
    resumed = wait_consumers(topo, queue, lambda n: n >= 1, proc)
    assert resumed - back <= CAP_S + RESUME_SLACK_S, (
        f"{worker} consumed again {resumed - back:.1f} s after the broker returned "
        f"(reconnect waits are capped at {CAP_S} s)")


def test_an_outage_and_a_sigterm_log_one_line_per_event_and_no_traceback(
        ingest_settings: Settings, processes: Start, broker_proxy: Proxy, tmp_path: Path) -> None:
    s = ingest_settings
    env = env_for(s) | {"NPS_AMQP_URL": proxied_url(s, broker_proxy)}
    topo = topology(s)
    receiver = processes("receiver", "--processes", "1", env=env)
    assembler = processes("worker", "assemble", env=env)
    wait_for_echo(s.dicom_port, receiver)
    wait_consumers(topo, topo.instances, lambda n: n >= 1, assembler)
    _, _ = make_series(tmp_path / "s", 4)
    files = sorted((tmp_path / "s").iterdir())
    assert send(s.dicom_port, files[:2]) == [0, 0]
    broker_proxy.cut()
    wait_consumers(topo, topo.instances, lambda n: n == 0, assembler)
    assert send(s.dicom_port, files[2:]) == [OUT_OF_RESOURCES] * 2  # two events: one line each
    stay_down(CAP_S, receiver, assembler)
    broker_proxy.restore()
    wait_consumers(topo, topo.instances, lambda n: n >= 1, assembler)
    assert send(s.dicom_port, files[2:]) == [0, 0]
    names = {"receiver-": receiver, "worker-assemble-": assembler}
    before_stop = {name: len(log_of(tmp_path, name).splitlines()) for name in names}
    for proc in names.values():
        stop(proc)

    received = log_of(tmp_path, "receiver-")
    assert "Traceback" not in received and not lines_at("ERROR", received), received
    # One line when the broker is found down, one per instance refused meanwhile (the return
    # is good news, at INFO).
    warned = lines_at("WARNING", received)
    assert len(warned) == 3 and "unreachable" in warned[0], received
    assembled = log_of(tmp_path, "worker-assemble-")
    assert "Traceback" not in assembled and not lines_at("ERROR", assembled), assembled
    # One line per failed attempt (to reconnect, or to commit a series and announce it), at
    # most one per shortest wait while the broker was away.
    attempts = lines_at("WARNING", assembled)
    assert 1 <= len(attempts) <= 2 * (time_down(CAP_S) / min(RECONNECT_BACKOFF_S)), assembled
    assert all("reconnecting in" in line or "retrying in" in line for line in attempts), assembled
    for name in names:  # a SIGTERM is no warning
        after = log_of(tmp_path, name).splitlines()[before_stop[name]:]
        assert not [line for line in after if " WARNING " in line or " ERROR " in line], after


def time_down(outage_s: float) -> float:
    """How long the assembler was cut off at most: the outage, plus the time to see it back."""
    return outage_s + CAP_S + RESUME_SLACK_S


def test_an_indexer_without_elasticsearch_logs_one_line_per_attempt_and_no_traceback(
        ingest_settings: Settings, processes: Start, tmp_path: Path) -> None:
    nothing_there = f"http://127.0.0.1:{free_port()}"  # a closed port: connection refused
    indexer = processes("worker", "index", env=env_for(ingest_settings) | {"NPS_ES_URL": nothing_there})
    deadline = time.monotonic() + 60
    while len(lines_at("WARNING", log_of(tmp_path, "worker-index-"))) < len(RECONNECT_BACKOFF_S) + 1:
        assert indexer.poll() is None and time.monotonic() < deadline, log_of(tmp_path, "worker-index-")
        time.sleep(0.1)
    stop(indexer)
    log = log_of(tmp_path, "worker-index-")
    assert "Traceback" not in log and not lines_at("ERROR", log), log
    assert all(nothing_there in line and "retrying in" in line for line in lines_at("WARNING", log)), log
