"""Announcing data the CLI wrote to MinIO, as every other writer does: a confirmed ``dataset.created``.

Without the event the indexer never sees the dataset (not searchable), and processors and
provenance queries never find it. The data is stored before it is announced; when the broker
cannot confirm the event, the command says so and exits with ``EXIT_NOT_ANNOUNCED`` after
printing the id, and running it again announces the data that is already stored.
"""

from __future__ import annotations

import sys

from nps.broker import Publisher, topology
from nps.cli.output import err
from nps.config import Settings
from nps.errors import NPSError
from schemas.dataset import DatasetRecord
from schemas.manifest import Manifest
from schemas.messages import DatasetCreated

#: Exit status of a command whose data change is done (stored, deleted) but not yet visible
#: to the derived views (the event or the index); the message says how to finish it.
EXIT_NOT_ANNOUNCED = 3


def dataset_created(record: DatasetRecord, manifest: Manifest) -> DatasetCreated:
    """The event that announces a committed dataset (the same one the assembler and workers send)."""
    return DatasetCreated(dataset_id=record.id, kind=record.origin.kind, revision=manifest.revision,
                          project=record.project)


def announce(settings: Settings, record: DatasetRecord, manifest: Manifest) -> str | None:
    """Publish ``dataset.created`` and wait for the broker's confirm; None once confirmed,
    otherwise why it was not announced."""
    publisher = Publisher(topology(settings))
    try:
        publisher.event(dataset_created(record, manifest))
    except NPSError as exc:
        return str(exc)
    finally:
        publisher.close()
    return None


def exit_not_announced(dataset_id: str, why: str, again: str) -> None:
    """Say that a stored dataset was not announced, why, and how to finish; exit with
    ``EXIT_NOT_ANNOUNCED``. ``again`` is the command that announces it once the broker is back."""
    err.print(f"[red]not announced:[/red] {dataset_id} is stored in MinIO, but its dataset.created event was "
              f"not confirmed ({why}). Until it is, the dataset is not searchable and processors do not "
              f"see it. Once RabbitMQ is reachable, run `{again}` again: it announces data already stored "
              "(`nps reindex` makes it searchable too).", highlight=False, markup=True)
    sys.exit(EXIT_NOT_ANNOUNCED)
