#!/usr/bin/env python3
"""DICOM ingest end to end, side by side with Orthanc and dcmtk's ``storescp`` in the same run.
JSON lines on stdout, progress on stderr.

* ``ingest``: ``--instances`` instances (pydicom, 128x128 16-bit, about 33 KB each) in
  ``--series`` series, sent by dcmtk's ``storescu`` over 1 association (one process, all
  files) and over 4 (four processes in parallel, instance *i* of every series on association
  *i mod 4*, so each one carries every series and the series complete one after another) to:

  - ``storescp`` writing to disk (the ceiling; ``--fork`` with 4 associations so they run in
    parallel): time from the first ``storescu`` start until every ``storescu`` exited;
  - Orthanc (the stack's, Debian's package) with calling AE ``NOROUTE`` (stored, not
    forwarded), timed the same way; the series are deleted from Orthanc afterwards;
  - NPS: ``nps receiver --processes P``, ``nps worker assemble`` and ``nps worker index`` on a
    private queue prefix, bucket and index, ``NPS_SERIES_STABLE_SECONDS`` (``--stable``,
    default 1 s: a deliberate wait after a series' last instance). ``sent_s``: until every
    ``storescu`` exited (the ingest rate); ``searchable_s``: until every series is found by an
    Elasticsearch search with its full instance count (the end-to-end rate, polled every
    100 ms). Per series, ``latency`` = first sighting in Elasticsearch minus the commit time
    of its (final) manifest in MinIO (``last_modified`` of ``.nps/manifest.json``, ms).

  Every target gets fresh UIDs per run (a re-sent instance is a duplicate, a cheaper path)
  and ``TCP_NODELAY=1`` in the environment of every dcmtk program (Orthanc has it too).
  A short warm-up send precedes the timed runs of each target. The CPU seconds used during
  each NPS run by the receiver, assembler, indexer, MinIO, RabbitMQ, Elasticsearch and the
  senders are reported, to show where the time goes.
* ``memory`` (``--memory N``): N instances of 64x64 in ``--memory-series`` series, 4
  associations, into a freshly started NPS; the RSS (VmRSS) of the receiver processes
  (parent and children), the assembler and the indexer is sampled every second and reported
  at the start and after 25/50/75/100 % of the instances are searchable. Flat: growth over
  the last quarter below 10 % of the level at 25 %.

Targets: >= 200 instances/s end to end (searchable) with 4 associations, the ratio to
Orthanc reported; every committed series searchable within 2 s; memory flat over 20,000
instances.

Everything is removed at the end, also on Ctrl-C or SIGTERM: processes (by pid), temp data,
the bench bucket, queues, index, the series sent to Orthanc.

Usage: ``python bench/ingest_bench.py [--instances 2000] [--series 8] [--processes 2] [--repeat 1]
[--memory 0] [--targets storescp,orthanc,nps] [--associations 1,4] [--profile DIR]``

``--profile DIR`` runs the receiver under cProfile on thread CPU time (one profile per thread,
merged per process, written to DIR as ``receiver-<pid>.prof`` and ``.txt`` when it stops); it
slows the receiver down about 4x, so rates from such a run are not results. ``--keep-logs DIR``
keeps the NPS processes' and the senders' logs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for tests.dicom.factory

from pydicom.uid import generate_uid  # noqa: E402

from nps.broker import topology  # noqa: E402
from nps.config import Settings, default_cache, load_settings  # noqa: E402
from nps.hashing import series_dataset_id  # noqa: E402
from nps.index import DatasetIndex  # noqa: E402
from nps.layout import MANIFEST_PATH  # noqa: E402
from nps.store.minio import MinioStore  # noqa: E402
from tests.dicom.factory import make_instance  # noqa: E402

# dcmtk's programs by absolute path: pynetdicom installs Python apps with the same names into
# the virtualenv's bin, which `make bench` puts first on PATH.
STORESCU = "/usr/bin/storescu"
STORESCP = "/usr/bin/storescp"
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")
POLL_S = 0.1
E2E_TARGET = 200.0
LATENCY_TARGET_S = 2.0
FLAT_FRACTION = 0.10
PROFILE_ENV = "NPS_INGEST_BENCH_PROFILE"


def log(msg: str) -> None:
    print(f"[ingest_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo(port: int, aet: str) -> bool:
    """One C-ECHO (pynetdicom as the sender): is a DICOM SCP answering on ``port``?"""
    import logging

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    ae = AE(ae_title="BENCHECHO")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        assoc.release()


def wait_for_echo(port: int, aet: str, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:4]} exited with {proc.returncode}")
        if echo(port, aet):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing answered C-ECHO on port {port} within {timeout}s")


def stop(procs: list[subprocess.Popen[bytes]], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL after ``timeout``: only these processes, by pid."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(f"pid {p.pid} did not stop on SIGTERM; killing it")
            p.kill()
            p.wait(timeout=10)


# ---- /proc -------------------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: list[int], reaped: bool = False) -> float:
    """CPU seconds of these processes (``reaped``: and of their children they have waited for)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            total += sum(int(f) for f in fields[11:15 if reaped else 13])  # utime, stime (cutime, cstime)
    return total / TICKS


def service_pids() -> dict[str, int]:
    """The stack's services (pid files written by infra/stack.sh), for CPU accounting only."""
    pids = {}
    for name in ("minio", "rabbitmq", "elasticsearch", "orthanc"):
        with contextlib.suppress(OSError, ValueError):
            pids[name] = int((default_cache() / "run" / f"{name}.pid").read_text().split()[0])
    return pids


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Meter:
    """CPU seconds used by groups of processes, by this script's reaped children (the senders),
    and how busy the whole machine was, between construction and ``read``."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.cpu = {k: cpu_s(v) for k, v in groups.items()}
        self.children = children_cpu_s()
        self.machine = machine_jiffies()

    def read(self) -> dict[str, Any]:
        busy, total = machine_jiffies()
        return {"cpu_s": {k: round(cpu_s(v) - self.cpu[k], 2) for k, v in self.groups.items()},
                "reaped_children_cpu_s": round(children_cpu_s() - self.children, 2),
                "machine_busy": round((busy - self.machine[0]) / max(1, total - self.machine[1]), 3)}


# ---- data --------------------------------------------------------------------------------------
@dataclass
class Batch:
    """Fresh instances on disk and how they are split over associations."""

    root: Path
    series: dict[str, int]  # SeriesInstanceUID -> instances
    lanes: list[list[str]]  # per association: file names (relative to root) in sending order

    @property
    def count(self) -> int:
        return sum(self.series.values())

    @property
    def dataset_ids(self) -> dict[str, int]:
        return {series_dataset_id(uid): n for uid, n in self.series.items()}

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def generate(root: Path, instances: int, n_series: int, size: int, associations: int) -> Batch:
    """``instances`` new instances in ``n_series`` new series of one new study; instance i of
    every series goes on association i mod ``associations``, series after series."""
    root.mkdir(parents=True)
    study = generate_uid()
    series: dict[str, int] = {}
    lanes: list[list[str]] = [[] for _ in range(associations)]
    for s in range(n_series):
        count = instances // n_series + (1 if s < instances % n_series else 0)
        uid = generate_uid()
        series[uid] = count
        for i in range(count):
            name = f"s{s:03d}_i{i:05d}.dcm"
            make_instance(root / name, uid, number=i + 1, size=size, StudyInstanceUID=study, PatientID="NPSBENCH",
                          PatientName="Bench^Ingest", SeriesNumber=s + 1, SeriesDescription=f"bench_{s}")
            lanes[i % associations].append(name)
    return Batch(root, series, lanes)


def send(batch: Batch, port: int, called: str, calling: str, logs: Path) -> tuple[float, float]:
    """One storescu per lane, in parallel; (monotonic, wall) start. Raises if a sender failed."""
    procs: list[subprocess.Popen[bytes]] = []
    files = []
    t0, wall0 = time.monotonic(), time.time()
    try:
        for n, lane in enumerate(batch.lanes):
            err = (logs / f"storescu-{calling}-{port}-{n}.log").open("wb")
            files.append(err)
            procs.append(subprocess.Popen([STORESCU, "-aet", calling, "-aec", called, "127.0.0.1", str(port), *lane],
                                          cwd=batch.root, env=DCMTK_ENV, stdout=err, stderr=subprocess.STDOUT))
        codes = [p.wait() for p in procs]
    finally:
        stop(procs, timeout=5)
        for f in files:
            f.close()
    if any(codes):
        detail = " | ".join((logs / f"storescu-{calling}-{port}-{n}.log").read_text(errors="replace")[-500:]
                            for n, c in enumerate(codes) if c)
        raise RuntimeError(f"storescu exited with {codes}: {detail}")
    return t0, wall0


# ---- Orthanc -----------------------------------------------------------------------------------
class Orthanc:
    def __init__(self) -> None:
        env = self._stack_env()
        self.url = env["NPS_ORTHANC_URL"]
        self.port = int(env["NPS_ORTHANC_DICOM_PORT"])
        self.aet = env["NPS_ORTHANC_AET"]
        token = base64.b64encode(f"{env['NPS_ORTHANC_USER']}:{env['NPS_ORTHANC_PASSWORD']}".encode()).decode()
        self._auth = f"Basic {token}"

    @staticmethod
    def _stack_env() -> dict[str, str]:
        pairs = (line.split("=", 1) for line in (default_cache() / "stack.env").read_text().splitlines()
                 if "=" in line and not line.startswith("#"))
        return {**dict(pairs), **{k: v for k, v in os.environ.items() if k.startswith("NPS_ORTHANC_")}}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", self._auth)
        with urllib.request.urlopen(request, timeout=120) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def series_ids(self, uid: str) -> list[str]:
        return list(self.call("POST", "/tools/find", {"Level": "Series", "Query": {"SeriesInstanceUID": uid}}))

    def count_and_delete(self, series: dict[str, int]) -> int:
        """Instances Orthanc holds of these series; then deletes them."""
        stored = 0
        for uid in series:
            for sid in self.series_ids(uid):
                stored += len(self.call("GET", f"/series/{sid}")["Instances"])
                self.call("DELETE", f"/series/{sid}")
        return stored


# ---- NPS ---------------------------------------------------------------------------------------
class Pipeline:
    """The NPS receiver, assembler and indexer as subprocesses of this script."""

    def __init__(self, settings: Settings, processes: int, logs: Path, profile: Path | None) -> None:
        self.settings = settings
        self.processes = processes
        self.logs = logs
        self.profile = profile
        self.port = free_port()
        self.env = dict(os.environ, NPS_MINIO_BUCKET=settings.minio_bucket, NPS_QUEUE_PREFIX=settings.queue_prefix,
                        NPS_SERIES_STABLE_SECONDS=str(settings.series_stable_seconds),
                        NPS_DICOM_PORT=str(self.port), NPS_DICOM_BIND="127.0.0.1")
        self.receiver: subprocess.Popen[bytes] | None = None
        self.assembler: subprocess.Popen[bytes] | None = None
        self.indexer: subprocess.Popen[bytes] | None = None
        self.receiver_children: list[int] = []

    def _start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        out = (self.logs / f"{name}-{len(list(self.logs.iterdir()))}.log").open("wb")
        try:
            return subprocess.Popen([sys.executable, *args], env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()

    def start(self) -> None:
        self.assembler = self._start("assemble", ["-m", "nps", "worker", "assemble"], self.env)
        self.indexer = self._start("index", ["-m", "nps", "worker", "index"], self.env)
        args = ["receiver", "--processes", str(self.processes), "--port", str(self.port)]
        if self.profile is not None:
            self.profile.mkdir(parents=True, exist_ok=True)
            self.receiver = self._start("receiver", [__file__, "--_profiled-receiver", *args],
                                        dict(self.env, **{PROFILE_ENV: str(self.profile)}))
        else:
            self.receiver = self._start("receiver", ["-m", "nps", *args], self.env)
        wait_for_echo(self.port, self.settings.dicom_aet, self.procs)
        deadline = time.monotonic() + 10
        while len(self.receiver_children) < (self.processes if self.processes > 1 else 0):
            self.receiver_children = children(self.receiver.pid)
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        log(f"NPS receiver pid {self.receiver.pid} (children {self.receiver_children}) on port {self.port}, "
            f"assembler {self.assembler.pid}, indexer {self.indexer.pid}")

    @property
    def procs(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in (self.receiver, self.assembler, self.indexer) if p is not None]

    def roles(self) -> dict[str, list[int]]:
        assert self.receiver and self.assembler and self.indexer
        return {"receiver": [self.receiver.pid, *self.receiver_children], "assembler": [self.assembler.pid],
                "indexer": [self.indexer.pid]}

    def stop(self) -> None:
        if self.receiver is not None:
            stop([self.receiver], timeout=30)
            for pid in self.receiver_children:  # orphans of a killed parent, if still ours
                with contextlib.suppress(OSError):
                    if "receiver" in Path(f"/proc/{pid}/cmdline").read_text():
                        os.kill(pid, signal.SIGKILL)
            spool = self.settings.cache / "receiver"
            for pid in [self.receiver.pid, *self.receiver_children]:
                shutil.rmtree(spool / str(pid), ignore_errors=True)
                with contextlib.suppress(OSError):
                    (spool / f"{pid}.lock").unlink()
        stop([p for p in (self.assembler, self.indexer) if p is not None], timeout=30)
        self.receiver = self.assembler = self.indexer = None
        self.receiver_children = []


class Watcher(threading.Thread):
    """Polls Elasticsearch for the expected series; records when each is first found with all
    its instances (monotonic and wall clock), and how many instances are searchable."""

    def __init__(self, index: DatasetIndex, expected: dict[str, int], interval: float = POLL_S) -> None:
        super().__init__(daemon=True)
        self.index = index
        self.expected = expected
        self.interval = interval
        self.seen: dict[str, tuple[float, float, int]] = {}  # id -> (monotonic, wall, revision)
        self.searchable = 0
        self.errors = 0
        self.halt = threading.Event()

    def run(self) -> None:
        counts: dict[str, int] = {}
        while not self.halt.is_set() and len(self.seen) < len(self.expected):
            pending = [i for i in self.expected if i not in self.seen]
            try:
                result = self.index.es.search(index=self.index.name, query={"ids": {"values": pending}},
                                              size=len(pending), source_includes=["number_of_instances", "revision"])
                mono, wall = time.monotonic(), time.time()
                for hit in result["hits"]["hits"]:
                    doc = hit["_source"]
                    counts[hit["_id"]] = int(doc.get("number_of_instances") or 0)
                    if counts[hit["_id"]] >= self.expected[hit["_id"]]:
                        self.seen[hit["_id"]] = (mono, wall, int(doc.get("revision") or 0))
                self.searchable = sum(counts.values())
            except Exception:  # the index may not exist yet; ES may be slow: try again
                self.errors += 1
            self.halt.wait(self.interval)

    def wait(self, timeout: float) -> bool:
        self.join(timeout)
        self.halt.set()
        return len(self.seen) == len(self.expected)


@dataclass
class Runs:
    """Per (target, associations): the runs' figures."""

    rates: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def add(self, target: str, assocs: int, rate: float) -> None:
        self.rates.setdefault((target, assocs), []).append(rate)

    def median(self, target: str, assocs: int) -> float | None:
        values = self.rates.get((target, assocs))
        return round(statistics.median(values), 2) if values else None


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        run_id = uuid.uuid4().hex[:8]
        self.settings = load_settings(minio_bucket=f"nps-ingest-bench-{run_id}", queue_prefix=f"bench{run_id}",
                                      series_stable_seconds=args.stable)
        self.tmp = Path(tempfile.mkdtemp(prefix="nps-ingest-bench-", dir="/var/tmp"))
        self.logs = self.tmp / "logs"
        self.logs.mkdir()
        self.store = MinioStore(self.settings)
        self.store.ensure_bucket()
        self.index = DatasetIndex(self.settings.es_url, self.settings.queue_prefix)
        self.pipeline: Pipeline | None = None
        self.orthanc_pending: dict[str, int] = {}
        self.runs = Runs()
        self.services = service_pids()
        self._n = 0

    def batch(self, instances: int, n_series: int, size: int, assocs: int) -> Batch:
        self._n += 1
        t = time.monotonic()
        batch = generate(self.tmp / f"data{self._n}", instances, n_series, size, assocs)
        log(f"  generated {batch.count} instances in {len(batch.series)} series ({time.monotonic() - t:.1f} s)")
        return batch

    # ---- targets ------------------------------------------------------------------------------
    def run_storescp(self, assocs: int, instances: int, warmup: bool = False) -> dict[str, Any]:
        out = self.tmp / f"scp{self._n}"
        out.mkdir()
        port = free_port()
        args = [STORESCP, "-aet", "SCP", "--output-directory", str(out), *(["--fork"] if assocs > 1 else []), str(port)]
        err = (self.logs / f"storescp-{port}.log").open("wb")
        proc = subprocess.Popen(args, env=DCMTK_ENV, stdout=err, stderr=subprocess.STDOUT)
        err.close()
        batch = self.batch(instances, 1 if warmup else self.args.series, self.args.size, assocs)
        try:
            wait_for_echo(port, "SCP", [proc])
            meter, scp0 = Meter({}), cpu_s([proc.pid], reaped=True)
            t0, _ = send(batch, port, "SCP", "BENCH", self.logs)
            seconds = time.monotonic() - t0
            used = meter.read()
            time.sleep(0.2)  # let storescp reap its forked children
            scp_cpu = cpu_s([proc.pid], reaped=True) - scp0
        finally:
            stop([proc])
            batch.remove()
        stored = sum(1 for _ in out.iterdir())
        shutil.rmtree(out, ignore_errors=True)
        if stored != batch.count:
            raise RuntimeError(f"storescp stored {stored} of {batch.count} instances")
        return {"seconds": round(seconds, 3), "per_s": round(batch.count / seconds, 1), "fork": assocs > 1,
                "server_cpu_s": round(scp_cpu, 2), "server_cpu_ms_per_instance": round(1000 * scp_cpu / batch.count, 2),
                "storescu_cpu_s": used["reaped_children_cpu_s"],
                "machine_busy_while_sending": used["machine_busy"]}

    def run_orthanc(self, assocs: int, instances: int, warmup: bool = False) -> dict[str, Any]:
        orthanc = Orthanc()
        batch = self.batch(instances, 1 if warmup else self.args.series, self.args.size, assocs)
        self.orthanc_pending.update(batch.series)
        pid = self.services.get("orthanc")
        try:
            meter = Meter({"orthanc": descendants(pid) if pid else []})
            t0, _ = send(batch, orthanc.port, orthanc.aet, "NOROUTE", self.logs)
            seconds = time.monotonic() - t0
            used = meter.read()
        finally:
            batch.remove()
        stored = orthanc.count_and_delete(batch.series)
        for uid in batch.series:
            self.orthanc_pending.pop(uid, None)
        if stored != batch.count:
            raise RuntimeError(f"Orthanc stored {stored} of {batch.count} instances")
        return {"seconds": round(seconds, 3), "per_s": round(batch.count / seconds, 1),
                "server_cpu_s": used["cpu_s"]["orthanc"] if pid else None,
                "server_cpu_ms_per_instance": round(1000 * used["cpu_s"]["orthanc"] / batch.count, 2) if pid else None,
                "storescu_cpu_s": used["reaped_children_cpu_s"], "machine_busy_while_sending": used["machine_busy"]}

    def run_nps(self, assocs: int, instances: int, n_series: int, size: int,
                memory: bool = False) -> dict[str, Any]:
        assert self.pipeline is not None
        batch = self.batch(instances, n_series, size, assocs)
        roles = self.pipeline.roles()
        groups = {**roles, **{k: descendants(v) for k, v in self.services.items() if k != "orthanc"}}
        groups |= {f"receiver_{n}": [pid] for n, pid in enumerate(roles["receiver"][1:])}
        watcher = Watcher(self.index, batch.dataset_ids, interval=POLL_S)
        sampler = MemorySampler(roles, watcher) if memory else None
        meter = Meter(groups)
        try:
            watcher.start()
            if sampler:
                sampler.start()
            t0, wall0 = send(batch, self.pipeline.port, self.settings.dicom_aet, "BENCH", self.logs)
            sent = time.monotonic() - t0
            used = meter.read()
            complete = watcher.wait(timeout=max(120.0, 10 * sent))
            if sampler:
                time.sleep(1.5)  # one more sample once everything is in
                sampler.halt.set()
                sampler.join()
        finally:
            watcher.halt.set()
            batch.remove()
        if not complete:
            missing = {i: n for i, n in batch.dataset_ids.items() if i not in watcher.seen}
            raise RuntimeError(f"{len(missing)} series not searchable in time (e.g. {next(iter(missing))})")
        searchable = max(m for m, _, _ in watcher.seen.values()) - t0
        latencies, revisions = self.latencies(watcher)
        result: dict[str, Any] = {
            "sent_s": round(sent, 3), "sent_per_s": round(batch.count / sent, 1),
            "searchable_s": round(searchable, 3), "searchable_per_s": round(batch.count / searchable, 1),
            "latency_p50_s": round(statistics.median(latencies), 3), "latency_p95_s": round(pct(latencies, 0.95), 3),
            "latency_max_s": round(max(latencies), 3),
            "latency_over_2s": sum(1 for x in latencies if x > LATENCY_TARGET_S),
            "series_amended": sum(1 for r in revisions if r > 1),
            "cpu_s_while_sending": used["cpu_s"], "storescu_cpu_s": used["reaped_children_cpu_s"],
            "server_cpu_ms_per_instance": round(1000 * sum(v for k, v in used["cpu_s"].items()
                                                           if not k.startswith("receiver_")) / batch.count, 2),
            "machine_busy_while_sending": used["machine_busy"],
            "first_sighting_after_start_s": round(min(w for _, w, _ in watcher.seen.values()) - wall0, 3),
        }
        if sampler:
            result["memory"] = sampler.report(batch.count)
        return result | {"_latencies": latencies}

    def latencies(self, watcher: Watcher) -> tuple[list[float], list[int]]:
        out, revisions = [], []
        for dataset_id, (_, wall, revision) in watcher.seen.items():
            key = self.store.key(dataset_id, MANIFEST_PATH)
            # From a listing: its times have milliseconds, a HEAD's Last-Modified only seconds.
            info = next(iter(self.store.list_objects(key)), None)
            assert info is not None and info.modified is not None, key
            out.append(wall - info.modified.timestamp())
            revisions.append(revision)
        return out, revisions

    # ---- cases --------------------------------------------------------------------------------
    def ingest(self) -> None:
        a = self.args
        targets = a.targets.split(",")
        assoc_list = [int(x) for x in a.associations.split(",")]
        if "nps" in targets:
            self.pipeline = Pipeline(self.settings, a.processes, self.logs, a.profile)
            self.pipeline.start()
        log("warm-up: 20 instances to each target")
        for target in targets:
            if target == "storescp":
                self.run_storescp(1, 20, warmup=True)
            elif target == "orthanc":
                self.run_orthanc(1, 20, warmup=True)
            else:
                self.run_nps(1, 20, 1, a.size)
        for rep in range(a.repeat):
            for assocs in assoc_list:
                for target in targets:
                    log(f"run {rep + 1}/{a.repeat}: {target}, {assocs} association(s), {a.instances} instances")
                    common = {"case": "ingest", "target": target, "associations": assocs, "instances": a.instances,
                              "series": a.series, "image": f"{a.size}x{a.size}x16", "run": rep + 1}
                    if target in ("storescp", "orthanc"):
                        r = self.run_storescp(assocs, a.instances) if target == "storescp" else \
                            self.run_orthanc(assocs, a.instances)
                        self.runs.add(target, assocs, r["per_s"])
                        if r["server_cpu_ms_per_instance"] is not None:
                            self.runs.add(f"{target}_cpu_ms", assocs, r["server_cpu_ms_per_instance"])
                        emit(**common, **r)
                    else:
                        r = self.run_nps(assocs, a.instances, a.series, a.size)
                        self.runs.add("nps_sent", assocs, r["sent_per_s"])
                        self.runs.add("nps_searchable", assocs, r["searchable_per_s"])
                        self.runs.add("nps_cpu_ms", assocs, r["server_cpu_ms_per_instance"])
                        self.runs.latencies += r.pop("_latencies")
                        emit(**common, processes=a.processes, stable_seconds=a.stable, **r)
                    log(f"  -> {self.runs.rates[(target if target != 'nps' else 'nps_searchable', assocs)][-1]:.1f}/s")
        if self.pipeline is not None:
            self.pipeline.stop()
            self.pipeline = None
        self.summary_ingest(assoc_list)

    def summary_ingest(self, assoc_list: list[int]) -> None:
        summary: dict[str, Any] = {"case": "ingest", "target": "summary", "basis": "median of runs",
                                   "repeat": self.args.repeat, "processes": self.args.processes,
                                   "stable_seconds": self.args.stable}
        for assocs in assoc_list:
            for target in ("storescp", "orthanc", "nps_sent", "nps_searchable"):
                summary[f"{target}_{assocs}_per_s"] = self.runs.median(target, assocs)
            for target in ("storescp", "orthanc", "nps"):
                summary[f"{target}_{assocs}_cpu_ms_per_instance"] = self.runs.median(f"{target}_cpu_ms", assocs)
            orthanc = self.runs.median("orthanc", assocs)
            for target in ("nps_sent", "nps_searchable"):
                nps = self.runs.median(target, assocs)
                if nps and orthanc:
                    summary[f"{target}_over_orthanc_{assocs}"] = round(nps / orthanc, 3)
        lat = self.runs.latencies
        if lat:
            summary |= {"latency_series": len(lat), "latency_p50_s": round(statistics.median(lat), 3),
                        "latency_p95_s": round(pct(lat, 0.95), 3), "latency_max_s": round(max(lat), 3),
                        "latency_over_2s": sum(1 for x in lat if x > LATENCY_TARGET_S),
                        "target_latency_le_2s": max(lat) <= LATENCY_TARGET_S}
        e2e4 = self.runs.median("nps_searchable", 4)
        if e2e4 is not None:
            summary["target_e2e_4_ge_200"] = e2e4 >= E2E_TARGET
        emit(**{k: v for k, v in summary.items() if v is not None})

    def memory(self, n: int) -> None:
        a = self.args
        log(f"memory: {n} instances of {a.memory_size}x{a.memory_size} in {a.memory_series} series, "
            "4 associations, fresh NPS processes")
        self.pipeline = Pipeline(self.settings, a.processes, self.logs, None)
        self.pipeline.start()
        self.run_nps(1, 20, 1, a.memory_size)  # warm-up: first connections, index created
        r = self.run_nps(4, n, a.memory_series, a.memory_size, memory=True)
        r.pop("_latencies")
        self.pipeline.stop()
        self.pipeline = None
        emit(case="memory", instances=n, series=a.memory_series, image=f"{a.memory_size}x{a.memory_size}x16",
             associations=4, processes=a.processes, stable_seconds=a.stable, **r)

    def cleanup(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop()
        if self.orthanc_pending:
            with contextlib.suppress(Exception):
                Orthanc().count_and_delete(self.orthanc_pending)
        if self.args.keep_logs:
            log(f"logs kept in {self.args.keep_logs}")
            shutil.copytree(self.logs, self.args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            self.store.remove_bucket()
        finally:
            topology(self.settings).delete()
            self.index.drop()


class MemorySampler(threading.Thread):
    """Every second: VmRSS of each role's processes and the searchable instance count."""

    def __init__(self, roles: dict[str, list[int]], watcher: Watcher) -> None:
        super().__init__(daemon=True)
        self.roles = roles
        self.watcher = watcher
        self.samples: list[tuple[float, int, dict[str, int]]] = []  # (t, searchable, role -> KiB)
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        parent = self.roles["receiver"][0]
        pids = {**self.roles, "receiver": descendants(parent)}
        self.samples.append((time.monotonic() - self.t0, self.watcher.searchable,
                             {role: sum(rss_kib(p) for p in ps) for role, ps in pids.items()}))

    def run(self) -> None:
        self.sample()
        while not self.halt.wait(1.0):
            self.sample()
        self.sample()

    def report(self, n: int) -> dict[str, Any]:
        def at(fraction: float) -> tuple[float, int, dict[str, int]]:
            return next((s for s in self.samples if s[1] >= fraction * n), self.samples[-1])

        points = {"start": self.samples[0], **{f"{int(q * 100)}%": at(q) for q in (0.25, 0.5, 0.75, 1.0)}}
        mib = {name: {"t_s": round(t, 1), **{r: round(v / 1024, 1) for r, v in rss.items()},
                      "total": round(sum(rss.values()) / 1024, 1)} for name, (t, _, rss) in points.items()}
        peak = {r: round(max(s[2][r] for s in self.samples) / 1024, 1) for r in self.samples[0][2]}
        peak["total"] = round(max(sum(s[2].values()) for s in self.samples) / 1024, 1)
        flat = {}
        for role in [*self.samples[0][2], "total"]:
            growth = mib["100%"][role] - mib["75%"][role]
            flat[role] = growth < FLAT_FRACTION * mib["25%"][role]
        return {"rss_mib": mib, "peak_mib": peak, "flat": flat, "samples": len(self.samples),
                "target_flat": flat["total"]}


# ---- profiled receiver (bench only) --------------------------------------------------------------
def profiled_receiver(argv: list[str]) -> int:
    """``nps receiver ...`` with every thread under cProfile; each receiving process writes its
    merged profile to $NPS_INGEST_BENCH_PROFILE/receiver-<pid>.prof (+ .txt) when it stops."""
    import cProfile
    import io
    import pstats

    import producers.receiver as receiver

    out = Path(os.environ[PROFILE_ENV])
    profiles: list[cProfile.Profile] = []
    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap_inner(self: threading.Thread) -> None:
        prof = cProfile.Profile(time.thread_time)  # CPU time: waits and GIL hand-offs excluded
        profiles.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    threading.Thread._bootstrap_inner = bootstrap_inner  # type: ignore[attr-defined]
    serve = receiver.serve

    def profiled_serve(*args: Any, **kwargs: Any) -> None:
        profiles.clear()  # a forked child keeps only its own threads' profiles
        main_prof = cProfile.Profile(time.thread_time)  # CPU time: waits and GIL hand-offs excluded
        main_prof.enable()
        try:
            serve(*args, **kwargs)
        finally:
            main_prof.disable()
            time.sleep(0.5)
            done = [p for p in [main_prof, *profiles] if p.getstats()]
            if done:
                stats = pstats.Stats(done[0])
                for p in done[1:]:
                    stats.add(p)
                stats.dump_stats(str(out / f"receiver-{os.getpid()}.prof"))
                text = io.StringIO()
                pstats.Stats(str(out / f"receiver-{os.getpid()}.prof"), stream=text).sort_stats(
                    "tottime").print_stats(40)
                pstats.Stats(str(out / f"receiver-{os.getpid()}.prof"), stream=text).sort_stats(
                    "cumulative").print_stats(60)
                (out / f"receiver-{os.getpid()}.txt").write_text(text.getvalue())

    receiver.serve = profiled_serve
    from nps.cli import main as nps_main

    sys.argv = ["nps", *argv]
    nps_main()
    return 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_profiled-receiver":
        return profiled_receiver(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=2000, help="instances per run (0: skip the ingest case)")
    parser.add_argument("--series", type=int, default=8, help="series per run")
    parser.add_argument("--size", type=int, default=128, help="image rows = columns (16-bit)")
    parser.add_argument("--processes", type=int, default=2, help="nps receiver --processes")
    parser.add_argument("--stable", type=float, default=1.0, help="NPS_SERIES_STABLE_SECONDS")
    parser.add_argument("--repeat", type=int, default=1, help="runs per target and association count")
    parser.add_argument("--targets", default="storescp,orthanc,nps", help="comma-separated subset")
    parser.add_argument("--associations", default="1,4", help="comma-separated association counts")
    parser.add_argument("--memory", type=int, nargs="?", const=20000, default=0,
                        help="instances for the memory case (--memory alone: 20000; 0: skip)")
    parser.add_argument("--memory-series", type=int, default=40)
    parser.add_argument("--memory-size", type=int, default=64)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the receiver, write profiles here")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the processes' logs here at the end")
    args = parser.parse_args()
    bench = Bench(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.instances:
            bench.ingest()
        if args.memory:
            bench.memory(args.memory)
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
