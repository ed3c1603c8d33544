"""The dataset and search commands (ls, cat, get, show, find, search) through the REST API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from nps.cli.output import emit_json, err, human_size, out, transfer_progress
from nps.hashing import check_dataset_id
from schemas.dataset import DatasetRecord

if TYPE_CHECKING:
    from nps.client import Client


def _checksum(entry: dict[str, Any]) -> str:
    return str(entry.get("blake3") or entry.get("sha256") or "")


def ls(api: Client, dataset_id: str, as_json: bool, all_files: bool) -> None:
    """List a dataset's files, as `nps ls` does."""
    entries = [f for f in api.files(check_dataset_id(dataset_id)) if all_files or not f["path"].startswith(".nps/")]
    if as_json:
        emit_json({"id": dataset_id, "revision": api.dataset(dataset_id)["revision"], "files": entries})
        return
    table = Table("size", "checksum", "path", box=None, header_style="bold")
    for f in entries:
        table.add_row(human_size(f["size"]), _checksum(f)[:12], f["path"])
    out.print(table)


def cat(api: Client, dataset_id: str, path: str, start: int, end: int | None) -> None:
    """Write one file (or a byte range of it) to stdout."""
    for chunk in api.read(check_dataset_id(dataset_id), path, start, end):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


def get(api: Client, dataset_id: str, dest: Path, as_json: bool) -> None:
    """Download every file into ``dest``, verifying each checksum."""
    info = api.dataset(check_dataset_id(dataset_id))
    with transfer_progress(f"fetching from {api.url}", info["bytes"], not as_json) as tick:
        api.download_dataset(dataset_id, dest, tick)
    if as_json:
        emit_json({"id": dataset_id, "dest": str(dest), "files": info["files"], "bytes": info["bytes"]})
    else:
        err.print(f"{info['files']} files ({human_size(info['bytes'])}) verified into {dest}")


def show(api: Client, dataset_id: str) -> None:
    """Print a dataset's record exactly as the local `nps show` does."""
    record = DatasetRecord.model_validate(api.dataset(check_dataset_id(dataset_id))["record"])
    print(record.model_dump_json(by_alias=True, indent=2))


def find_pages(api: Client, query: str, order: list[tuple[str, str]], size: int, cursor: list[Any] | None,
               all_pages: bool, date_field: str, date_from: str | None, date_to: str | None,
               kind: str | None) -> tuple[list[dict[str, Any]], int, list[Any] | None]:
    """`nps find`'s pages through the API: (hits, total, cursor of the next page)."""
    if date_from or date_to:
        query = f"({query}) AND {date_field}:[{date_from or '*'} TO {date_to or '*'}]"
    sort = [f"{field}:{direction}" for field, direction in order]
    hits: list[dict[str, Any]] = []
    while True:
        page = api.search(query, {"kind": kind} if kind else None, sort=sort, size=size,
                          after=json.dumps(cursor) if cursor else None)
        hits.extend(page["hits"])
        cursor = json.loads(page["next"]) if page.get("next") else None
        if not all_pages or cursor is None:
            return hits, int(page["total"]), cursor


def search(api: Client, query: str, limit: int) -> list[dict[str, Any]]:
    """`nps search`'s hits through the API, newest first."""
    return list(api.search(query, size=limit)["hits"])
