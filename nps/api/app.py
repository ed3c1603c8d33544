"""The REST API (``/api/v1``), FastAPI. Started by ``nps api serve`` on loopback by default.

Every route but ``/api/v1/health`` needs ``Authorization: Bearer <token>``. A dataset, job or
result of a project the caller may not read answers exactly like one that does not exist
(404). Service credentials never appear in an answer; errors are one JSON object
``{"detail": "..."}`` with a 4xx status for anything the caller can fix, 503 when a backing
service is down, and a bare 500 (details only in the server log) otherwise.
"""



import logging
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from nps.api.auth import DEFAULT_PROJECT, Auth, AuthError, User, require_write
from nps.api.groups import Groups
from nps.config import Settings
from nps.errors import (
    BrokerUnavailable,
    CorruptDataset,
    DatasetNotFound,
    EngineUnavailable,
    ImageNotFound,
    IndexUnavailable,
    InvalidDatasetId,
    InvalidJob,
    InvalidPath,
    InvalidQuery,
    JobNotFound,
    NPSError,
    PermissionDenied,
    StoreUnavailable,
)
from nps.hashing import check_dataset_id
from nps.layout import check_relpath
from schemas.dataset import DatasetRecord
from schemas.job import Resources
from schemas.manifest import Manifest

log = logging.getLogger("nps.api")
MAX_BODY = 1024 * 1024
MAX_DEPTH = 10
DatasetIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{40}$", description="40 lowercase hex characters")]
RangeHeader = Annotated[str | None, Header(alias="range", pattern=r"^bytes=([0-9]{1,19}-[0-9]{0,19}|-[0-9]{1,19})$")]
class RangeNotSatisfiable(InvalidQuery):
    """A byte range outside the file (HTTP 416)."""


STATUS = [
    ((AuthError,), 401), ((RangeNotSatisfiable,), 416), ((PermissionDenied,), 403),
    ((DatasetNotFound, JobNotFound), 404),
    ((InvalidDatasetId, InvalidPath, InvalidQuery, InvalidJob, ImageNotFound), 400),
    ((StoreUnavailable, IndexUnavailable, BrokerUnavailable, EngineUnavailable), 503),
    ((CorruptDataset,), 409),
]


@dataclass
class Services:
    """What the routes use; made once per process."""

    settings: Settings
    store: Any
    index: Any
    records: Any
    auth: Auth
    lock: threading.Lock


class JobInputIn(BaseModel):
    """One input of a submitted job."""

    dataset: str = Field(pattern=r"^[0-9a-f]{40}$")
    mount: str = Field(min_length=2, max_length=1024)


class JobIn(BaseModel):
    """A job to submit (the same as ``nps submit``)."""

    model_config = {"extra": "forbid"}
    image: str = Field(min_length=1, max_length=512)
    command: list[Annotated[str, Field(max_length=65536)]] = Field(min_length=1, max_length=1000)
    inputs: list[JobInputIn] = Field(default_factory=list, max_length=1000)
    env: dict[str, Annotated[str, Field(max_length=65536)]] = Field(default_factory=dict, max_length=200)
    parameters: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=200)
    resources: Resources = Resources()
    project: str | None = Field(default=None, max_length=128)


class GroupIn(BaseModel):
    """A group to freeze: from a query, or from a list of ids."""

    model_config = {"extra": "forbid"}
    name: str = Field(min_length=1, max_length=200)
    project: str | None = Field(default=None, max_length=128)
    query: str | None = Field(default=None, min_length=1, max_length=2000)
    ids: list[Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]] | None = Field(default=None, max_length=20000)


class ErrorOut(BaseModel):
    """Every error answer."""

    detail: str


class Accepted(BaseModel):
    """A submitted job: its id is its result's id."""

    job_id: str
    queued: bool


def create_app(settings: Settings) -> FastAPI:
    """The application, bound to the stack ``settings`` describe."""
    from nps.blobs import MinioBlobs
    from nps.index import DatasetIndex
    from nps.jobs import records_for
    from nps.store.minio import MinioStore

    store = MinioStore(settings)
    services = Services(settings, store, DatasetIndex(settings.es_url, settings.queue_prefix), records_for(store),
                        Auth(MinioBlobs(store)), threading.Lock())
    groups = Groups(MinioBlobs(store), services.index)
    errors: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorOut, "description": what} for code, what in (
            (400, "invalid input (a bad id, path, range, query or job)"), (401, "missing or invalid token"),
            (403, "not allowed for this user"), (404, "no such dataset or job (or not in your projects)"),
            (409, "stored data is corrupt"), (413, "request too large"), (416, "byte range outside the file"),
            (422, "request does not match the schema"),
            (503, "a backing service is unavailable"))}
    app = FastAPI(title="NPS", version="1", description=__doc__, openapi_url="/api/v1/openapi.json",
                  docs_url="/api/v1/docs", redoc_url=None, responses=errors)

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return JSONResponse({"detail": f"request body larger than {MAX_BODY} bytes"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(NPSError)
    async def _nps_error(request: Request, exc: NPSError) -> JSONResponse:
        for kinds, status in STATUS:
            if isinstance(exc, kinds):
                headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
                return JSONResponse({"detail": str(exc)[:2000]}, status_code=status, headers=headers)
        log.error("unexpected NPS error on %s: %s", request.url.path, exc)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg')}"[:500]}, status_code=422)

    def caller(authorization: Annotated[str | None, Header()] = None) -> User:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            raise AuthError("missing or invalid token")
        return services.auth.authenticate(token.strip())

    Caller = Annotated[User, Depends(caller)]

    def visible(user: User, dataset_id: str) -> tuple[DatasetRecord, Manifest]:
        check_dataset_id(dataset_id)
        hidden = DatasetNotFound(f"dataset {dataset_id} not found")  # the same answer for both cases
        try:
            manifest = services.store.manifest(dataset_id)
            record = services.store.record(dataset_id)
        except DatasetNotFound:
            raise hidden from None
        if not user.can_read(record.project):
            raise hidden
        return record, manifest

    @app.get("/api/v1/health", tags=["meta"])
    def health() -> dict[str, str]:
        """Liveness (no token needed)."""
        return {"status": "ok"}

    @app.get("/api/v1/me", tags=["meta"])
    def me(user: Caller) -> dict[str, Any]:
        """Who the token belongs to."""
        return {"name": user.name, "role": user.role.value, "projects": list(user.projects)}

    @app.get("/api/v1/datasets/{dataset_id}", tags=["datasets"])
    def dataset(dataset_id: DatasetIdPath, user: Caller) -> dict[str, Any]:
        """A dataset's record (kind, origin, provenance) and manifest summary."""
        record, manifest = visible(user, dataset_id)
        return {"record": record.model_dump(mode="json", by_alias=True), "revision": manifest.revision,
                "files": len(manifest.files), "bytes": manifest.total_size}

    @app.get("/api/v1/datasets/{dataset_id}/files", tags=["datasets"])
    def files(dataset_id: DatasetIdPath, user: Caller) -> list[dict[str, Any]]:
        """Every file: path, size, checksum."""
        _, manifest = visible(user, dataset_id)
        return [f.model_dump(mode="json") for f in manifest.files]

    @app.get("/api/v1/datasets/{dataset_id}/files/{path:path}", tags=["datasets"],
             responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "a byte range"}})
    def file(dataset_id: DatasetIdPath, path: str, user: Caller, range_: RangeHeader = None) -> StreamingResponse:
        """One file, streamed; a single ``Range: bytes=START-END`` gives 206 (whole files are checksum-verified)."""
        try:
            check_relpath(path)
        except InvalidPath as exc:  # a path that cannot be in any dataset is not found in this one
            raise DatasetNotFound(f"{dataset_id} has no file {path[:200]!r} ({exc})") from exc
        _, manifest = visible(user, dataset_id)
        entry = services.store.entry(dataset_id, path, manifest)
        start, end, status = 0, entry.size, 200
        if range_:
            start, end = _range(range_, entry.size)
            status = 206
        headers = {"Content-Length": str(end - start), "Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        chunks = services.store.read(dataset_id, path, start, end, manifest=manifest)
        return StreamingResponse(chunks, status_code=status, headers=headers, media_type="application/octet-stream")

    @app.get("/api/v1/datasets/{dataset_id}/archive", tags=["datasets"],
             responses={200: {"content": {"application/x-tar": {}}}})
    def archive(dataset_id: DatasetIdPath, user: Caller) -> StreamingResponse:
        """The whole dataset as a tar stream (files verified as they are read)."""
        _, manifest = visible(user, dataset_id)
        return StreamingResponse(_tar(services.store, dataset_id, manifest), media_type="application/x-tar",
                                 headers={"Content-Disposition": f'attachment; filename="{dataset_id}.tar"'})

    @app.get("/api/v1/datasets/{dataset_id}/provenance", tags=["provenance"])
    def provenance(dataset_id: DatasetIdPath, user: Caller,
                   direction: Annotated[str, Query(pattern="^(ancestors|descendants)$")] = "ancestors",
                   depth: Annotated[int, Query(ge=1, le=MAX_DEPTH)] = 1) -> dict[str, Any]:
        """What a dataset was made from (ancestors) or what was made from it (descendants),
        direct (depth 1) or transitive up to ``depth``."""
        visible(user, dataset_id)
        seen: dict[str, int] = {}
        frontier = [dataset_id]
        for level in range(1, depth + 1):
            following: list[str] = []
            for current in frontier:
                for other in _neighbours(services, current, direction):
                    if other not in seen and other != dataset_id:
                        seen[other] = level
                        following.append(other)
            frontier = following
        nodes = [{"id": i, "depth": d} for i, d in seen.items() if _readable(services, user, i)]
        return {"dataset": dataset_id, "direction": direction, "depth": depth, "datasets": nodes}

    @app.get("/api/v1/search", tags=["search"])
    def search(user: Caller, q: Annotated[str, Query(max_length=2000)] = "*",
               size: Annotated[int, Query(ge=1, le=1000)] = 50,
               sort: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.]{1,100}:(asc|desc)$")] = "created_at:desc",
               after: Annotated[str | None, Query(max_length=4000)] = None) -> dict[str, Any]:
        """Lucene query (no leading wildcards) over the caller's projects; ``after`` pages on."""
        import json

        cursor = None
        if after:
            try:
                cursor = json.loads(after)
            except ValueError as exc:
                raise InvalidQuery("after: not a cursor returned by this endpoint") from exc
            if not isinstance(cursor, list):
                raise InvalidQuery("after: not a cursor returned by this endpoint")
        field, _, direction = sort.partition(":")
        page = services.index.find(q, sort=[(field, direction)], size=size, after=cursor,
                                   projects=user.readable(), leading_wildcards=False)
        return {"total": page.total, "hits": page.hits,
                "next": json.dumps(page.after) if page.after else None}

    @app.post("/api/v1/groups", tags=["groups"], status_code=201)
    def create_group(body: GroupIn, user: Caller) -> dict[str, Any]:
        """Freeze a group: the datasets a query finds now, or a list of ids (all must be visible)."""
        return groups.create(user, body.name, body.project, body.query, body.ids).model_dump(mode="json")

    @app.get("/api/v1/groups", tags=["groups"])
    def list_groups(user: Caller) -> list[dict[str, Any]]:
        """Groups of the caller's projects, newest first."""
        return [g.model_dump(mode="json") for g in groups.list(user)]

    @app.get("/api/v1/groups/{group_id}", tags=["groups"])
    def show_group(group_id: Annotated[str, Path(pattern=r"^g-[0-9a-f]{12}$")], user: Caller,
                   q: Annotated[str | None, Query(max_length=2000)] = None,
                   size: Annotated[int, Query(ge=1, le=1000)] = 100,
                   after: Annotated[str | None, Query(max_length=4000)] = None) -> dict[str, Any]:
        """A group and a page of its members; ``q`` filters them further (e.g. is_diffusion:true)."""
        import json

        group = groups.get(user, group_id)
        if q is None:
            offset = int(after) if after and after.isdigit() else 0
            members = groups.members(group_id)[offset:offset + size]
            more = offset + size < group.size
            return {"group": group.model_dump(mode="json"), "total": group.size,
                    "members": [{"id": m} for m in members], "next": str(offset + size) if more else None}
        try:
            cursor = json.loads(after) if after else None
        except ValueError as exc:
            raise InvalidQuery("after: not a cursor returned by this endpoint") from exc
        page = groups.page(user, group, q, size, cursor if isinstance(cursor, list) else None)
        return {"group": group.model_dump(mode="json"), "total": page.total, "members": page.hits,
                "next": json.dumps(page.after) if page.after else None}

    @app.get("/api/v1/export", tags=["export"],
             responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
    def export(user: Caller, q: Annotated[str, Query(min_length=1, max_length=1900)],
               fields: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.]{1,100}(,[A-Za-z0-9_.]{1,100}){0,99}$")],
               input_fields: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.]{1,100}(,[A-Za-z0-9_.]{1,100}){0,99}$")]
               = "patient_id,study_datetime,series_description,series_instance_uid",
               fmt: Annotated[str, Query(alias="format", pattern="^(csv|jsonl)$")] = "csv",
               limit: Annotated[int, Query(ge=1, le=100_000)] = 100_000) -> StreamingResponse:
        """A table of results (``kind:result AND (q)``): one row per (result, input), the chosen
        result fields (``metadata.brain_mean``) beside the input's own (``input.patient_id``)."""
        # Asked once before streaming: a bad query must be a 400, not a broken stream.
        services.index.find(f"kind:result AND ({q})", size=1, projects=user.readable(), leading_wildcards=False)
        rows = _export_rows(services, user, q, fields.split(","), input_fields.split(","), limit)
        if fmt == "jsonl":
            return StreamingResponse((json_line(r) for r in rows), media_type="application/x-ndjson")
        columns = ["result", "input", *fields.split(","), *(f"input.{f}" for f in input_fields.split(","))]
        return StreamingResponse(_csv(columns, rows), media_type="text/csv")

    @app.post("/api/v1/jobs", tags=["jobs"], status_code=202)
    def submit_job(job: JobIn, user: Caller) -> Accepted:
        """Queue a job (inputs pinned to their current revision); answers at once with its id."""
        from nps.broker import Publisher, topology
        from nps.engine import DockerEngine
        from nps.jobs.plan import build_spec
        from nps.jobs.submit import submit
        from schemas.messages import JobRequested

        projects = {visible(user, i.dataset)[0].project or DEFAULT_PROJECT for i in job.inputs}
        project = job.project or (projects.pop() if len(projects) == 1 else None)
        if project is None and len(projects) > 1:
            raise InvalidJob("inputs come from several projects: say which project the result belongs to")
        require_write(user, project)
        pinned = [(i.dataset, services.store.manifest(i.dataset).revision, i.mount) for i in job.inputs]
        image_id = DockerEngine(services.settings.docker_host).resolve_image(job.image)
        spec = build_spec(image_id, job.command, pinned, list(job.env.items()),
                          [(k, "" if v is None else str(v)) for k, v in job.parameters.items()])
        request = JobRequested(job_id=spec.job_id, spec=spec, resources=job.resources,
                               project=project if project != DEFAULT_PROJECT else None, requested_by=user.name)
        with services.lock:
            publisher = Publisher(topology(services.settings))
            try:
                queued = submit(services.store, services.records, publisher, request)
            finally:
                publisher.close()
        return Accepted(job_id=spec.job_id, queued=queued)

    def job_request(user: User, job_id: str) -> Any:
        check_dataset_id(job_id)
        try:
            request = services.records.request(job_id)
        except JobNotFound:
            request = None
        if request is None or not user.can_read(request.project):
            raise JobNotFound(f"no job {job_id}")
        return request

    @app.get("/api/v1/jobs/{job_id}", tags=["jobs"])
    def job(job_id: DatasetIdPath, user: Caller) -> dict[str, Any]:
        """A job's spec, resources, state and timestamped history."""
        request = job_request(user, job_id)
        history = services.records.history(job_id)
        return {"job_id": job_id, "state": history[-1].state.value if history else "QUEUED",
                "request": request.model_dump(mode="json"),
                "history": [h.model_dump(mode="json") for h in history]}

    @app.post("/api/v1/jobs/{job_id}/cancel", tags=["jobs"], status_code=202)
    def cancel(job_id: DatasetIdPath, user: Caller) -> dict[str, str]:
        """Ask a queued or running job to stop."""
        request = job_request(user, job_id)
        require_write(user, request.project)
        services.records.request_cancel(job_id)
        return {"job_id": job_id, "cancel": "requested"}

    @app.get("/api/v1/jobs/{job_id}/logs", tags=["jobs"], responses={200: {"content": {"text/plain": {}}}})
    def logs(job_id: DatasetIdPath, user: Caller,
             stream: Annotated[str, Query(pattern="^(stdout|stderr)$")] = "stdout") -> StreamingResponse:
        """A job's stdout or stderr (size-capped; kept for failed jobs too)."""
        job_request(user, job_id)
        data = services.records.log(job_id, stream) or b""
        return StreamingResponse(iter([data]), media_type="text/plain")

    return app


def _range(header: str, size: int) -> tuple[int, int]:
    """``bytes=START-END`` or ``bytes=START-`` or ``bytes=-SUFFIX`` as [start, end)."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise InvalidQuery("Range: only one 'bytes=START-END' range is supported")
    first, _, last = spec.strip().partition("-")
    try:
        if not first:
            start, end = max(0, size - int(last)), size
        else:
            start = int(first)
            end = min(size, int(last) + 1) if last else size
    except ValueError as exc:
        raise InvalidQuery(f"Range: {header!r} is not bytes=START-END") from exc
    if start < 0 or start >= max(size, 1) or end <= start:
        raise RangeNotSatisfiable(f"Range: {header!r} is outside the file ({size} bytes)")
    return start, end


def _tar(store: Any, dataset_id: str, manifest: Manifest) -> Iterator[bytes]:
    """A POSIX tar stream written entry by entry: header, verified bytes, padding; never a whole
    file in memory."""
    for entry in manifest.files:
        info = tarfile.TarInfo(f"{dataset_id}/{entry.path}")
        info.size, info.mode, info.mtime = entry.size, 0o444, 0
        yield info.tobuf(tarfile.PAX_FORMAT)
        yield from store.read(dataset_id, entry.path, manifest=manifest)
        if entry.size % tarfile.BLOCKSIZE:
            yield tarfile.NUL * (tarfile.BLOCKSIZE - entry.size % tarfile.BLOCKSIZE)
    yield tarfile.NUL * (2 * tarfile.BLOCKSIZE)


def _dotted(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _export_rows(services: Services, user: User, query: str, fields: list[str], input_fields: list[str],
                 limit: int) -> Iterator[dict[str, Any]]:
    after = None
    emitted = 0
    while emitted < limit:
        page = services.index.find(f"kind:result AND ({query})", size=1000, after=after, projects=user.readable(),
                                   leading_wildcards=False, sort=[("id", "asc")])
        inputs = services.index.mget(sorted({i for h in page.hits for i in h.get("inputs") or []}))
        for hit in page.hits:
            for input_id in hit.get("inputs") or [None]:
                source = inputs.get(input_id or "", {})
                if source and not user.can_read(source.get("project")):
                    source = {}
                row = {"result": hit["id"], "input": input_id}
                row.update({f: _dotted(hit, f) for f in fields})
                row.update({f"input.{f}": _dotted(source, f) for f in input_fields})
                yield row
                emitted += 1
                if emitted >= limit:
                    return
        if page.after is None:
            return
        after = page.after


def json_line(row: dict[str, Any]) -> str:
    """One JSON-lines row."""
    import json

    return json.dumps(row, default=str) + "\n"


def _csv(columns: list[str], rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else (";".join(map(str, row[c])) if isinstance(row[c], list)
                         else row[c]) for c in columns])
        if buffer.tell() > 65536:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _neighbours(services: Services, dataset_id: str, direction: str) -> list[str]:
    if direction == "ancestors":
        try:
            return [i.dataset for i in services.store.record(dataset_id).inputs]
        except DatasetNotFound:
            return []
    page = services.index.find(f"inputs:{dataset_id}", size=1000, source=["id"])
    return [h["id"] for h in page.hits]


def _readable(services: Services, user: User, dataset_id: str) -> bool:
    try:
        return user.can_read(services.store.record(dataset_id).project)
    except NPSError:
        return False
