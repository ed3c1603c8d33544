"""The NPS REST API from Python: every endpoint as a method, streamed downloads, NPS errors.

>>> from nps.client import Client
>>> api = Client.from_config()                 # NPS_API_URL/NPS_API_TOKEN, else `nps login`'s file
>>> for hit in api.iter_search("modality:MR"): ...
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import httpx

from nps.client.config import ClientConfig, normalize_url, resolve
from nps.client.errors import ApiError, ApiUnavailable, error_for
from nps.errors import ConfigError, CorruptDataset, NPSError

Progress = Callable[[int], None]
Json = dict[str, Any]
TERMINAL = frozenset({"COMPLETE", "FAILED", "CANCELLED"})
CHUNK = 1024 * 1024
PAGE = 1000


class Client:
    """A session with one NPS API, authenticated by a bearer token (never printed)."""

    def __init__(self, url: str, token: str, timeout: float = 30.0, transport: httpx.BaseTransport | None = None):
        self.url = normalize_url(url)
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                                  headers={"Authorization": f"Bearer {token}", "User-Agent": "nps-client"},
                                  transport=transport, follow_redirects=False)

    @classmethod
    def from_config(cls, timeout: float = 30.0, config: ClientConfig | None = None) -> Client:
        """From the environment or the config file; ConfigError when neither names an API."""
        config = config or resolve()
        if config is None:
            raise ConfigError("no API configured: run `nps login URL` (or set NPS_API_URL and NPS_API_TOKEN)")
        return cls(config.url, config.token, timeout)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def close(self) -> None:
        """Release the connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------
    def _fail(self, response: httpx.Response, path: str) -> NPSError:
        try:
            detail = str(response.json().get("detail", response.reason_phrase))
        except (ValueError, AttributeError):
            detail = response.reason_phrase or "error"
        return error_for(response.status_code, detail, self.url, path)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            raise ApiUnavailable(f"the API at {self.url} is unreachable ({type(exc).__name__}: {exc})") from None

    def _request(self, method: str, path: str, params: Any = None, body: Any = None) -> httpx.Response:
        with self._guard():
            response = self._http.request(method, path, params=params, json=body)
        if response.status_code >= 400:
            raise self._fail(response, path)
        return response

    def _json(self, method: str, path: str, params: Any = None, body: Any = None) -> Any:
        response = self._request(method, path, params, body)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(f"the API at {self.url} answered {path} with something other than JSON") from exc

    @contextlib.contextmanager
    def _stream(self, path: str, params: Any = None, headers: Mapping[str, str] | None = None
                ) -> Iterator[httpx.Response]:
        with self._guard(), self._http.stream("GET", path, params=params, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                raise self._fail(response, path)
            yield response

    def _chunks(self, path: str, params: Any = None, headers: Mapping[str, str] | None = None) -> Iterator[bytes]:
        with self._stream(path, params, headers) as response:
            yield from response.iter_bytes(CHUNK)

    def _save(self, chunks: Iterator[bytes], dest: Path, progress: Progress | None,
              check: Callable[[bytes], object] | None = None, verify: Callable[[], None] | None = None) -> Path:
        """Write chunks to ``dest`` through a temporary file; ``verify`` runs before it takes
        the final name, so nothing (and nothing unverified) is left on failure."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.nps-part-{os.getpid()}")
        try:
            with tmp.open("wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
                    if check:
                        check(chunk)
                    if progress:
                        progress(len(chunk))
            if verify:
                verify()
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    # -- who ---------------------------------------------------------------------------------
    def health(self) -> bool:
        """True when the API answers (no token needed)."""
        return bool(self._json("GET", "/api/v1/health").get("status") == "ok")

    def me(self) -> Json:
        """The token's user: name, role, projects."""
        return dict(self._json("GET", "/api/v1/me"))

    # -- datasets ----------------------------------------------------------------------------
    def dataset(self, dataset_id: str) -> Json:
        """Record (kind, origin, provenance), revision, file count and bytes."""
        return dict(self._json("GET", f"/api/v1/datasets/{dataset_id}"))

    def files(self, dataset_id: str) -> list[Json]:
        """Every file: path, size, checksum (``blake3``, or ``sha256`` in old manifests)."""
        return list(self._json("GET", f"/api/v1/datasets/{dataset_id}/files"))

    def read(self, dataset_id: str, path: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """One file's bytes, streamed; ``start``/``end`` (exclusive) select a range."""
        if end is not None and end <= start:
            return iter(())
        headers = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if start or end is not None else None
        return self._chunks(f"/api/v1/datasets/{dataset_id}/files/{_quote(path)}", headers=headers)

    def download(self, dataset_id: str, path: str, dest: Path, progress: Progress | None = None,
                 checksum: tuple[str, str] | None = None) -> Path:
        """Save one file at ``dest`` (streamed), verified against ``checksum`` (algorithm, hex)
        or else the ``X-NPS-Checksum`` the API sends with every file; a mismatch leaves nothing."""
        from nps.checksum import new

        with self._stream(f"/api/v1/datasets/{dataset_id}/files/{_quote(path)}") as response:
            if checksum is None:
                algorithm, _, digest = response.headers.get("x-nps-checksum", "").partition("-")
                checksum = (algorithm, digest) if algorithm in ("blake3", "sha256") and digest else None
            hasher = new(checksum[0]) if checksum else None  # type: ignore[arg-type]

            def verify() -> None:
                if checksum and hasher is not None and hasher.hexdigest() != checksum[1]:
                    raise CorruptDataset(f"{dataset_id}/{path}: downloaded bytes do not match the manifest's checksum")

            return self._save(response.iter_bytes(CHUNK), dest, progress, hasher.update if hasher else None, verify)

    def download_dataset(self, dataset_id: str, dest: Path, progress: Progress | None = None,
                         workers: int = 4) -> list[Json]:
        """Every file into new or empty directory ``dest``, each verified; returns the file list."""
        from concurrent.futures import ThreadPoolExecutor

        from nps.layout import check_relpath

        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise NPSError(f"{dest}: destination exists and is not an empty directory")
        entries = self.files(dataset_id)
        for entry in entries:
            check_relpath(entry["path"])  # a hostile server cannot write outside dest
        dest.mkdir(parents=True, exist_ok=True)

        def fetch(entry: Json) -> None:
            algorithm = "blake3" if entry.get("blake3") else "sha256"
            self.download(dataset_id, entry["path"], dest / entry["path"], progress,
                          (algorithm, str(entry.get(algorithm))))

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(fetch, entries))
        return entries

    def download_archive(self, dataset_id: str, dest: Path, fmt: Literal["tar", "zip"] = "tar",
                         progress: Progress | None = None) -> Path:
        """The whole dataset as one tar or zip file at ``dest``, streamed."""
        return self._save(self._chunks(f"/api/v1/datasets/{dataset_id}/archive", {"format": fmt}), dest, progress)

    def metadata(self, dataset_id: str) -> Json:
        """User metadata: every layer and the merged view (searchable as ``user.*``)."""
        return dict(self._json("GET", f"/api/v1/datasets/{dataset_id}/metadata"))

    def add_metadata(self, dataset_id: str, fields: Mapping[str, Any], note: str | None = None) -> Json:
        """Append a layer of user metadata (``None`` removes a field from the merged view)."""
        body: Json = {"fields": dict(fields)}
        if note:
            body["note"] = note
        return dict(self._json("POST", f"/api/v1/datasets/{dataset_id}/metadata", body=body))

    def provenance(self, dataset_id: str, direction: Literal["ancestors", "descendants"] = "ancestors",
                   depth: int = 1) -> Json:
        """What a dataset came from (ancestors) or what came from it (descendants), up to ``depth``."""
        return dict(self._json("GET", f"/api/v1/datasets/{dataset_id}/provenance",
                               {"direction": direction, "depth": depth}))

    # -- search and export -------------------------------------------------------------------
    def search(self, q: str = "*", filters: Mapping[str, str | Sequence[str]] | None = None,
               facets: Sequence[str] = (), facet_size: int = 10, sort: str | Sequence[str] = "created_at:desc",
               size: int = 50, after: str | None = None) -> Json:
        """One page: ``total``, ``hits``, ``facets`` and ``next`` (pass it as ``after``). ``sort``:
        ``field:asc|desc``, or several (ties go to the next)."""
        params: list[tuple[str, str | int]] = [("q", q), ("size", size), ("facet_size", facet_size)]
        params += [("sort", key) for key in ([sort] if isinstance(sort, str) else sort)]
        for name, values in (filters or {}).items():
            params += [("filter", f"{name}:{v}") for v in ([values] if isinstance(values, str) else values)]
        params += [("facet", f) for f in facets]
        if after:
            params.append(("after", after))
        return dict(self._json("GET", "/api/v1/search", params))

    def iter_search(self, q: str = "*", filters: Mapping[str, str | Sequence[str]] | None = None,
                    sort: str | Sequence[str] = "created_at:desc", page_size: int = PAGE) -> Iterator[Json]:
        """Every hit, a page at a time."""
        after = None
        while True:
            page = self.search(q, filters, sort=sort, size=page_size, after=after)
            yield from page["hits"]
            after = page.get("next")
            if not after or not page["hits"]:
                return

    def export(self, dest: Path, fields: Sequence[str], q: str | None = None, analysis: str | None = None,
               input_fields: Sequence[str] | None = None, fmt: Literal["csv", "jsonl"] = "csv",
               limit: int | None = None, progress: Progress | None = None) -> Path:
        """A table of results (one row per result and input) streamed into ``dest``."""
        params = self._export_params(fields, q, analysis, input_fields, fmt, limit)
        return self._save(self._chunks("/api/v1/export", params), dest, progress)

    def export_chunks(self, fields: Sequence[str], q: str | None = None, analysis: str | None = None,
                      input_fields: Sequence[str] | None = None, fmt: Literal["csv", "jsonl"] = "csv",
                      limit: int | None = None) -> Iterator[bytes]:
        """The same table as bytes, streamed (e.g. to stdout)."""
        return self._chunks("/api/v1/export", self._export_params(fields, q, analysis, input_fields, fmt, limit))

    @staticmethod
    def _export_params(fields: Sequence[str], q: str | None, analysis: str | None,
                       input_fields: Sequence[str] | None, fmt: str, limit: int | None) -> Json:
        params: Json = {"fields": ",".join(fields), "format": fmt}
        for key, value in (("q", q), ("analysis", analysis), ("limit", limit)):
            if value is not None:
                params[key] = value
        if input_fields:
            params["input_fields"] = ",".join(input_fields)
        return params

    # -- groups ------------------------------------------------------------------------------
    def create_group(self, name: str, query: str | None = None, ids: Sequence[str] | None = None,
                     project: str | None = None) -> Json:
        """Freeze a group from a query or a list of ids."""
        if (query is None) == (ids is None):
            raise ConfigError("a group needs a query or a list of ids (one of them)")
        body: Json = {"name": name, "query": query, "ids": list(ids) if ids is not None else None,
                      "project": project}
        return dict(self._json("POST", "/api/v1/groups", body={k: v for k, v in body.items() if v is not None}))

    def groups(self) -> list[Json]:
        """Groups of your projects, newest first."""
        return list(self._json("GET", "/api/v1/groups"))

    def group(self, group_id: str, q: str | None = None, size: int = 100, after: str | None = None) -> Json:
        """A group and a page of its members (``q`` filters them further): group, total, members, next."""
        params: Json = {"size": size}
        if q:
            params["q"] = q
        if after:
            params["after"] = after
        return dict(self._json("GET", f"/api/v1/groups/{group_id}", params))

    def iter_group(self, group_id: str, q: str | None = None, page_size: int = PAGE) -> Iterator[Json]:
        """Every member (filtered by ``q`` if given), a page at a time."""
        after = None
        while True:
            page = self.group(group_id, q, page_size, after)
            yield from page["members"]
            after = page.get("next")
            if not after or not page["members"]:
                return

    # -- analyses ----------------------------------------------------------------------------
    def create_analysis(self, kind: Literal["map", "reduce"], name: str, image: str, command: Sequence[str],
                        group: str | None = None, query: str | None = None, mount: str | None = None,
                        env: Mapping[str, str] | None = None, parameters: Mapping[str, str] | None = None,
                        resources: Mapping[str, Any] | None = None, project: str | None = None) -> Json:
        """Request a map (one job per member) or reduce (one job over all): ``{"analysis": ...}``, PLANNING;
        ``analysis_jobs`` lists its jobs once an analyst planned it."""
        body: Json = {"kind": kind, "name": name, "image": image, "command": list(command), "group": group,
                      "query": query, "mount": mount, "env": dict(env or {}), "parameters": dict(parameters or {}),
                      "resources": dict(resources) if resources else None, "project": project}
        return dict(self._json("POST", "/api/v1/analyses", body={k: v for k, v in body.items() if v is not None}))

    def analyses(self) -> list[Json]:
        """Analyses of your projects, newest first."""
        return list(self._json("GET", "/api/v1/analyses"))

    def analysis(self, analysis_id: str) -> Json:
        """Progress: submitted, complete, states, done."""
        return dict(self._json("GET", f"/api/v1/analyses/{analysis_id}"))

    def analysis_jobs(self, analysis_id: str) -> list[str]:
        """Every job id, in member order."""
        return list(self._json("GET", f"/api/v1/analyses/{analysis_id}/jobs")["job_ids"])

    def wait_analysis(self, analysis_id: str, timeout: float | None = None, poll: float = 2.0,
                      on_status: Callable[[Json], None] | None = None) -> Json:
        """Poll until the analysis is done (or ``timeout`` seconds passed); the last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.analysis(analysis_id)
            if on_status:
                on_status(status)
            if status.get("done") or (deadline is not None and time.monotonic() >= deadline):
                return status
            time.sleep(poll)

    # -- jobs --------------------------------------------------------------------------------
    def submit(self, image: str, command: Sequence[str],
               inputs: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
               env: Mapping[str, str] | None = None, parameters: Mapping[str, Any] | None = None,
               resources: Mapping[str, Any] | None = None, project: str | None = None) -> Json:
        """Queue a job; ``inputs`` are (dataset id, mount path) pairs (or a mapping). Answers
        ``job_id`` and ``queued`` (False: the result already exists)."""
        pairs = list(inputs.items()) if isinstance(inputs, Mapping) else list(inputs or [])
        body: Json = {"image": image, "command": list(command),
                      "inputs": [{"dataset": d, "mount": m} for d, m in pairs],
                      "env": dict(env or {}), "parameters": dict(parameters or {})}
        if resources:
            body["resources"] = dict(resources)
        if project:
            body["project"] = project
        return dict(self._json("POST", "/api/v1/jobs", body=body))

    def jobs(self, states: Sequence[str] = (), size: int = 100, after: str | None = None) -> Json:
        """A page of your projects' jobs in id order: ``jobs`` (id, state, reason, project,
        requested_by, updated, image, command, submitted_at, queued_at, started_at, finished_at)
        and ``next``. The list comes from the jobs index, a second or so behind ``job()``."""
        params: list[tuple[str, str | int]] = [("size", size), *(("state", s) for s in states)]
        if after:
            params.append(("after", after))
        return dict(self._json("GET", "/api/v1/jobs", params))

    def iter_jobs(self, states: Sequence[str] = (), page_size: int = 500) -> Iterator[Json]:
        """Every job of your projects (optionally only in ``states``), a page at a time."""
        after = None
        while True:
            page = self.jobs(states, page_size, after)
            yield from page["jobs"]
            after = page.get("next")
            if not after or not page["jobs"]:
                return

    def job(self, job_id: str) -> Json:
        """Spec, resources, state and history."""
        return dict(self._json("GET", f"/api/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Json:
        """Ask a queued or running job to stop."""
        return dict(self._json("POST", f"/api/v1/jobs/{job_id}/cancel"))

    def logs(self, job_id: str, stream: Literal["stdout", "stderr"] = "stdout") -> bytes:
        """A job's stdout or stderr so far."""
        return self._request("GET", f"/api/v1/jobs/{job_id}/logs", {"stream": stream}).content

    def wait(self, job_id: str, timeout: float | None = None, poll: float = 1.0) -> Json:
        """Poll until the job is COMPLETE, FAILED or CANCELLED (or ``timeout`` passed); the last answer."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in TERMINAL or (deadline is not None and time.monotonic() >= deadline):
                return job
            time.sleep(poll)


def _quote(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")

