"""Answering at once while MinIO or RabbitMQ is known down, and noticing by itself when it is back.

``Outages`` keeps one ``Availability`` (the pure state machine of ``nps.ingest.availability``)
per dependency. ``check()`` raises the dependency's own error at once while it is known down;
``watching()`` around an operation marks a dependency down when the operation fails for want of
it; a background thread, started by an outage and gone once every dependency is back, runs the
probes the state machine asks for. Without this, every instance arriving during an outage would
spend seconds on connection attempts of its own, and senders with short timeouts would see a
timeout instead of "out of resources, retry later".
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from nps.errors import NPSError
from nps.ingest.availability import UP, Availability

log = logging.getLogger("nps.ingest")


@dataclass(frozen=True)
class Dependency:
    """A service ingest needs: the error that says it is unreachable, and a quick probe that
    returns when it answers and raises when it does not."""

    name: str
    error: type[NPSError]
    probe: Callable[[], None]


class Outages:
    """Thread-safe. ``clock`` is monotonic seconds (tests may pass their own)."""

    def __init__(self, dependencies: list[Dependency], clock: Callable[[], float] = time.monotonic) -> None:
        self.dependencies = dependencies
        self.clock = clock
        self._state = {d.name: UP for d in dependencies}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._prober: threading.Thread | None = None
        self._closed = False

    def state(self, name: str) -> Availability:
        """The current state of dependency ``name``."""
        with self._lock:
            return self._state[name]

    @property
    def probing(self) -> bool:
        """True while the background prober runs (some dependency is down)."""
        with self._lock:
            return self._prober is not None

    def check(self) -> None:
        """Raise the error of the first dependency known down, at once (nothing is tried)."""
        with self._lock:
            now = self.clock()
            down = [(d, self._state[d.name]) for d in self.dependencies if self._state[d.name].is_down]
        if down:
            dependency, state = down[0]
            since = now - (state.down_since or now)
            raise dependency.error(f"{dependency.name} has been unreachable for {since:.0f} s ({state.error}); "
                                   "not tried again until a background probe reaches it")

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Around an operation: a dependency's error raised inside marks it down (and is re-raised)."""
        try:
            yield
        except NPSError as exc:
            for dependency in self.dependencies:
                if isinstance(exc, dependency.error):
                    self.failed(dependency.name, str(exc))
            raise

    def failed(self, name: str, error: str) -> None:
        """Dependency ``name`` failed an operation: known down from now on, probed in the background."""
        with self._lock:
            before = self._state[name]
            self._state[name] = before.failed(self.clock(), error)
            if not before.is_down:
                log.warning("%s is unreachable: answering at once while it is down, probing it: %s", name, error)
            if self._closed:
                return
            if self._prober is None:
                self._prober = threading.Thread(target=self._probe_loop, name="nps-outage-probe", daemon=True)
                self._prober.start()
            self._wake.notify_all()

    def close(self) -> None:
        """Stop probing."""
        with self._lock:
            self._closed = True
            prober = self._prober
            self._wake.notify_all()
        if prober is not None:
            prober.join(timeout=15)

    def _probe_loop(self) -> None:
        while True:
            due = self._wait_for_due()
            if due is None:
                return
            for dependency in due:
                self._probe(dependency)

    def _wait_for_due(self) -> list[Dependency] | None:
        """The dependencies to probe now; None when there is nothing left to watch (the thread ends)."""
        with self._lock:
            while True:
                down = {n: s for n, s in self._state.items() if s.is_down}
                if self._closed or not down:
                    self._prober = None
                    return None
                now = self.clock()
                due = [d for d in self.dependencies if self._state[d.name].probe_due(now)]
                if due:
                    return due
                self._wake.wait(max(0.01, min(s.next_probe for s in down.values()) - now))

    def _probe(self, dependency: Dependency) -> None:
        try:
            dependency.probe()
            error = None
        except Exception as exc:  # any failure of a probe means "not back yet"
            error = str(exc) or type(exc).__name__
        with self._lock:
            before = self._state[dependency.name]
            self._state[dependency.name] = before.probed(self.clock(), error)
            if before.is_down and error is None:
                log.info("%s is reachable again after %.1f s", dependency.name,
                 self.clock() - (before.down_since or 0))
