"""The ``nps`` command line."""

from __future__ import annotations

import sys
from typing import Annotated, Literal

import typer

from nps.cli import analyses, api, datasets, dicom, jobs, processors, remote, servers
from nps.cli.context import CliState
from nps.cli.images import image_app
from nps.cli.misc import admin_app, hash_app, infra_app
from nps.cli.output import err
from nps.config import load_settings
from nps.errors import NPSError

app = typer.Typer(
    name="nps",
    help="NPS, the Neuroimage Processing System: immutable, content-addressed neuroimaging datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option("--store", "-s", show_default=False,
                     help="Dataset store: 'local' ($NPS_HOME) or 'minio'. Default: $NPS_STORE or local."),
    ] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the NPS version and exit.")] = False,
) -> None:
    if version:
        from importlib.metadata import version as pkg_version

        print(f"nps {pkg_version('nps')}")
        raise typer.Exit()
    settings = load_settings()
    if store not in (None, "local", "minio"):
        raise typer.BadParameter("must be 'local' or 'minio'", param_hint="--store")
    kind: Literal["local", "minio"] = store or settings.store  # type: ignore[assignment]
    ctx.obj = CliState(settings=settings, store_kind=kind, explicit_store=store)  # type: ignore[arg-type]


datasets.register(app)
jobs.register(app)
servers.register(app)
dicom.register(app, servers.worker_app)
processors.register(app, servers.worker_app)
api.register(app, admin_app)
remote.register(app)
analyses.register(app)
app.add_typer(hash_app, name="hash")
app.add_typer(image_app, name="image")
app.add_typer(admin_app, name="admin")
app.add_typer(infra_app, name="infra")


def main() -> None:
    """Entry point: NPS errors become one line on stderr and exit status 1, never a traceback."""
    try:
        app()  # standalone: usage errors print themselves and exit 2
    except NPSError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        sys.exit(1)
