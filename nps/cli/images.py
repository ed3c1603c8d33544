"""``nps image``: the servers' image catalog (which images the job workers hold; ``nps.jobs.images``)."""

from __future__ import annotations

import socket
from typing import Annotated

import typer
from rich.table import Table

from nps.cli.context import state_from
from nps.cli.output import emit_json, err, human_size, out
from nps.jobs.images import ImageCatalog

image_app = typer.Typer(help="The image catalog: the images job workers hold, by which submissions pin a tag "
                             "without a container engine.", no_args_is_help=True)


def _catalog(ctx: typer.Context) -> ImageCatalog:
    from nps.blobs import MinioBlobs
    from nps.store.minio import MinioStore

    return ImageCatalog(MinioBlobs(MinioStore(state_from(ctx).settings)))


@image_app.command("ls")
def image_ls(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every image name the catalog knows, its image ID, and the worker hosts holding it."""
    records = list(_catalog(ctx).records())
    if as_json:
        emit_json([r.model_dump(mode="json") for r in records])
        return
    table = Table("name", "image id", "size", "hosts", "seen", box=None, header_style="bold")
    for r in records:
        table.add_row(r.reference, r.id[7:19], human_size(r.size) if r.size is not None else "",
                      ", ".join(sorted(r.hosts)), r.seen_at.strftime("%Y-%m-%d %H:%M:%S"))
    out.print(table)


@image_app.command("announce")
def image_announce(
    ctx: typer.Context,
    references: Annotated[list[str] | None, typer.Argument(
        help="Images to announce (default: every named image the engine holds).", show_default=False)] = None,
) -> None:
    """Tell the catalog which images this host's container engine holds (job workers do it at
    start and every few minutes; run this where an engine is, e.g. right after building an image)."""
    from nps.engine import DockerEngine

    held = DockerEngine(state_from(ctx).settings.docker_host).images(references or [])
    for name in _catalog(ctx).announce(held, socket.gethostname()):
        print(name)
    if not held:
        err.print("the engine holds no named image")


@image_app.command("forget")
def image_forget(
    ctx: typer.Context,
    reference: Annotated[str, typer.Argument(help="Image name to remove from the catalog.", show_default=False)],
) -> None:
    """Remove a name from the catalog: submissions by that name are refused until a worker
    announces it again (the image stays on the hosts)."""
    if not _catalog(ctx).forget(reference):
        err.print(f"{reference} is not in the catalog")
        raise typer.Exit(1)
