"""Logging of NPS's long-running processes (receiver, workers, API): one line per event.

Expected conditions (a service down, a reconnect attempt, an idle connection dropped, a stop
on SIGTERM) are logged by NPS once, as one clear line: a WARNING when work is delayed, INFO
otherwise. Tracebacks are for the unexpected only (``log.exception`` in NPS's own code).

Libraries that log their own, louder view of errors NPS already handles are turned down here:
pika logs every failed connection attempt, dropped connection and socket error at ERROR with a
traceback (dozens of lines for one outage), although each of them also reaches NPS as an
exception that the broker adapter reports. Only pika's CRITICAL lines remain.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LIBRARY_LEVELS = {
    "pika": logging.CRITICAL,
    "elastic_transport": logging.ERROR,  # an INFO line per request; a traceback per retry at WARNING
    "urllib3": logging.WARNING,
}


def quiet_libraries() -> None:
    """Set the log levels of ``LIBRARY_LEVELS`` (safe to call any number of times)."""
    for name, level in LIBRARY_LEVELS.items():
        logging.getLogger(name).setLevel(level)


def setup_logging(level: int = logging.INFO) -> None:
    """Configure a process's logging: ``FORMAT`` on stderr at ``level``, libraries quietened.

    Every process entry point calls this first; a second call changes nothing.
    """
    logging.basicConfig(level=level, format=FORMAT)
    quiet_libraries()
