"""A submitter that is SIGKILLed at an exact point of ``submit``, for tests/jobs/test_outbox.py.

``python -m tests.jobs.crashing_submitter POINT`` reads a JobRequested (JSON) on stdin and
submits it to the MinIO store and RabbitMQ of the environment's settings, and kills itself:

- ``before-publishing``: after the job is recorded QUEUED, when it would be published;
- ``before-queued``: after its request is saved, when the QUEUED status would be written.

The hook is the one test double: a real SIGKILL can be sent at any time, but not at an exact
line of another process. Everything else (store, records, the kill itself) is real.
"""

from __future__ import annotations

import os
import signal
import sys

from nps.config import load_settings
from nps.jobs import records_for
from nps.jobs.submit import submit
from nps.store import open_store
from schemas.messages import JobRequested


def die(*_args: object, **_kwargs: object) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DiesBeforePublishing:
    """Stands in for the publisher: the process dies where the message would be sent."""

    def submit(self, _request: JobRequested) -> None:
        die()


def main(point: str) -> None:
    store = open_store(load_settings(), "minio")
    records = records_for(store)
    if point == "before-queued":
        records.set_state = die  # type: ignore[method-assign,assignment]
    elif point != "before-publishing":
        raise SystemExit(f"unknown point {point!r}")
    submit(store, records, DiesBeforePublishing(), JobRequested.model_validate_json(sys.stdin.read()))  # type: ignore[arg-type]
    raise SystemExit("the submitter was meant to die")


if __name__ == "__main__":
    main(sys.argv[1])
