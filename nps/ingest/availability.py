"""Whether a dependency (MinIO, RabbitMQ) is known to be down, and when to look again. Pure.

A dependency is up until an operation on it fails for want of it (StoreUnavailable,
BrokerUnavailable). From then on it is *known down*: callers are answered at once instead of
each spending seconds on connection attempts of its own, and the dependency is probed in the
background - at once, then after ``PROBE_DELAYS`` (backing off to one probe a second, so it is
found back within about a second of its return). The first probe that succeeds brings it
back up. The clock is the caller's (``now``, in seconds): tests drive it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

PROBE_DELAYS = (0.0, 0.25, 0.5, 1.0)  # before the 1st, 2nd, 3rd ... probe of one outage (the last repeats)


@dataclass(frozen=True)
class Availability:
    """One dependency's state: up (``down_since`` None), or down since when, why, and when
    to probe it next."""

    down_since: float | None = None
    error: str = ""
    probes_failed: int = 0
    next_probe: float = 0.0

    @property
    def is_down(self) -> bool:
        """True while the dependency is known down: do not try it, answer at once."""
        return self.down_since is not None

    def failed(self, now: float, error: str) -> Availability:
        """An operation failed for want of the dependency: it is down (a new outage is probed
        at once; one already known keeps its probing schedule)."""
        if self.is_down:
            return replace(self, error=error)
        return Availability(down_since=now, error=error, next_probe=now + PROBE_DELAYS[0])

    def probe_due(self, now: float) -> bool:
        """True when a probe should run now."""
        return self.is_down and now >= self.next_probe

    def probed(self, now: float, error: str | None) -> Availability:
        """A probe's result (``error`` None: it succeeded, the dependency is back)."""
        if not self.is_down or error is None:
            return UP
        failed = self.probes_failed + 1
        delay = PROBE_DELAYS[min(failed, len(PROBE_DELAYS) - 1)]
        return replace(self, error=error, probes_failed=failed, next_probe=now + delay)


UP = Availability()
