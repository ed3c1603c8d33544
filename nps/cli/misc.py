"""Small command groups: hashing, admin, and the local service stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from nps.cli.datasets import remove
from nps.cli.output import emit_json, err
from nps.errors import NPSError
from nps.hashing import check_dataset_id, normalize_uid, series_dataset_id
from nps.jobs.plan import explain
from schemas.job import JobSpec

hash_app = typer.Typer(help="Compute dataset ids without storing anything.", no_args_is_help=True)
admin_app = typer.Typer(help="Administrative operations (destructive ones ask for --yes).", no_args_is_help=True)
infra_app = typer.Typer(help="The local service stack (RabbitMQ, Elasticsearch, MinIO, Podman).",
                        no_args_is_help=True)

STACK_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "stack.sh"


@hash_app.command("series")
def hash_series(
    uid: Annotated[str, typer.Argument(help="SeriesInstanceUID, e.g. 1.2.840.113619.2.55.3", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dataset id of an imported series: sha1 of its SeriesInstanceUID."""
    try:
        dataset_id = series_dataset_id(uid)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="UID") from exc
    if as_json:
        emit_json({"series_instance_uid": normalize_uid(uid), "id": dataset_id})
    else:
        print(dataset_id)


@hash_app.command("spec")
def hash_spec(
    file: Annotated[typer.FileText, typer.Argument(help="Job spec as JSON ('-' for stdin).", show_default=False)],
    canonical: Annotated[bool, typer.Option(help="Also print the canonical JSON that is hashed.")] = False,
) -> None:
    """Job (and result dataset) id of a job spec: sha1 of its canonical JSON."""
    try:
        spec = JobSpec.model_validate_json(file.read())
    except ValidationError as exc:
        raise NPSError("invalid job spec:\n" + explain(exc)) from None
    if canonical:
        err.print(json.dumps(spec.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    print(spec.job_id)


@admin_app.command("rm")
def admin_rm(
    ctx: typer.Context,
    dataset_id: Annotated[str, typer.Argument(help="Dataset id to delete.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", help="Really delete; nothing can bring it back.")] = False,
) -> None:
    """Delete a dataset for good, and its search index entry (admin only: results derived from it lose an input)."""
    check_dataset_id(dataset_id)
    if not yes:
        raise typer.BadParameter("deleting is irreversible; add --yes to confirm", param_hint="--yes")
    remove(ctx, dataset_id)


def _stack(*args: str) -> None:
    if not STACK_SCRIPT.is_file():
        raise NPSError(f"{STACK_SCRIPT} not found: infra commands need a source checkout of NPS")
    sys.exit(subprocess.call(["bash", str(STACK_SCRIPT), *args]))


@infra_app.command("up")
def infra_up() -> None:
    """Install what is missing, start what is stopped, wait until every service is healthy."""
    _stack("up")


@infra_app.command("down")
def infra_down() -> None:
    """Stop the services this stack started."""
    _stack("down")


@infra_app.command("status")
def infra_status() -> None:
    """One line per service; exit status 1 if any is down."""
    _stack("status")
