"""Commands that exist only through the REST API: groups, analyses, export, provenance, metadata."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nps.cli.output import emit_json, err, out
from nps.cli.remote import require_client
from nps.errors import InvalidQuery
from nps.hashing import check_dataset_id
from nps.jobs.plan import build_resources, parse_assignment, parse_parameter

group_app = typer.Typer(help="Frozen groups of datasets (through the API).", no_args_is_help=True)
analysis_app = typer.Typer(help="Map/reduce analyses over groups or queries (through the API).",
                           no_args_is_help=True)
meta_app = typer.Typer(help="User metadata layers of a dataset (through the API).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
ProjectOpt = Annotated[str | None, typer.Option(help="Project it belongs to (default: its members' project).")]
IdArg = Annotated[str, typer.Argument(show_default=False)]


def _read_ids(source: Path) -> list[str]:
    text = sys.stdin.read() if str(source) == "-" else source.read_text()
    ids = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [check_dataset_id(i) for i in ids if i]


@group_app.command("create")
def group_create(
    name: Annotated[str, typer.Argument(show_default=False)],
    query: Annotated[str | None, typer.Option("--query", "-q", help="The datasets this query finds now.")] = None,
    ids_file: Annotated[Path | None, typer.Option("--ids-file", help="One dataset id a line ('-': stdin).")] = None,
    project: ProjectOpt = None, as_json: JsonOpt = False,
) -> None:
    """Freeze a group (from a query, or a list of ids) and print its id."""
    if (query is None) == (ids_file is None):
        raise typer.BadParameter("give --query or --ids-file (one of them)")
    with require_client() as api:  # without --project the group takes its members' project
        group = api.create_group(name, query, _read_ids(ids_file) if ids_file else None, project)
    if as_json:
        emit_json(group)
        return
    err.print(f"group {group['name']!r}: {group['size']} dataset(s) in project {group['project']}", highlight=False)
    print(group["id"])


@group_app.command("ls")
def group_ls(as_json: JsonOpt = False) -> None:
    """Groups of your projects, newest first."""
    with require_client() as api:
        groups = api.groups()
    if as_json:
        emit_json(groups)
        return
    table = Table("id", "name", "project", "size", "by", "created", box=None, header_style="bold")
    for g in groups:
        table.add_row(g["id"], g["name"], g["project"], str(g["size"]), g["created_by"], g["created_at"][:19])
    out.print(table)


@group_app.command("show")
def group_show(group_id: IdArg,
               query: Annotated[str | None, typer.Option("--query", "-q", help="Filter the members further.")] = None,
               as_json: JsonOpt = False) -> None:
    """A group's members (every page), one id a line; --query narrows them (e.g. is_diffusion:true)."""
    with require_client() as api:
        first = api.group(group_id, query, size=1)
        members = list(api.iter_group(group_id, query))
    if as_json:
        emit_json({"group": first["group"], "total": len(members), "members": members})
        return
    for m in members:
        print(m["id"])
    g = first["group"]
    err.print(f"{len(members)} of {g['size']} member(s) of {g['id']} ({g['name']!r})", highlight=False)


def _analysis(kind: Literal["map", "reduce"], group: str | None, query: str | None, image: str,
              command: list[str], mount: str | None, env: list[str] | None, params: list[str] | None,
              cpu: float, memory: str, walltime: str, project: str | None, name: str | None, as_json: bool) -> None:
    if group is None and query is None:
        raise typer.BadParameter("give --group, --query or both")
    resources = build_resources(cpu, memory, walltime, 0, False, 0)
    with require_client() as api:
        made = api.create_analysis(kind, name or f"{kind}: {' '.join(command)}"[:200], image, command, group,
                                   query, mount, dict(parse_assignment(e, "-e") for e in env or []),
                                   dict(parse_assignment(p, "-p") for p in params or []),
                                   resources.model_dump(mode="json"), project)
    if as_json:
        emit_json(made)
        return
    a = made["analysis"]
    err.print(f"{a['kind']} recorded, to be planned by an analyst; "
              f"follow with `nps analysis status {a['id']} --wait`", highlight=False)
    print(a["id"])


GroupOpt = Annotated[str | None, typer.Option("--group", "-g", help="Group id (g-...).")]
QueryOpt = Annotated[str | None, typer.Option("--query", "-q", help="Members a query finds (narrows a group).")]
ImageOpt = Annotated[str, typer.Option("--image", help="Image tag or ID.", show_default=False)]
CmdArg = Annotated[list[str], typer.Argument(help="Command and arguments (after --).", show_default=False)]
MountOpt = Annotated[str | None, typer.Option(help="Where members appear: /input (map), /inputs/{id} (reduce).")]
EnvOpt = Annotated[list[str] | None, typer.Option("-e", "--env", help="KEY=VALUE, repeatable.")]
ParamOpt = Annotated[list[str] | None, typer.Option("-p", "--param", help="KEY=VALUE, repeatable.")]
NameOpt = Annotated[str | None, typer.Option(help="A name for the analysis.")]
CTX = {"allow_interspersed_args": False}


@analysis_app.command("map", context_settings=CTX)
def analysis_map(command: CmdArg, image: ImageOpt, group: GroupOpt = None, query: QueryOpt = None,
                 mount: MountOpt = None, env: EnvOpt = None, params: ParamOpt = None, cpu: float = 1.0,
                 memory: str = "2G", walltime: str = "1h", project: ProjectOpt = None, name: NameOpt = None,
                 as_json: JsonOpt = False) -> None:
    """One job per member; prints the analysis id (`nps analysis jobs` lists the jobs once planned)."""
    _analysis("map", group, query, image, command, mount, env, params, cpu, memory, walltime, project, name,
              as_json)


@analysis_app.command("reduce", context_settings=CTX)
def analysis_reduce(command: CmdArg, image: ImageOpt, group: GroupOpt = None, query: QueryOpt = None,
                    mount: MountOpt = None, env: EnvOpt = None, params: ParamOpt = None, cpu: float = 1.0,
                    memory: str = "2G", walltime: str = "1h", project: ProjectOpt = None, name: NameOpt = None,
                    as_json: JsonOpt = False) -> None:
    """One job over all members (mounted at /inputs/<id>); prints the analysis id."""
    _analysis("reduce", group, query, image, command, mount, env, params, cpu, memory, walltime, project, name,
              as_json)


def _finished(status: dict[str, Any]) -> int:
    states = status.get("states") or {}
    return sum(int(states.get(s, 0)) for s in ("COMPLETE", "FAILED", "CANCELLED"))


@analysis_app.command("status")
def analysis_status(analysis_id: IdArg,
                    wait: Annotated[bool, typer.Option("--wait", help="Show progress until every job ended.")] = False,
                    as_json: JsonOpt = False) -> None:
    """Progress of an analysis; with --wait, a progress bar until done (exit 1 if any job failed)."""
    with require_client() as api:
        status = api.analysis(analysis_id)
        if wait and not status.get("done"):
            progress = Progress(TextColumn(analysis_id), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                console=err, transient=True, disable=as_json or not err.is_terminal)
            with progress:
                task = progress.add_task("jobs", total=status["analysis"]["jobs"] or None)
                status = api.wait_analysis(analysis_id, on_status=lambda s: progress.update(  # known once planned
                    task, total=s["analysis"]["jobs"] or None, completed=_finished(s)))
    if as_json:
        emit_json(status)
    else:
        a, states = status["analysis"], status.get("states") or {}
        summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()) if n)
        err.print(f"{a['id']} ({a['kind']} {a['name']!r}): {a['state']} {status['submitted']}/{a['jobs']} submitted; "
                  f"{a['reason'] or summary}" + ("; done" if status.get("done") else ""), highlight=False)
    failed = sum(int((status.get("states") or {}).get(s, 0)) for s in ("FAILED", "CANCELLED"))
    failed += status["analysis"]["state"] == "FAILED"  # it could not be planned
    if wait and failed:
        sys.exit(1)


@analysis_app.command("ls")
def analysis_ls(as_json: JsonOpt = False) -> None:
    """Analyses of your projects, newest first."""
    with require_client() as api:
        found = api.analyses()
    if as_json:
        emit_json(found)
        return
    table = Table("id", "kind", "name", "project", "jobs", "by", "created", box=None, header_style="bold")
    for a in found:
        table.add_row(a["id"], a["kind"], a["name"], a["project"], str(a["jobs"]), a["created_by"],
                      a["created_at"][:19])
    out.print(table)


@analysis_app.command("jobs")
def analysis_jobs(analysis_id: IdArg) -> None:
    """Every job id of an analysis, in member order (once it is planned)."""
    with require_client() as api:
        for job_id in api.analysis_jobs(analysis_id):
            print(job_id)


def export(
    query: Annotated[str | None, typer.Option("--query", "-q", help="Results this query finds.")] = None,
    analysis: Annotated[str | None, typer.Option("--analysis", "-a", help="Results of this analysis.")] = None,
    fields: Annotated[str, typer.Option(help="Result fields, e.g. metadata.brain_mean,id.")] = "id",
    input_fields: Annotated[str | None, typer.Option(
        help="Fields of each result's source series (default: patient, study, series).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or jsonl.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """A table of results, streamed to a file or stdout: one row per (result, source series), the
    series at the root of the result's provenance however many results lie between (its direct
    inputs when none is a series)."""
    if fmt not in ("csv", "jsonl"):
        raise typer.BadParameter("csv or jsonl", param_hint="--format")
    if query is None and analysis is None:
        raise typer.BadParameter("give --query, --analysis or both")
    chosen: Literal["csv", "jsonl"] = "csv" if fmt == "csv" else "jsonl"
    columns = [f.strip() for f in fields.split(",") if f.strip()]
    inputs = [f.strip() for f in input_fields.split(",") if f.strip()] if input_fields else None
    with require_client() as api:
        if output is not None:
            api.export(output, columns, query, analysis, inputs, chosen)
            err.print(f"wrote {output}")
            return
        for chunk in api.export_chunks(columns, query, analysis, inputs, chosen):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


def provenance(
    dataset_id: IdArg,
    descendants: Annotated[bool, typer.Option("--descendants", help="What was made from it (default: ancestors).")]
    = False,
    depth: Annotated[int, typer.Option(min=1, max=10, help="Levels to follow.")] = 1,
    as_json: JsonOpt = False,
) -> None:
    """What a dataset was made from, or what was made from it (through the API)."""
    with require_client() as api:
        answer = api.provenance(check_dataset_id(dataset_id), "descendants" if descendants else "ancestors", depth)
    if as_json:
        emit_json(answer)
        return
    for node in answer["datasets"]:
        print(f"{node['depth']}\t{node['id']}")
    err.print(f"{len(answer['datasets'])} {answer['direction']} of {dataset_id} (depth {depth})")


@meta_app.command("add")
def meta_add(dataset_id: IdArg,
             pairs: Annotated[list[str], typer.Argument(help="key=value (JSON scalars: 3, 0.5, true, null).",
                                                         show_default=False)],
             note: Annotated[str | None, typer.Option(help="Why (kept with the layer).")] = None,
             as_json: JsonOpt = False) -> None:
    """Add a metadata layer (searchable as user.<key>; null removes a key from the merged view)."""
    fields: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidQuery(f"{pair!r}: expected key=value")
        fields[key] = parse_parameter(value)
    with require_client() as api:
        layer = api.add_metadata(check_dataset_id(dataset_id), fields, note)
    if as_json:
        emit_json(layer)
    else:
        err.print(f"added layer to {dataset_id}: {', '.join(sorted(fields))}")


@meta_app.command("show")
def meta_show(dataset_id: IdArg, as_json: JsonOpt = False) -> None:
    """A dataset's user metadata: the merged view, then every layer (who, when, what)."""
    with require_client() as api:
        answer = api.metadata(check_dataset_id(dataset_id))
    if as_json:
        emit_json(answer)
        return
    emit_json(answer["merged"])
    for layer in answer["layers"]:
        err.print(f"layer {layer['seq']} by {layer['author']} at {str(layer['created_at'])[:19]}: "
                  f"{', '.join(sorted(layer['fields']))}" + (f" ({layer['note']})" if layer.get("note") else ""),
                  highlight=False)


def register(app: typer.Typer) -> None:
    """Add group, analysis, export, provenance and meta."""
    app.add_typer(group_app, name="group")
    app.add_typer(analysis_app, name="analysis")
    app.add_typer(meta_app, name="meta")
    app.command()(export)
    app.command()(provenance)
