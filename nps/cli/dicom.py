"""DICOM import commands: receiver, import, find, quarantine, and the assembler worker."""

from __future__ import annotations

import base64
import csv
import json
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nps.cli.context import state_from
from nps.cli.output import emit_json, err, out
from nps.cli.remote import client_for
from nps.cli.remote_data import find_pages
from nps.errors import InvalidQuery

quarantine_app = typer.Typer(help="Inputs NPS refused, kept with their reason: list, inspect, retry, remove.",
                             no_args_is_help=True)

SERIES_COLUMNS = ("id", "patient_id", "study_datetime", "series_number", "series_description", "modality",
                  "classification", "number_of_instances")


class Format(StrEnum):
    """Output formats of `nps find`."""

    table = "table"
    json = "json"
    csv = "csv"


def _ingestor(ctx: typer.Context, project: str | None = None) -> Any:
    from nps.broker import topology
    from nps.ingest import Ingestor
    from nps.store.minio import MinioStore

    settings = state_from(ctx).settings
    return Ingestor(MinioStore(settings), topology(settings), project=project or settings.project)


def receiver(
    ctx: typer.Context,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default $NPS_DICOM_PORT, 11112).")] = None,
    aet: Annotated[str | None, typer.Option(help="AE title (default $NPS_DICOM_AET, NPS).")] = None,
    bind: Annotated[str | None, typer.Option(help="Address (default 127.0.0.1).")] = None,
    processes: Annotated[int, typer.Option(min=1, max=64, help="Receiving processes sharing the port.")] = 2,
) -> None:
    """Run the DICOM receiver (C-STORE and C-ECHO SCP) until SIGTERM."""
    from producers.receiver import main

    settings = state_from(ctx).settings
    changes = {k: v for k, v in (("dicom_port", port), ("dicom_aet", aet), ("dicom_bind", bind)) if v is not None}
    if changes:
        settings = settings.model_copy(update=changes)
    sys.exit(main(settings, processes))


def import_(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Folders, zip/tar archives or files.", show_default=False)],
    project: Annotated[str | None, typer.Option(help="Project the series belong to.")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Files stored in parallel.")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import DICOM files; their series become datasets once the assembler commits them."""
    from nps.ingest.archives import ArchiveLimits
    from producers.importer import run_import

    ingestor = _ingestor(ctx, project)
    limits = ArchiveLimits.from_settings(state_from(ctx).settings)
    progress = Progress(TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("{task.fields[current]}"), console=err, transient=True,
                        disable=not err.is_terminal)
    try:
        with progress:
            task = progress.add_task("import", total=None, current="")
            report = run_import(ingestor, paths, workers,
                                tick=lambda label: progress.update(task, advance=1, current=label[-50:]),
                                limits=limits)
    finally:
        ingestor.close()
    if as_json:
        emit_json(report.as_dict())
    else:
        _print_import(report)
    for error in report.errors:
        err.print(f"[red]error:[/red] {escape(error)}", highlight=False)
    if report.unreadable > len(report.errors):
        err.print(f"[red]error:[/red] {report.unreadable - len(report.errors)} more damaged or refused, not shown",
                  highlight=False)
    if not report.ok:
        err.print("[red]some files were not imported because a service was unavailable; run the same "
                  "import again (already stored files are skipped)[/red]")
    if not report.ok or report.unreadable:
        sys.exit(1)


def _print_import(report: Any) -> None:
    skipped = sum(report.skipped.values())
    err.print(f"{report.stored} instance(s) stored, {report.duplicates} already stored, "
              f"{len(report.series)} series, {skipped} skipped ({report.quarantined} quarantined), "
              f"{report.failed} failed" + (f", {report.unreadable} unreadable" if report.unreadable else ""),
              highlight=False)
    for reason, count in sorted(report.skipped.items()):
        err.print(f"  skipped as {reason}: {count}", highlight=False)
    for problem in report.problems:
        err.print(f"  {problem}", highlight=False, markup=False)
    if report.unshown:
        err.print(f"  ... and {report.unshown} more", highlight=False)
    for dataset_id, count in sorted(report.incomplete.items()):
        err.print(f"  series {dataset_id}: {count} file(s) failed, so this import did not close it; run the "
                  "import again to complete it", highlight=False)
    for dataset_id in sorted(report.series):
        print(dataset_id)


def _parse_sort(specs: list[str]) -> list[tuple[str, str]]:
    parsed = []
    for spec in specs:
        field, _, direction = spec.partition(":")
        direction = direction or "asc"
        if not field or direction not in ("asc", "desc"):
            raise InvalidQuery(f"--sort {spec!r}: expected FIELD or FIELD:asc or FIELD:desc")
        parsed.append((field, direction))
    return parsed


def _decode_cursor(text: str | None) -> list[Any] | None:
    if not text:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(text.encode() + b"==="))
    except (ValueError, TypeError) as exc:
        raise InvalidQuery("--after: not a cursor printed by `nps find`") from exc
    if not isinstance(value, list):
        raise InvalidQuery("--after: not a cursor printed by `nps find`")
    return value


def _encode_cursor(after: list[Any] | None) -> str | None:
    return base64.urlsafe_b64encode(json.dumps(after).encode()).decode().rstrip("=") if after else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(_cell(v) for v in value)
    return str(value)


def find(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="Lucene query, e.g. 'modality:MR AND series_description:*T1*'.")] = "*",
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = Format.table,
    fields: Annotated[str | None, typer.Option(help="Comma-separated columns (table/csv).")] = None,
    sort: Annotated[list[str] | None, typer.Option(help="FIELD[:asc|desc], repeatable.")] = None,
    size: Annotated[int, typer.Option(min=1, max=1000, help="Results per page.")] = 50,
    after: Annotated[str | None, typer.Option(help="Cursor of the next page (printed after a full page).")] = None,
    all_pages: Annotated[bool, typer.Option("--all", help="Every page, one after another.")] = False,
    date_from: Annotated[str | None, typer.Option("--from", help="Earliest date, e.g. 2024-01-01.")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Latest date, e.g. 2024-12-31.")] = None,
    date_field: Annotated[str, typer.Option(help="Field --from/--to apply to.")] = "study_datetime",
    kind: Annotated[str | None, typer.Option(help="series, result or upload.")] = None,
) -> None:
    """Find datasets: imported series by their DICOM fields, results by their metadata."""
    from nps.index import DatasetIndex

    order = _parse_sort(sort or ["created_at:desc"])
    cursor = _decode_cursor(after)
    columns = [c.strip() for c in fields.split(",") if c.strip()] if fields else list(SERIES_COLUMNS)
    hits: list[dict[str, Any]] = []
    if (api := client_for(ctx)) is not None:
        hits, total, cursor = find_pages(api, query, order, size, cursor, all_pages, date_field, date_from,
                                         date_to, kind)
    else:
        settings = state_from(ctx).settings
        index = DatasetIndex(settings.es_url, settings.queue_prefix)
        while True:
            page = index.find(query, sort=order, size=size, after=cursor, date_field=date_field,
                              date_from=date_from, date_to=date_to, kind=kind)
            hits.extend(page.hits)
            cursor = page.after
            if not all_pages or cursor is None:
                break
        total = page.total
    next_cursor = _encode_cursor(cursor)
    if fmt == Format.json:
        emit_json({"total": total, "hits": hits, "next": next_cursor})
        return
    if fmt == Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for hit in hits:
            writer.writerow([_cell(hit.get(c)) for c in columns])
    else:
        table = Table(*columns, box=None, header_style="bold")
        for hit in hits:
            table.add_row(*(_cell(hit.get(c)) for c in columns))
        out.print(table)
    err.print(f"{len(hits)} of {total} dataset(s)" + (f"; next page: --after {next_cursor}"
                                                           if next_cursor else ""))


@quarantine_app.command("ls")
def quarantine_ls(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False,
                  limit: Annotated[int, typer.Option(min=1, max=100000)] = 1000) -> None:
    """List quarantined inputs, oldest first, with why each was refused."""
    from nps.ingest import Quarantine
    from nps.store.minio import MinioStore

    items = list(Quarantine(MinioStore(state_from(ctx).settings)).ls(limit))
    if as_json:
        emit_json([i.__dict__ for i in items])
        return
    table = Table("id", "reason", "source", "detail", box=None, header_style="bold")
    for i in items:
        table.add_row(i.id, i.reason, i.source[:50], i.detail[:80])
    out.print(table)
    err.print(f"{len(items)} quarantined input(s)")


@quarantine_app.command("show")
def quarantine_show(ctx: typer.Context, item_id: Annotated[str, typer.Argument(show_default=False)]) -> None:
    """Everything known about one quarantined input."""
    from nps.ingest import Quarantine
    from nps.store.minio import MinioStore

    emit_json(Quarantine(MinioStore(state_from(ctx).settings)).get(item_id).__dict__)


@quarantine_app.command("retry")
def quarantine_retry(ctx: typer.Context,
                     item_ids: Annotated[list[str], typer.Argument(show_default=False)]) -> None:
    """Import quarantined inputs again (after fixing the cause); those taken leave the quarantine."""
    ingestor = _ingestor(ctx)
    failed = 0
    try:
        for item_id in item_ids:
            item = ingestor.quarantine.get(item_id)
            with tempfile.TemporaryDirectory(prefix="nps-retry-") as tmp:
                path = Path(tmp) / "instance"
                ingestor.quarantine.download(item_id, path)
                outcome = ingestor.ingest(path, f"quarantine retry of {item_id} ({item.source})",
                                          calling_ae=item.calling_ae, quarantine=False)
            if outcome.status in ("rejected", "duplicate_differs"):  # a differing copy never replaces the first
                failed += 1
                err.print(f"{item_id}: still refused: {outcome.reason.value if outcome.reason else outcome.status}: "
                          f"{outcome.detail}")
                continue
            ingestor.quarantine.remove(item_id)
            err.print(f"{item_id}: {outcome.status}, series {outcome.instance.dataset_id if outcome.instance else '?'}")
    finally:
        ingestor.close()
    if failed:
        sys.exit(1)


@quarantine_app.command("rm")
def quarantine_rm(ctx: typer.Context, item_ids: Annotated[list[str], typer.Argument(show_default=False)]) -> None:
    """Remove quarantined inputs for good."""
    from nps.ingest import Quarantine
    from nps.store.minio import MinioStore

    quarantine = Quarantine(MinioStore(state_from(ctx).settings))
    for item_id in item_ids:
        quarantine.remove(item_id)
        err.print(f"removed {item_id}")


def register(app: typer.Typer, worker_app: typer.Typer) -> None:
    """Add the DICOM commands to the CLI."""
    app.command()(receiver)
    app.command("import")(import_)
    app.command()(find)
    app.add_typer(quarantine_app, name="quarantine")

    @worker_app.command("assemble")
    def worker_assemble(ctx: typer.Context) -> None:
        """Assemble received instances into series datasets until SIGTERM."""
        from consumers.assembler import main

        sys.exit(main(state_from(ctx).settings))

