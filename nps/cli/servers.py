"""Commands for the server side: workers, the dead-letter queue, moving datasets between stores."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from nps.broker import Topology, browse_dlq, replay_dlq, topology
from nps.cli.announce import announce, exit_not_announced
from nps.cli.context import state_from
from nps.cli.output import emit_json, err, human_size, out, transfer_progress
from nps.cli.remote import client_for
from nps.cli.remote_data import search as search_remote
from nps.errors import DatasetNotFound
from nps.hashing import check_dataset_id
from nps.jobs import records_for
from nps.layout import MANIFEST_PATH, RECORD_PATH
from nps.store import DatasetStore, open_store
from schemas.messages import JobRequested, JobState, MalformedMessage, decode_message

worker_app = typer.Typer(help="Run worker processes (any number, on any number of machines).", no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and replay the jobs' dead-letter queue.", no_args_is_help=True)


@worker_app.command("jobs")
def worker_jobs(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, max=64, help="Jobs at once.")] = 1,
) -> None:
    """Take jobs from RabbitMQ and run them until SIGTERM (which finishes running jobs first)."""
    from consumers.job_worker import main

    sys.exit(main(state_from(ctx).settings, concurrency))


@worker_app.command("index")
def worker_index(ctx: typer.Context) -> None:
    """Index dataset events into Elasticsearch until SIGTERM."""
    from consumers.indexer import main

    sys.exit(main(state_from(ctx).settings))


@worker_app.command("analyses")
def worker_analyses(ctx: typer.Context) -> None:
    """Plan requested analyses and queue their jobs, a step at a time, until SIGTERM."""
    from consumers.analyst import main

    sys.exit(main(state_from(ctx).settings))


def reindex(ctx: typer.Context) -> None:
    """Make the search indexes agree with MinIO (the system of record): index every dataset and
    every job, and remove the entries of datasets and jobs that no longer exist."""
    from nps.blobs import MinioBlobs
    from nps.index import DatasetIndex
    from nps.index.jobs import JobIndex
    from nps.index.sync import rebuild, rebuild_jobs
    from nps.jobs.records import JobRecords
    from nps.layers import Layers
    from nps.store.minio import MinioStore

    settings = state_from(ctx).settings
    store = MinioStore(settings)
    index = DatasetIndex(settings.es_url, settings.queue_prefix)
    index.ensure()
    done = rebuild(store, index, Layers(MinioBlobs(store)))
    err.print(f"indexed {done.indexed} dataset(s) into {index.name}; "
              f"removed {len(done.removed)} entr{'y' if len(done.removed) == 1 else 'ies'} of deleted datasets")
    jobs = JobIndex(settings.es_url, settings.queue_prefix)
    jobs.ensure()
    jobs_done = rebuild_jobs(JobRecords(MinioBlobs(store)), jobs)
    err.print(f"indexed {jobs_done.indexed} job(s) into {jobs.name}; removed {len(jobs_done.removed)} "
              f"entr{'y' if len(jobs_done.removed) == 1 else 'ies'} of jobs without a record")
    for failure in done.failures + jobs_done.failures:
        err.print(f"[yellow]not indexed[/yellow]: {failure}")
    if done.failures or jobs_done.failures:
        sys.exit(1)


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Lucene-style query, e.g. 'kind:result AND metadata.mean:>40'.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many results.")] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Search the index of datasets (results' metadata.json fields are under metadata.*)."""
    from nps.index import DatasetIndex

    if (api := client_for(ctx)) is not None:
        hits = search_remote(api, query, limit)
    else:
        settings = state_from(ctx).settings
        hits = DatasetIndex(settings.es_url, settings.queue_prefix).search(query, limit)
    if as_json:
        emit_json(hits)
        return
    table = Table("id", "kind", "created", "metadata", box=None, header_style="bold")
    for h in hits:
        table.add_row(h["id"], h["kind"], h["created_at"][:19], str(h.get("metadata", ""))[:60])
    out.print(table)


class Queue(StrEnum):
    """Work queues with a dead-letter queue."""

    JOBS = "jobs"
    INDEX = "index"
    INSTANCES = "instances"
    PROCESSORS = "processors"
    ANALYSES = "analyses"


QueueOpt = Annotated[Queue, typer.Option("--queue", "-q",
                                         help="Whose dead letters: jobs, index, instances, processors or analyses.")]


def _topology(ctx: typer.Context) -> Topology:
    return topology(state_from(ctx).settings)


@dlq_app.command("ls")
def dlq_ls(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False,
           queue: QueueOpt = Queue.JOBS) -> None:
    """List dead-lettered messages with the reason each was set aside (they stay in the queue)."""
    rows = [d.summary() for d in browse_dlq(_topology(ctx), queue=queue.value)]
    if as_json:
        emit_json(rows)
        return
    table = Table("message", "job", "reason", box=None, header_style="bold")
    for r in rows:
        table.add_row(str(r["message_id"]), str(r["job_id"] or "-"), str(r["reason"]))
    out.print(table)
    err.print(f"{len(rows)} dead letter(s)")


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    message_ids: Annotated[list[str] | None, typer.Argument(help="Message ids to replay (default: all).")] = None,
    queue: QueueOpt = Queue.JOBS,
) -> None:
    """Move dead letters back to their queue (after fixing what made them fail)."""
    moved = replay_dlq(_topology(ctx), set(message_ids) if message_ids else None, queue.value)
    records = records_for(open_store(state_from(ctx).settings, "minio"))
    for body in moved:  # a job that was given up on is queued again
        with contextlib.suppress(MalformedMessage):
            message = decode_message(body)
            if isinstance(message, JobRequested) and records.history(message.job_id):
                records.set_state(message.job_id, JobState.QUEUED, "replayed from the dead-letter queue")
    err.print(f"replayed {len(moved)} message(s)")


def _copy(src: DatasetStore, dst: DatasetStore, dataset_id: str, verb: str) -> None:
    """Copy one dataset (a no-op when ``dst`` has it already); the id goes to stdout either way."""
    check_dataset_id(dataset_id)
    if dst.exists(dataset_id):
        err.print(f"{dataset_id} is already in the {dst.name} store")
        print(dataset_id)
        return
    manifest = src.manifest(dataset_id)
    record = src.record(dataset_id)  # validated: a result's id must be the hash of its job spec
    tmp = tempfile.mkdtemp(prefix=f"nps-{verb}-")
    try:
        from pathlib import Path

        work = Path(tmp) / "dataset"
        with transfer_progress(f"{verb}: reading from {src.name}", manifest.total_size) as tick:
            src.get(dataset_id, work, tick)
        (work / MANIFEST_PATH).unlink(missing_ok=True)  # the destination writes its own
        (work / RECORD_PATH).unlink()
        with transfer_progress(f"{verb}: writing to {dst.name}", manifest.total_size) as tick:
            dst.put(dataset_id, work, record, tick, revision=manifest.revision)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    err.print(f"{verb}ed {dataset_id}: {len(manifest.files)} files, {human_size(manifest.total_size)}")
    print(dataset_id)


def pull(ctx: typer.Context, dataset_id: Annotated[str, typer.Argument(show_default=False)]) -> None:
    """Copy a dataset from the servers (MinIO) into the local store."""
    settings = state_from(ctx).settings
    _copy(open_store(settings, "minio"), open_store(settings, "local"), dataset_id, "pull")


def push(ctx: typer.Context, dataset_id: Annotated[str, typer.Argument(show_default=False)]) -> None:
    """Upload a local dataset (e.g. a result run on an HPC) to the servers, with its provenance.

    The record travels with it and is re-validated: a result whose id is not the hash of its
    job spec, or a series whose id is not the hash of its UID, is refused. The dataset is then
    announced (dataset.created: indexed, seen by processors), also when MinIO had it already;
    if RabbitMQ does not confirm that, the exit status is 3 and pushing again announces it.
    """
    settings = state_from(ctx).settings
    local, servers = open_store(settings, "local"), open_store(settings, "minio")
    if not local.exists(check_dataset_id(dataset_id)):
        raise DatasetNotFound(f"dataset {dataset_id} not found in the local store ({settings.home})")
    _copy(local, servers, dataset_id, "push")
    why = announce(settings, servers.record(dataset_id), servers.manifest(dataset_id))
    if why:
        sys.stdout.flush()
        exit_not_announced(dataset_id, why, f"nps push {dataset_id}")


def register(app: typer.Typer) -> None:
    """Attach the server commands to the top-level app."""
    app.add_typer(worker_app, name="worker")
    app.add_typer(dlq_app, name="dlq")
    app.command()(pull)
    app.command()(push)
    app.command()(reindex)
    app.command()(search)
