"""Dataset commands: put, ls, cat, get, show, verify, datasets, gc (and the work of admin rm)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from nps.cli import remote_data
from nps.cli.announce import EXIT_NOT_ANNOUNCED, announce, exit_not_announced
from nps.cli.context import state_from, store_from
from nps.cli.output import emit_json, err, human_size, out, transfer_progress
from nps.cli.remote import client_for
from nps.errors import DatasetNotFound, IndexUnavailable, InvalidPath
from nps.hashing import check_dataset_id
from nps.layout import check_relpath
from nps.store import hash_sources, scan_source, upload_dataset_id
from schemas.dataset import DatasetRecord, UploadOrigin

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
HashArg = Annotated[str, typer.Argument(help="Dataset id (40 hex characters).", show_default=False)]


def put(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Directory to store as a dataset.", show_default=False)],
    project: Annotated[str | None, typer.Option(help="Project the dataset belongs to.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Store a directory as an immutable dataset and print its id.

    The id is the hash of the directory's file list (names, sizes, checksums), so putting the
    same content twice stores it once. In MinIO the dataset is then announced (dataset.created)
    so it is indexed and seen by processors; if RabbitMQ does not confirm that, the exit status
    is 3 and putting it again announces it.
    """
    store = store_from(ctx)
    files = scan_source(directory)
    total = sum(f.size for f in files)
    with transfer_progress("hashing", total, not as_json) as tick:
        sums = hash_sources(files, store.workers, tick)
    dataset_id = upload_dataset_id((f.path, f.size, h) for f, h in zip(files, sums, strict=True))
    record = DatasetRecord(id=dataset_id, project=project,
                           origin=UploadOrigin(source=str(directory.resolve())))
    existed = store.exists(dataset_id)
    with transfer_progress(f"storing in {store.name}", total, not as_json and not existed) as tick:
        manifest = store.put(dataset_id, directory, record, tick)
    # In the servers' store, the index and processors learn of it by the event (sent again when
    # the content was already there: the earlier announcement may have failed).
    why = announce(state_from(ctx).settings, store.record(dataset_id), manifest) if store.name == "minio" else None
    if as_json:
        emit_json({"id": dataset_id, "store": store.name, "files": len(manifest.files),
                   "bytes": manifest.total_size, "existed": existed, "announced": store.name == "minio" and not why})
    else:
        if not existed:
            err.print(f"stored {len(files)} files ({human_size(total)}) in the {store.name} store")
        print(dataset_id)
    if why:
        sys.stdout.flush()
        exit_not_announced(dataset_id, why, f"nps --store minio put {shlex.quote(str(directory))}")


def ls(ctx: typer.Context, dataset_id: HashArg, as_json: JsonOpt = False,
       all_files: Annotated[bool, typer.Option("--all", "-a", help="Include .nps/ metadata files.")] = False) -> None:
    """List the files of a dataset."""
    if (api := client_for(ctx)) is not None:
        remote_data.ls(api, dataset_id, as_json, all_files)
        return
    manifest = store_from(ctx).manifest(check_dataset_id(dataset_id))
    files = [f for f in manifest.files if all_files or not f.path.startswith(".nps/")]
    if as_json:
        emit_json({"id": dataset_id, "revision": manifest.revision,
                   "files": [f.model_dump() for f in files]})
        return
    table = Table("size", "checksum", "path", box=None, header_style="bold")
    for f in files:
        table.add_row(human_size(f.size), f.checksum[1][:12], f.path)
    out.print(table)


def _parse_range(text: str) -> tuple[int, int | None]:
    start_s, sep, end_s = text.partition("-")
    if not sep or not start_s.isdigit() or (end_s and not end_s.isdigit()):
        raise typer.BadParameter("use START-END or START- (bytes, END exclusive), e.g. 0-1024")
    return int(start_s), int(end_s) if end_s else None


def cat(
    ctx: typer.Context,
    dataset_id: HashArg,
    path: Annotated[str, typer.Argument(help="File path inside the dataset.", show_default=False)],
    byte_range: Annotated[str | None, typer.Option("--range", help="Bytes START-END (END exclusive).")] = None,
) -> None:
    """Write one file of a dataset to stdout (whole files are checksum-verified)."""
    start, end = _parse_range(byte_range) if byte_range else (0, None)
    if (api := client_for(ctx)) is not None:
        try:
            check_relpath(path)
        except InvalidPath as exc:
            raise typer.BadParameter(str(exc), param_hint="PATH") from exc
        remote_data.cat(api, dataset_id, path, start, end)
        return
    try:
        chunks = store_from(ctx).read(check_dataset_id(dataset_id), path, start, end)
    except InvalidPath as exc:
        raise typer.BadParameter(str(exc), param_hint="PATH") from exc
    for chunk in chunks:
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def get(
    ctx: typer.Context,
    dataset_id: HashArg,
    dest: Annotated[Path, typer.Argument(help="New or empty directory to write into.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Copy a whole dataset into a directory, verifying every checksum."""
    if (api := client_for(ctx)) is not None:
        remote_data.get(api, dataset_id, dest, as_json)
        return
    store = store_from(ctx)
    manifest = store.manifest(check_dataset_id(dataset_id))
    with transfer_progress(f"fetching from {store.name}", manifest.total_size, not as_json) as tick:
        store.get(dataset_id, dest, tick)
    if as_json:
        emit_json({"id": dataset_id, "dest": str(dest), "files": len(manifest.files), "bytes": manifest.total_size})
    else:
        err.print(f"{len(manifest.files)} files ({human_size(manifest.total_size)}) verified into {dest}")


def show(ctx: typer.Context, dataset_id: HashArg) -> None:
    """Print a dataset's record (.nps/dataset.json): kind, origin, inputs."""
    if (api := client_for(ctx)) is not None:
        remote_data.show(api, dataset_id)
        return
    record = store_from(ctx).record(check_dataset_id(dataset_id))
    print(record.model_dump_json(by_alias=True, indent=2))


def verify(ctx: typer.Context, dataset_id: HashArg) -> None:
    """Read every file of a dataset and check sizes and checksums against its manifest."""
    manifest = store_from(ctx).verify(check_dataset_id(dataset_id))
    err.print(f"{dataset_id}: {len(manifest.files)} files OK")


def datasets(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the ids of every dataset in the store."""
    ids = list(store_from(ctx).ids())
    if as_json:
        emit_json(ids)
    else:
        for i in ids:
            print(i)


def gc(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Remove what interrupted writes left behind (never a committed dataset or a live write)."""
    report = store_from(ctx).gc()
    if as_json:
        emit_json(report.__dict__)
    else:
        err.print(f"removed {len(report.removed_partial)} partial write(s); "
                  f"{len(report.kept_in_progress)} still in progress")


def remove(ctx: typer.Context, dataset_id: str) -> None:
    """Delete a dataset for good (``nps admin rm``); in MinIO also its search index entry.

    Run again, it removes an index entry left behind by a dataset already gone from MinIO.
    Elasticsearch down: the dataset is gone from the store, the message says so and how to
    finish (again, or ``nps reindex``), and the exit status is 3.
    """
    store = store_from(ctx)
    try:
        store.delete(check_dataset_id(dataset_id))
    except DatasetNotFound as gone:
        if store.name != "minio" or not _unindex(ctx, dataset_id, deleted=False):
            raise gone from None
        err.print(f"{dataset_id} was no longer in MinIO; removed its search index entry")
        return
    if store.name == "minio":
        _unindex(ctx, dataset_id, deleted=True)
    err.print(f"deleted {dataset_id}" + (" and its search index entry" if store.name == "minio" else ""))


def _unindex(ctx: typer.Context, dataset_id: str, deleted: bool) -> bool:
    """Remove a dataset's index entry; True if there was one. If Elasticsearch fails after
    the dataset was ``deleted``, say what is left to do and exit with EXIT_NOT_ANNOUNCED."""
    from nps.index import DatasetIndex

    settings = state_from(ctx).settings
    try:
        return DatasetIndex(settings.es_url, settings.queue_prefix).delete([dataset_id]) > 0
    except IndexUnavailable as exc:
        if not deleted:
            raise IndexUnavailable(f"{dataset_id} is not in MinIO, and whether the search index still lists it "
                                   f"could not be checked: {exc}") from exc
        err.print(f"[red]index not updated:[/red] {dataset_id} is deleted from MinIO, but its search index entry "
                  f"could not be removed ({exc}), so searches still find it. Once Elasticsearch is "
                  f"reachable, run `nps --store minio admin rm {dataset_id} --yes` again or `nps reindex`.",
                  highlight=False, markup=True)
        sys.exit(EXIT_NOT_ANNOUNCED)


def register(app: typer.Typer) -> None:
    """Attach the dataset commands to the top-level app."""
    for fn in (put, ls, cat, get, show, verify, datasets, gc):
        app.command()(fn)
