#!/usr/bin/env python3
"""REST API benchmark (issue 5), each case side by side with its reference in the same run.

* ``search``: 100,000 realistic series documents (``bench/gen_series.py``, bulk-indexed with the
  real mappings into a private ``<prefix>-datasets``); 200 varied queries, each a query string
  plus 3 facets, page size 20, through the API (``GET /api/v1/search`` with a keep-alive httpx
  client, as an admin) and the very same search straight to Elasticsearch, alternating the order
  per query, after a warm-up. Straight to Elasticsearch is measured three ways: ``DatasetIndex.find``
  (exactly the call the API makes), ``es.search`` with the body ``find`` builds (the Python client
  alone) and that body POSTed by httpx to ``_search`` (HTTP alone, like the API side).
  Targets: API p95 <= 50 ms; API overhead <= 20 % over Elasticsearch.
  For where the time goes, the same loop times ``/api/v1/health`` (no token: HTTP and framework)
  and ``/api/v1/me`` (the token check and nothing else) on the same server.
* ``download``: a 1 GiB random file put as a dataset (``MinioStore.put``), then
  ``GET /api/v1/datasets/{id}/files/{path}`` streamed to nowhere versus a direct MinIO
  ``get_object`` of the same object streamed the same way, alternating, repeated; plus
  ``MinioStore.read`` in this process (the API's own verified read without the HTTP hop).
  Target: API >= 80 % of direct.

The API is the real server: ``python -m nps api serve`` (uvicorn, one process) on a free
loopback port, with a private queue prefix and bucket, so its users, tokens and the 1 GiB
dataset live in a bucket of their own; the real ``nps-datasets`` index is never touched.
Index, bucket (users, tokens, dataset) and queues are removed at the end unless ``--keep``.

Prints one JSON object on stdout; progress on stderr.
Usage: ``python bench/api_bench.py [--series 100000] [--queries 200] [--file-mib 1024] [--repeat 3]
[--reuse PREFIX] [--keep]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import urllib3
from minio import Minio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from gen_series import INSTITUTIONS, generate  # noqa: E402

from nps.api.auth import Auth, Role  # noqa: E402
from nps.blobs import MinioBlobs  # noqa: E402
from nps.config import Settings, load_settings  # noqa: E402
from nps.index import DatasetIndex  # noqa: E402
from nps.store import upload_dataset_id  # noqa: E402
from nps.store.minio import MinioStore  # noqa: E402
from nps.store.source import hash_sources, scan_source  # noqa: E402
from schemas.dataset import DatasetRecord, UploadOrigin  # noqa: E402

MiB = 1024 * 1024
CHUNK = MiB
ADMIN = "benchadmin"
UPLOAD_SOURCE = "api_bench"
FILE_NAME = "random.bin"


def log(msg: str) -> None:
    print(f"[api_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def stats_ms(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(pct(ms, 0.95), 2),
            "mean_ms": round(statistics.fmean(ms), 2), "min_ms": round(min(ms), 2), "max_ms": round(max(ms), 2)}


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does (TIME-WAIT is fine)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---- queries ---------------------------------------------------------------------------------------
FACETS = ["manufacturer", "classification", "modality", "field_strength", "project", "institution",
          "manufacturer_model", "patient_sex", "body_part", "acquisition_type"]


def queries(count: int, seed: int) -> list[tuple[str, list[str]]]:
    """``count`` varied query strings (no leading wildcards), each with 3 distinct facets."""
    rng = random.Random(seed)
    models = sorted({s.model for i in INSTITUTIONS for s in i.scanners if s.modality == "MR"})
    words = ["flair", "mprage", "bold", "dti", "rest", "localizer", "t2", "diff", "swi", "survey", "bravo", "asl"]
    prefixes = ["t1_mprage*", "t2_flair*", "ep2d_diff*", "ep2d_bold*", "ax*", "sag*", "dti*", "t2_tse*", "rfmri*"]
    classes = ["T1w", "T2w", "FLAIR", "DWI", "BOLD", "localizer", "other"]

    def years() -> tuple[int, int]:
        start = rng.randint(2012, 2024)
        return start, min(2025, start + rng.randint(0, 4))

    def one() -> str:
        y0, y1 = years()
        templates: list[Callable[[], str]] = [
            lambda: f"series_description.text:{rng.choice(words)} AND "
                    f"manufacturer:{rng.choice(['siemens', 'ge*', 'philips*'])}",
            lambda: f"classification:{rng.choice(classes)} AND study_datetime:[{y0}-01-01 TO {y1}-12-31]",
            lambda: f"series_description:{rng.choice(prefixes)}",
            lambda: f"protocol_name:{rng.choice(prefixes)} AND field_strength:{rng.choice(['3', '1.5'])}",
            lambda: f"modality:MR AND field_strength:3 AND "
                    f"patient_age:[{rng.randint(18, 60)} TO {rng.randint(61, 95)}]",
            lambda: f"is_diffusion:true AND b_values:>={rng.choice([1000, 2000, 3000])}",
            lambda: f"repetition_time:<{rng.choice([800, 1000, 1500])} AND echo_time:<{rng.choice([20, 30])}",
            lambda: f"patient_sex:{rng.choice('FM')} AND "
                    f"classification:({rng.choice(classes)} OR {rng.choice(classes)})",
            lambda: f"project:{rng.choice(['alpha', 'brainage', 'stroke', 'epilepsy', 'dementia'])} AND "
                    f"acquisition_datetime:[{y0}-01-01 TO *]",
            lambda: rng.choice(["mprage", "localizer", "flair", "dti", "rsfmri", "survey", "t2", "bravo", "dwi",
                                "siemens", "prisma", "ingenia", "brain", "contrast"]),
            lambda: f"manufacturer_model:\"{rng.choice(models)}\" AND classification:{rng.choice(classes)}",
            lambda: f"institution.text:{rng.choice(['university', 'charite', 'karolinska', 'radboud', 'oxford'])} "
                    f"AND modality:{rng.choice(['MR', 'MR', 'CT', 'PT'])}",
            lambda: f"series_description.text:(rest OR resting) AND "
                    f"repetition_time:[500 TO {rng.choice([2000, 3000])}]",
            lambda: f"inversion_time:>={rng.choice([300, 800, 1500, 1800])} AND "
                    f"acquisition_type:{rng.choice(['2D', '3D'])}",
            lambda: f"patient_name.text:{rng.choice(['smith', 'garcia', 'nowak', 'anna', 'john', 'peter'])}",
            lambda: f"study_description.text:{rng.choice(['brain', 'research', 'contrast', 'epilepsy'])} AND "
                    f"number_of_instances:>{rng.choice([100, 200])}",
        ]
        return rng.choice(templates)()

    return [(one(), rng.sample(FACETS, 3)) for _ in range(count)]


class _Recorder:
    """Stands in for the Elasticsearch client to capture the body ``DatasetIndex.find`` sends."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {}

    def search(self, **kwargs: Any) -> dict[str, Any]:
        self.body = kwargs
        return {"hits": {"hits": [], "total": {"value": 0}}}


def es_body(index_name: str, es_url: str, q: str, facets: list[str], size: int) -> dict[str, Any]:
    """The search body the API sends for ``q`` with ``facets`` (built by ``find`` itself)."""
    probe = DatasetIndex(es_url, index_name.removesuffix("-datasets"))
    recorder = _Recorder()
    probe.es = recorder  # type: ignore[assignment]
    probe.find(q, **find_args(facets, size))
    body = dict(recorder.body)
    body.pop("index")
    return body


def find_args(facets: list[str], size: int) -> dict[str, Any]:
    """The arguments the API's search route passes to ``find`` for an admin, default sort."""
    return {"sort": [("created_at", "desc")], "size": size, "after": None, "projects": None,
            "leading_wildcards": False, "terms": {}, "facets": facets or None, "facet_size": 10}


# ---- the benchmark ----------------------------------------------------------------------------------
class Bench:
    def __init__(self, settings: Settings, prefix: str) -> None:
        self.prefix = prefix
        self.settings = settings.model_copy(update={"queue_prefix": prefix, "minio_bucket": f"nps-bench-{prefix}"})
        self.store = MinioStore(self.settings)
        self.store.ensure_bucket()
        self.index = DatasetIndex(self.settings.es_url, prefix)
        self.auth = Auth(MinioBlobs(self.store))
        self.tmp = Path(tempfile.mkdtemp(prefix="nps-apibench-"))
        self.server: subprocess.Popen[bytes] | None = None
        self.base = ""
        self.web: str | None = None
        self.token = ""
        self.server_argv = [sys.executable, "-m", "nps", "api", "serve"]  # then --port N

    # ---- setup ----
    def load(self, count: int, seed: int) -> dict[str, Any]:
        self.index.ensure()
        have = int(self.index.es.count(index=self.index.name)["count"])
        if have >= count:
            log(f"reusing {self.index.name}: {have} documents")
            return {"documents": have, "reused": True}
        log(f"generating and bulk-indexing {count} series documents into {self.index.name}")
        started = time.perf_counter()
        ok, errors = self.index.bulk(generate(count, seed))
        elapsed = time.perf_counter() - started
        if errors:
            log(f"{len(errors)} documents refused, first: {errors[0]}")
        deadline = time.monotonic() + 120  # measure a settled index: background merges finished
        while time.monotonic() < deadline:
            merges = self.index.es.indices.stats(index=self.index.name, metric="merge")
            if not merges["_all"]["primaries"]["merges"]["current"]:
                break
            time.sleep(1)
        log(f"indexed {ok} in {elapsed:.1f} s ({ok / elapsed:.0f} docs/s)")
        return {"documents": ok, "refused": len(errors), "seconds": round(elapsed, 1),
                "docs_per_s": round(ok / elapsed), "reused": False}

    def start_api(self) -> None:
        self.auth.add_user(ADMIN, Role.ADMIN)
        self.token = self.auth.create_token(ADMIN)[0]
        # On the port the stack's nginx forwards to, when it is free: then downloads are also
        # measured through nginx (the deployed path: the API authorizes, nginx streams from MinIO).
        port = self.settings.api_port if self.settings.web_url and port_free(self.settings.api_port) else free_port()
        self.web = self.settings.web_url if port == self.settings.api_port else None
        env = dict(os.environ, NPS_QUEUE_PREFIX=self.prefix, NPS_MINIO_BUCKET=self.settings.minio_bucket)
        out = (self.tmp / "api.log").open("wb")
        self.server = subprocess.Popen([*self.server_argv, "--port", str(port)],
                                       env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"the API exited: {(self.tmp / 'api.log').read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/api/v1/health", timeout=1).status_code == 200:
                    log(f"API up at {self.base} (pid {self.server.pid})")
                    return
            time.sleep(0.2)
        raise RuntimeError("the API did not come up within 60 s")

    # ---- search ----
    def search(self, count: int, warmup: int, seed: int, size: int) -> dict[str, Any]:
        assert self.server is not None
        cases = queries(count + warmup, seed)
        bodies = [es_body(self.index.name, self.settings.es_url, q, f, size) for q, f in cases]
        headers = {"Authorization": f"Bearer {self.token}"}
        api = httpx.Client(base_url=self.base, headers=headers, timeout=60)
        es_http = httpx.Client(base_url=self.settings.es_url, timeout=60,
                               headers={"Content-Type": "application/json"})
        es = self.index.es
        search_url = f"/{self.index.name}/_search"

        def via_api(n: int) -> Any:
            q, facets = cases[n]
            params = httpx.QueryParams([("q", q), *(("facet", f) for f in facets), ("size", str(size))])
            r = api.get("/api/v1/search", params=params)
            if r.status_code != 200:
                raise RuntimeError(f"API {r.status_code} for {q!r}: {r.text[:300]}")
            return r.content

        def via_find(n: int) -> Any:
            q, facets = cases[n]
            return self.index.find(q, **find_args(facets, size))

        def via_es_search(n: int) -> Any:
            return es.search(index=self.index.name, **bodies[n])

        def via_es_http(n: int) -> Any:
            r = es_http.post(search_url, content=json.dumps(bodies[n]))
            r.raise_for_status()
            return r.content

        def health(_: int) -> Any:
            return api.get("/api/v1/health").raise_for_status()

        def me(_: int) -> Any:
            return api.get("/api/v1/me").raise_for_status()

        ways: dict[str, Callable[[int], Any]] = {"api": via_api, "es_find": via_find, "es_search": via_es_search,
                                                 "es_http": via_es_http, "api_health": health, "api_me": me}
        times: dict[str, list[float]] = {w: [] for w in ways}
        totals: list[int] = []
        names = list(ways)
        api_cpu = 0.0
        log(f"search: {warmup} warm-up and {count} measured queries, {len(ways)} ways each, alternating")
        for n in range(count + warmup):
            order = names[n % len(names):] + names[:n % len(names)]  # rotate who goes first
            for way in order:
                before = proc_cpu_seconds(self.server.pid) if way == "api" else 0.0
                started = time.perf_counter()
                answer = ways[way](n)
                elapsed = time.perf_counter() - started
                if way == "api" and n >= warmup:
                    api_cpu += proc_cpu_seconds(self.server.pid) - before
                if way == "es_find" and n >= warmup:
                    totals.append(answer.total)
                if n >= warmup:
                    times[way].append(elapsed)
        api.close()
        es_http.close()
        out: dict[str, Any] = {w: stats_ms(t) for w, t in times.items()}
        out["queries"] = count
        out["warmup"] = warmup
        out["page_size"] = size
        out["facets_per_query"] = 3
        out["hits_total"] = {"p50": statistics.median(totals), "min": min(totals), "max": max(totals),
                             "zero": sum(1 for t in totals if t == 0)}
        paired = [a - f for a, f in zip(times["api"], times["es_find"], strict=True)]
        out["paired_api_minus_es_find"] = {"p50_ms": round(statistics.median(paired) * 1000, 2),
                                           "p95_ms": round(pct(paired, 0.95) * 1000, 2)}
        out["examples"] = [{"q": q, "facets": f} for q, f in cases[warmup:warmup + 5]]
        out["api_server_cpu_ms_per_search"] = round(api_cpu / count * 1000, 2)
        for ref in ("es_find", "es_search", "es_http"):
            out[f"overhead_p50_vs_{ref}"] = round(out["api"]["p50_ms"] / out[ref]["p50_ms"] - 1, 3)
            out[f"overhead_p95_vs_{ref}"] = round(out["api"]["p95_ms"] / out[ref]["p95_ms"] - 1, 3)
        out["target_p95_ms"] = 50
        out["target_overhead"] = 0.20
        out["met_p95"] = out["api"]["p95_ms"] <= 50
        out["met_overhead"] = out["overhead_p95_vs_es_find"] <= 0.20 and out["overhead_p50_vs_es_find"] <= 0.20
        return out

    # ---- download ----
    def big_dataset(self, mib: int) -> tuple[str, int]:
        """A dataset holding one random file of ``mib`` MiB: an earlier run's (``--reuse``) or a new one."""
        size = mib * MiB
        for dataset_id in self.store.ids():
            record = self.store.record(dataset_id)
            entry = self.store.manifest(dataset_id).file(FILE_NAME)
            if isinstance(record.origin, UploadOrigin) and record.origin.source == UPLOAD_SOURCE \
                    and entry is not None and entry.size == size:
                log(f"reusing dataset {dataset_id}")
                return dataset_id, size
        src = self.tmp / "upload"
        src.mkdir()
        log(f"writing a {mib} MiB random file and putting it as a dataset")
        with (src / FILE_NAME).open("wb") as fh:
            for _ in range(mib):
                fh.write(os.urandom(MiB))
        files = scan_source(src)
        dataset_id = upload_dataset_id((f.path, f.size, h) for f, h in zip(files, hash_sources(files, 2), strict=True))
        self.store.put(dataset_id, src, DatasetRecord(id=dataset_id, origin=UploadOrigin(source=UPLOAD_SOURCE)))
        (src / FILE_NAME).unlink()
        return dataset_id, size

    def download(self, mib: int, repeat: int) -> dict[str, Any]:
        assert self.server is not None
        dataset_id, size = self.big_dataset(mib)
        # The same HTTP client on both sides: urllib3, which minio-py uses (httpx's pure-Python
        # reader costs about 1.3 CPU-s per GiB on this machine, which would be charged to the API).
        pool = urllib3.PoolManager(timeout=urllib3.Timeout(connect=10, read=300))
        url = f"{self.base}/api/v1/datasets/{dataset_id}/files/{FILE_NAME}"
        auth = {"Authorization": f"Bearer {self.token}"}
        bucket, key = self.store.bucket, self.store.key(dataset_id, FILE_NAME)
        s = self.settings  # the reference: minio-py's own client, as an S3 user would read it
        assert s.minio_access_key is not None and s.minio_secret_key is not None
        minio = Minio(s.minio_endpoint, access_key=s.minio_access_key.get_secret_value(),
                      secret_key=s.minio_secret_key.get_secret_value(), secure=s.minio_secure)

        def via_api() -> int:
            got = 0
            resp = pool.request("GET", url, headers=auth, preload_content=False)
            try:
                if resp.status != 200:
                    raise RuntimeError(f"API {resp.status}: {resp.read()[:300]!r}")
                for chunk in resp.stream(CHUNK):
                    got += len(chunk)
            finally:
                resp.release_conn()
            return got

        def direct() -> int:
            got = 0
            resp = minio.get_object(bucket, key)
            try:
                for chunk in resp.stream(CHUNK):
                    got += len(chunk)
            finally:
                resp.close()
                resp.release_conn()
            return got

        def store_read() -> int:
            return sum(len(c) for c in self.store.read(dataset_id, FILE_NAME))

        def via_nginx() -> int:
            got = 0
            resp = pool.request("GET", f"{self.web}/api/v1/datasets/{dataset_id}/files/{FILE_NAME}", headers=auth,
                                preload_content=False)
            try:
                if resp.status != 200:
                    raise RuntimeError(f"nginx {resp.status}: {resp.read()[:300]!r}")
                for chunk in resp.stream(CHUNK):
                    got += len(chunk)
            finally:
                resp.release_conn()
            return got

        ways: dict[str, Callable[[], int]] = {"api": via_api, "minio_direct": direct, "store_read": store_read}
        if self.web:
            ways["api_via_nginx"] = via_nginx
        runs: dict[str, list[float]] = {w: [] for w in ways}
        api_cpu: list[float] = []
        names = list(ways)
        log("download: one warm-up of each, then alternating rounds")
        for way in names:  # warm-up: the object in the page cache for everyone alike
            ways[way]()
        for n in range(repeat):
            order = names[n % len(names):] + names[:n % len(names)]
            for way in order:
                before = proc_cpu_seconds(self.server.pid)
                started = time.perf_counter()
                got = ways[way]()
                elapsed = time.perf_counter() - started
                if got != size:
                    raise RuntimeError(f"{way}: {got} bytes, expected {size}")
                if way == "api":
                    api_cpu.append(proc_cpu_seconds(self.server.pid) - before)
                runs[way].append(elapsed)
                log(f"  {way}: {elapsed:.2f} s ({size / MiB / elapsed:.0f} MiB/s)")
        pool.clear()
        out: dict[str, Any] = {"bytes": size, "repeat": repeat, "client": "urllib3 (both sides)"}
        for way, secs in runs.items():
            med = statistics.median(secs)
            out[way] = {"median_s": round(med, 3), "mib_per_s": round(size / MiB / med, 1),
                        "runs_s": [round(s, 3) for s in secs]}
        out["api_server_cpu_s_per_gib"] = round(statistics.median(api_cpu) / (size / 1024 / MiB), 2)
        out["ratio_api_vs_direct"] = round(out["api"]["mib_per_s"] / out["minio_direct"]["mib_per_s"], 3)
        out["ratio_store_read_vs_direct"] = round(out["store_read"]["mib_per_s"] / out["minio_direct"]["mib_per_s"], 3)
        out["target_ratio"] = 0.8
        if "api_via_nginx" in out:  # the deployed path
            out["ratio_api_via_nginx_vs_direct"] = round(
                out["api_via_nginx"]["mib_per_s"] / out["minio_direct"]["mib_per_s"], 3)
        out["met"] = max(out["ratio_api_vs_direct"], out.get("ratio_api_via_nginx_vs_direct", 0)) >= 0.8
        return out

    # ---- teardown ----
    def stop_api(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    def cleanup(self, keep: bool) -> None:
        self.stop_api()
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)
        if keep:
            log(f"kept index {self.index.name} and bucket {self.store.bucket}: rerun with --reuse {self.prefix}")
            return
        self.index.drop()
        self.index.es.indices.delete(index=f"{self.prefix}-groups", ignore_unavailable=True)
        try:
            self.store.remove_bucket()
        except Exception as exc:
            log(f"could not remove bucket {self.store.bucket}: {exc}")
        if self.settings.amqp_url is not None:
            from nps.broker import topology

            with contextlib.suppress(Exception):  # the API declares queues only when it publishes
                topology(self.settings).delete()
        log(f"removed index {self.index.name}, bucket {self.store.bucket} (users, tokens, dataset) and queues")


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load],
            "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True, check=False).stdout.strip() or None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=100_000, help="series documents in the index")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--queries", type=int, default=200, help="measured searches (0: skip the search case)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--size", type=int, default=20, help="page size of each search")
    parser.add_argument("--file-mib", type=int, default=1024, help="size of the downloaded file (0: skip)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the download case")
    parser.add_argument("--reuse", metavar="PREFIX", help="reuse the index and bucket a --keep run left")
    parser.add_argument("--keep", action="store_true", help="keep index, bucket and dataset for --reuse")
    args = parser.parse_args()
    if args.reuse == "nps":
        parser.error("refusing to use the real nps prefix")
    prefix = args.reuse or f"bench{uuid.uuid4().hex[:8]}"
    result: dict[str, Any] = {"bench": "api", "prefix": prefix, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              **machine()}
    bench = Bench(load_settings(), prefix)
    started = time.perf_counter()
    interrupted: list[int] = []

    def stop(signum: int, _: object) -> None:
        interrupted.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if args.queries:
            result["load"] = bench.load(args.series, args.seed)
        bench.start_api()
        if args.queries:
            result["search"] = bench.search(args.queries, args.warmup, args.seed, args.size)
            s = result["search"]
            log(f"search p50/p95: API {s['api']['p50_ms']}/{s['api']['p95_ms']} ms, "
                f"find {s['es_find']['p50_ms']}/{s['es_find']['p95_ms']} ms, "
                f"ES http {s['es_http']['p50_ms']}/{s['es_http']['p95_ms']} ms")
        if args.file_mib:
            result["download"] = bench.download(args.file_mib, args.repeat)
            d = result["download"]
            log(f"download: API {d['api']['mib_per_s']} MiB/s, direct {d['minio_direct']['mib_per_s']} MiB/s, "
                f"ratio {d['ratio_api_vs_direct']}; through nginx "
                f"{d.get('api_via_nginx', {}).get('mib_per_s', 'not measured (nginx or its port unavailable)')}, "
                f"ratio {d.get('ratio_api_via_nginx_vs_direct')}")
    finally:
        bench.cleanup(args.keep)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
