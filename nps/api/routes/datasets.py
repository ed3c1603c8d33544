"""Datasets: record, files (with byte ranges), archives, user metadata layers, provenance."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from nps.api.auth import require_write
from nps.api.deps import Caller, DatasetIdPath, Services, Svc, visible
from nps.api.models import DatasetOut, MetadataOut, ProvenanceOut, Related
from nps.api.streams import byte_range, tar_stream, zip_stream
from nps.errors import DatasetNotFound, IndexUnavailable, InvalidPath, InvalidQuery, NPSError
from nps.layers import Layer, Value, merged
from nps.layout import check_relpath
from schemas.manifest import ManifestFile

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])
_PLAIN_KEY = re.compile(r"[A-Za-z0-9._/-]{1,900}")  # keys nginx passes on unchanged
MAX_DEPTH = 10
RangeHeader = Annotated[str | None, Header(alias="range", pattern=r"^bytes=([0-9]{1,19}-[0-9]{0,19}|-[0-9]{1,19})$")]


class LayerIn(BaseModel):
    """Fields to add to a dataset's user metadata (``null`` removes a field from the merged view)."""

    model_config = {"extra": "forbid"}
    fields: dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")], Value] = Field(
        min_length=1, max_length=100)
    note: str | None = Field(default=None, max_length=2000)


@router.get("/{dataset_id}")
def dataset(dataset_id: DatasetIdPath, user: Caller, svc: Svc) -> DatasetOut:
    """A dataset's record (kind, origin, provenance) and manifest summary."""
    record, manifest = visible(svc, user, dataset_id)
    return DatasetOut(record=record.model_dump(mode="json", by_alias=True), revision=manifest.revision,
                      files=len(manifest.files), bytes=manifest.total_size)


@router.get("/{dataset_id}/files")
def files(dataset_id: DatasetIdPath, user: Caller, svc: Svc) -> list[ManifestFile]:
    """Every file: path, size, checksum."""
    _, manifest = visible(svc, user, dataset_id)
    return list(manifest.files)


@router.get("/{dataset_id}/files/{path:path}",
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a byte range"}})
def file(dataset_id: DatasetIdPath, path: str, user: Caller, svc: Svc, request: Request,
         range_: RangeHeader = None) -> Response:
    """One file, streamed; a single ``Range: bytes=START-END`` gives 206. Whole files are
    checksum-verified as they are sent; ``X-NPS-Checksum`` (``blake3-<hex>``) lets the client
    verify too. Behind the stack's nginx the bytes come straight from the object store."""
    try:
        check_relpath(path)
    except InvalidPath as exc:  # a path that cannot be in any dataset is not found in this one
        raise DatasetNotFound(f"{dataset_id} has no file {path[:200]!r} ({exc})") from exc
    _, manifest = visible(svc, user, dataset_id)
    entry = svc.store.entry(dataset_id, path, manifest)
    start, end, status = 0, entry.size, 200
    if range_:
        start, end = byte_range(range_, entry.size)
        status = 206
    algorithm, digest = entry.checksum
    secret = svc.settings.api_accel_secret
    if (secret is not None and request.headers.get("x-nps-accel") == secret.get_secret_value()
            and _PLAIN_KEY.fullmatch(path)):
        # nginx asked (it alone knows the secret): hand it the transfer, with a signed URL that
        # never leaves it. nginx passes the client's Range header on to the object store.
        target = f"/_nps_object/{algorithm}-{digest}{svc.store.signed_path(dataset_id, path)}"
        return Response(status_code=200, headers={"X-Accel-Redirect": target, "Accept-Ranges": "bytes"})
    headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes",
               "X-NPS-Checksum": f"{algorithm}-{digest}"}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
    chunks = svc.store.read(dataset_id, path, start, end, manifest=manifest)
    return StreamingResponse(chunks, status_code=status, headers=headers, media_type="application/octet-stream")


@router.get("/{dataset_id}/archive", responses={200: {"content": {"application/x-tar": {}, "application/zip": {}}}})
def archive(dataset_id: DatasetIdPath, user: Caller, svc: Svc,
            fmt: Annotated[str, Query(alias="format", pattern="^(tar|zip)$")] = "tar") -> StreamingResponse:
    """The whole dataset as a tar or zip stream (files verified as they are read)."""
    _, manifest = visible(svc, user, dataset_id)
    stream, media = (zip_stream, "application/zip") if fmt == "zip" else (tar_stream, "application/x-tar")
    return StreamingResponse(stream(svc.store, dataset_id, manifest), media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="{dataset_id}.{fmt}"'})


@router.get("/{dataset_id}/metadata")
def metadata(dataset_id: DatasetIdPath, user: Caller, svc: Svc) -> MetadataOut:
    """User metadata: every layer (who, when, what) and the merged view searched as ``user.*``."""
    visible(svc, user, dataset_id)
    layers = svc.layers.list(dataset_id)
    return MetadataOut(dataset=dataset_id, merged=merged(layers), layers=layers)


@router.post("/{dataset_id}/metadata", status_code=201)
def add_metadata(dataset_id: DatasetIdPath, body: LayerIn, user: Caller, svc: Svc) -> Layer:
    """Append a metadata layer (layers are never changed or removed); searchable at once as ``user.<field>``."""
    record, _ = visible(svc, user, dataset_id)
    require_write(user, record.project)
    layer = svc.layers.add(dataset_id, body.fields, user.name, body.note)
    try:
        svc.index.set_user(dataset_id, merged(svc.layers.list(dataset_id)))
    except InvalidQuery as exc:  # a type clash with earlier values: this layer was never accepted
        svc.layers.blobs.delete(f"layers/{dataset_id}/{layer.seq:06d}.json")
        raise InvalidQuery(f"the index refused these fields: {exc}") from exc
    except IndexUnavailable:  # not searchable, so not accepted: a retry must not add it twice
        svc.layers.blobs.delete(f"layers/{dataset_id}/{layer.seq:06d}.json")
        raise
    return layer


@router.get("/{dataset_id}/provenance", tags=["provenance"])
def provenance(dataset_id: DatasetIdPath, user: Caller, svc: Svc,
               direction: Annotated[str, Query(pattern="^(ancestors|descendants)$")] = "ancestors",
               depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 1) -> ProvenanceOut:
    """What a dataset was made from (ancestors) or what was made from it (descendants),
    direct (depth 1) or transitive up to ``depth``."""
    visible(svc, user, dataset_id)
    seen: dict[str, int] = {}
    frontier = [dataset_id]
    for level in range(1, depth + 1):
        following: list[str] = []
        for current in frontier:
            for other in _neighbours(svc, current, direction):
                if other not in seen and other != dataset_id:
                    seen[other] = level
                    following.append(other)
        frontier = following
    nodes = [Related(id=i, depth=d) for i, d in seen.items() if _readable(svc, user, i)]
    return ProvenanceOut(dataset=dataset_id, direction=direction, depth=depth, datasets=nodes)


def _neighbours(svc: Services, dataset_id: str, direction: str) -> list[str]:
    if direction == "ancestors":
        try:
            return [i.dataset for i in svc.store.record(dataset_id).inputs]
        except DatasetNotFound:
            return []
    page = svc.index.find(f"inputs:{dataset_id}", size=1000, source=["id"])
    return [h["id"] for h in page.hits]


def _readable(svc: Services, user: Any, dataset_id: str) -> bool:
    try:
        return bool(user.can_read(svc.store.record(dataset_id).project))
    except NPSError:
        return False
