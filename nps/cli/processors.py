"""``nps processors``: validate processor files, see what is done, back-fill, rerun failures."""

from __future__ import annotations

import csv
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nps.cli.context import state_from
from nps.cli.dicom import Format
from nps.cli.output import emit_json, err, out
from nps.errors import ConfigError, InvalidJob

processors_app = typer.Typer(help="Declarative processing: what is computed for which data, automatically.",
                             no_args_is_help=True)

DirOpt = Annotated[Path | None, typer.Option("--dir", "-d", help="Processor files folder (default $NPS_PROCESSORS).")]
NameOpt = Annotated[list[str] | None, typer.Option("--processor", "-p", help="Only this processor (repeatable).")]
ProjectOpt = Annotated[str | None, typer.Option(help="Only targets of this project.")]


def _folder(ctx: typer.Context, folder: Path | None) -> Path:
    folder = folder or state_from(ctx).settings.processors
    if folder is None:
        raise ConfigError("no processor folder: pass --dir or set NPS_PROCESSORS")
    return folder


def _engine(ctx: typer.Context, folder: Path | None, publish: bool) -> Any:
    from nps.broker import Publisher, topology
    from nps.engine import DockerEngine
    from nps.index import DatasetIndex
    from nps.jobs import records_for
    from nps.processors import load_dir
    from nps.processors.engine import ProcessorEngine
    from nps.store import open_store

    settings = state_from(ctx).settings
    store = open_store(settings, "minio")
    publisher = Publisher(topology(settings)) if publish else None
    index = DatasetIndex(settings.es_url, settings.queue_prefix)
    engine = ProcessorEngine(load_dir(_folder(ctx, folder)), store, index, records_for(store),
                             DockerEngine(settings.docker_host).resolve_image, publisher)
    for error in engine.errors:
        err.print(f"[yellow]skipped:[/yellow] {escape(error)}", highlight=False)
    return engine


@processors_app.command("validate")
def validate(
    ctx: typer.Context, folder: DirOpt = None,
    offline: Annotated[bool, typer.Option(help="Check the files only, not their queries against Elasticsearch.")]
    = False,
) -> None:
    """Check every processor file and its queries; list the usable ones. Exit 1 on any problem."""
    from functools import partial

    from nps.errors import IndexUnavailable
    from nps.index import DatasetIndex
    from nps.processors import load_dir
    from nps.processors.catalog import query_problem
    from nps.processors.queries import check_queries

    loaded = load_dir(_folder(ctx, folder))
    problems = list(loaded.errors)
    if not offline:
        settings = state_from(ctx).settings
        try:
            loaded = check_queries(loaded, partial(query_problem, DatasetIndex(settings.es_url, settings.queue_prefix)))
            problems = loaded.errors
        except IndexUnavailable as exc:
            problems.append(f"queries not checked: {exc} (--offline checks the files only)")
    for processor in loaded.ordered:
        inputs = ", ".join(f"{n}<-{i.from_ or i.match}" for n, i in processor.inputs.items())
        print(f"{processor.key}\t{processor.level.value}\t{inputs}")
    for error in problems:
        err.print(f"[red]error:[/red] {escape(error)}", highlight=False)
    if problems:
        sys.exit(1)


@processors_app.command("status")
def status(
    ctx: typer.Context, folder: DirOpt = None, names: NameOpt = None, project: ProjectOpt = None,
    states: Annotated[list[str] | None, typer.Option("--state", "-s", help="Only rows in this state.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table, json or csv.")] = Format.table,
) -> None:
    """One row per (processor, target): NEED_INPUTS (which), PENDING, QUEUED, RUNNING, COMPLETE, FAILED."""
    rows = _engine(ctx, folder, publish=False).status(names, project)
    if states:
        wanted = {s.upper() for s in states}
        rows = [r for r in rows if r.state in wanted]
    if fmt == Format.json:
        emit_json([asdict(r) for r in rows])
        return
    if fmt == Format.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["processor", "target", "state", "reason", "jobs"])
        for r in rows:
            writer.writerow([r.processor, r.target, r.state, r.reason or "", ";".join(r.jobs)])
        return
    table = Table("processor", "target", "state", "reason / jobs", box=None, header_style="bold")
    for r in rows:
        table.add_row(r.processor, r.target, r.state, escape(r.reason or " ".join(j[:12] for j in r.jobs)))
    out.print(table)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    err.print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no targets")


@processors_app.command("sweep")
def sweep(ctx: typer.Context, folder: DirOpt = None, names: NameOpt = None, project: ProjectOpt = None,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Back-fill: plan every target over existing data; submit only what was never submitted."""
    engine = _engine(ctx, folder, publish=True)
    try:
        report = engine.sweep(names, project)
    finally:
        if engine.publisher is not None:
            engine.publisher.close()
    if as_json:
        emit_json(asdict(report))
        return
    for error in report.errors[len(engine.errors):]:  # found while sweeping (the others were printed)
        err.print(f"[red]error:[/red] {escape(error)}", highlight=False)
    refused = f", {report.refused} refused (inputs from several projects)" if report.refused else ""
    err.print(f"{report.targets} target(s): {report.ready} ready, {report.need_inputs} need inputs{refused}; "
              f"{len(report.submitted)} job(s) submitted, {report.already_known} already submitted or done")
    for job_id in report.submitted:
        print(job_id)


@processors_app.command("rerun")
def rerun(
    ctx: typer.Context, folder: DirOpt = None, names: NameOpt = None,
    targets: Annotated[list[str] | None, typer.Option("--target", "-t", help="e.g. series:<id> (repeatable).")] = None,
    memory: Annotated[str | None, typer.Option(help="New memory limit, e.g. 8G.")] = None,
    walltime: Annotated[str | None, typer.Option(help="New walltime, e.g. 4h.")] = None,
) -> None:
    """Submit failed targets again, typically with more memory or walltime."""
    from nps.jobs.plan import parse_duration
    from schemas.job import Resources

    memory_mb = Resources.model_validate({"memory": memory}).memory_mb if memory else None
    walltime_s = parse_duration(walltime) if walltime else None
    if memory_mb is None and walltime_s is None:
        raise InvalidJob("say what changes: --memory and/or --walltime (the same job would fail the same way)")
    engine = _engine(ctx, folder, publish=True)
    try:
        again = engine.rerun(names, set(targets) if targets else None, memory_mb, walltime_s)
    finally:
        if engine.publisher is not None:
            engine.publisher.close()
    err.print(f"{len(again)} failed job(s) submitted again")
    for job_id in again:
        print(job_id)


def register(app: typer.Typer, worker_app: typer.Typer) -> None:
    """Add ``nps processors`` and ``nps worker processors``."""
    app.add_typer(processors_app, name="processors")

    @worker_app.command("processors")
    def worker_processors(ctx: typer.Context, folder: DirOpt = None) -> None:
        """Process new data as it is indexed, by the processor files in --dir, until SIGTERM."""
        from consumers.processor_engine import main

        sys.exit(main(state_from(ctx).settings, folder))
