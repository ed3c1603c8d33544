"""The outage state machine (pure, on a hand-driven clock) and the prober around it (with
probes that are plain functions: what is tested is the timing and the transitions; the real
outages, with MinIO and RabbitMQ behind a cut proxy, are in test_faults.py)."""

from __future__ import annotations

import threading
import time

import pytest

from nps.errors import BrokerUnavailable, StoreUnavailable
from nps.ingest.availability import PROBE_DELAYS, UP
from nps.ingest.outages import Dependency, Outages


def test_a_dependency_is_up_until_an_operation_fails_for_want_of_it() -> None:
    assert not UP.is_down and not UP.probe_due(1000.0)
    down = UP.failed(10.0, "connection refused")
    assert down.is_down and down.down_since == 10.0 and down.error == "connection refused"


def test_a_new_outage_is_probed_at_once_then_less_and_less_often_down_to_once_a_second() -> None:
    state = UP.failed(10.0, "refused")
    assert state.probe_due(10.0)
    now, delays = 10.0, []
    for _ in range(6):
        state = state.probed(now, "still refused")
        delays.append(state.next_probe - now)
        assert not state.probe_due(now) and state.probe_due(state.next_probe)
        now = state.next_probe
    assert delays == [*PROBE_DELAYS[1:], *[PROBE_DELAYS[-1]] * (6 - len(PROBE_DELAYS) + 1)]
    assert max(delays) == 1.0 and state.down_since == 10.0 and state.probes_failed == 6


def test_a_probe_that_succeeds_brings_it_back() -> None:
    state = UP.failed(10.0, "refused").probed(10.0, "refused")
    assert state.probed(10.5, None) == UP


def test_another_failure_while_down_keeps_the_probing_schedule() -> None:
    state = UP.failed(10.0, "refused").probed(10.0, "refused").probed(10.25, "refused")
    again = state.failed(10.3, "reset by peer")
    assert again.next_probe == state.next_probe and again.down_since == 10.0 and again.error == "reset by peer"


def test_a_late_probe_result_after_recovery_changes_nothing() -> None:
    assert UP.probed(5.0, "refused") == UP


class Service:
    """A stand-in dependency whose probe succeeds when ``up`` is set; counts its probes."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.probes = 0

    def probe(self) -> None:
        self.probes += 1
        if not self.up.is_set():
            raise ConnectionRefusedError("connection refused")


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_while_a_dependency_is_known_down_check_answers_at_once_and_it_comes_back_by_itself() -> None:
    minio, broker = Service(), Service()
    minio.up.set()
    outages = Outages([Dependency("MinIO", StoreUnavailable, minio.probe),
                       Dependency("RabbitMQ", BrokerUnavailable, broker.probe)])
    try:
        outages.check()  # nothing known down
        with pytest.raises(BrokerUnavailable), outages.watching():
            raise BrokerUnavailable("publishing to RabbitMQ failed: refused")
        started = time.monotonic()
        for _ in range(100):
            with pytest.raises(BrokerUnavailable, match="RabbitMQ has been unreachable"):
                outages.check()
        assert time.monotonic() - started < 0.5  # answered at once, nothing tried
        wait_until(lambda: broker.probes >= 2)  # probed in the background
        assert outages.state("RabbitMQ").is_down and not outages.state("MinIO").is_down
        broker.up.set()
        back = time.monotonic()
        wait_until(lambda: not outages.state("RabbitMQ").is_down)
        assert time.monotonic() - back < 2.5  # within about a probe interval of its return
        outages.check()
        probes = broker.probes
        wait_until(lambda: not outages.probing)  # nothing left to watch: the prober ends
        assert broker.probes == probes and minio.probes == 0
    finally:
        outages.close()


def test_errors_that_are_not_outages_leave_the_dependencies_up() -> None:
    outages = Outages([Dependency("MinIO", StoreUnavailable, Service().probe)])
    try:
        with pytest.raises(ValueError), outages.watching():
            raise ValueError("a bug, not an outage")
        outages.check()
        assert not outages.state("MinIO").is_down
    finally:
        outages.close()
