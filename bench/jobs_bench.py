#!/usr/bin/env python3
"""Job benchmarks, each side by side with its reference in the same run. JSON lines on stdout.

* ``overhead``: N no-op jobs, one at a time, from submit (request recorded and published,
  what ``nps submit`` does) until COMPLETE is visible in the job record (what ``nps status``
  reads), versus ``podman run --rm`` of the same image and command. Targets: p50 overhead
  over raw <= 0.5 s, p95 <= 1 s.
* ``throughput``: M no-op jobs submitted at once, completed by 1 and by 2 worker processes.
* ``staging``: a job on a fresh 1 GiB input (cold: staged from MinIO) versus ``mc cp`` of the
  same object, then a second job on the same input, which must download nothing; repeated
  (``--stage-repeat``, the staged copy removed in between, alternating which tool goes first),
  medians compared.

Workers are started by this script on a private queue prefix and bucket, and stopped (by pid)
at the end. Usage: ``python bench/jobs_bench.py [--overhead 50] [--throughput 200] [--stage-mib 1024]
[--stage-repeat 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from nps.broker import Publisher, topology
from nps.config import Settings, load_settings
from nps.engine import DockerEngine
from nps.jobs import records_for
from nps.jobs.records import JobRecords
from nps.jobs.submit import build_request, submit
from nps.store.minio import MinioStore
from schemas.dataset import DatasetRecord, UploadOrigin

REPO = Path(__file__).resolve().parents[1]
IMAGE = "localhost/nps/busybox:1"


def log(msg: str) -> None:
    print(f"[jobs_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Bench:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = MinioStore(settings)
        self.store.ensure_bucket()
        self.records: JobRecords = records_for(self.store)
        self.publisher = Publisher(topology(settings))
        self.image_id = DockerEngine(settings.docker_host).resolve_image(IMAGE)
        self.workers: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ, NPS_MINIO_BUCKET=settings.minio_bucket, NPS_QUEUE_PREFIX=settings.queue_prefix)

    def start_workers(self, n: int) -> None:
        for _ in range(n):
            self.workers.append(subprocess.Popen([sys.executable, "-m", "nps", "worker", "jobs", "-c", "1"],
                                                 env=self.env, cwd=REPO, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL))
        time.sleep(2.0)  # let them connect

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.wait(timeout=60)
            except subprocess.TimeoutExpired:
                w.kill()
        self.workers = []

    def submit(self, command: list[str], inputs: list[str] | None = None) -> str:
        request = build_request(self.store, self.image_id, command, inputs, None, None, 1.0, "256M", "10m",
                                False, 0, None)
        submit(self.store, self.records, self.publisher, request)
        return request.job_id

    def wait(self, job_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.records.history(job_id)
            if history and history[-1].state.value in ("COMPLETE", "FAILED", "CANCELLED"):
                return history[-1].state.value
            time.sleep(0.01)
        raise TimeoutError(job_id)

    # ---- cases ----------------------------------------------------------------------------------
    def overhead(self, n: int) -> None:
        log(f"overhead: {n} no-op jobs through one worker vs podman run --rm")
        self.start_workers(1)
        nonce = uuid.uuid4().hex[:8]
        nps: list[float] = []
        for i in range(n):
            t = time.monotonic()
            job = self.submit(["true", f"{nonce}-{i}"])
            assert self.wait(job) == "COMPLETE"
            nps.append(time.monotonic() - t)
        self.stop_workers()
        raw: list[float] = []
        conf = {"CONTAINERS_CONF": str(REPO / "infra" / "containers.conf")}
        for _ in range(n):
            t = time.monotonic()
            subprocess.run(["podman", "run", "--rm", "--network", "none", IMAGE, "true"], check=True,
                           env=dict(os.environ, **conf), stdout=subprocess.DEVNULL)
            raw.append(time.monotonic() - t)
        for tool, values in (("nps", nps), ("podman_run", raw)):
            emit(case="overhead", tool=tool, jobs=n, p50_s=round(statistics.median(values), 3),
                 p95_s=round(pct(values, 0.95), 3), mean_s=round(statistics.mean(values), 3))
        p50 = statistics.median(nps) - statistics.median(raw)
        p95 = pct(nps, 0.95) - pct(raw, 0.95)
        emit(case="overhead", tool="summary", p50_overhead_s=round(p50, 3), p95_overhead_s=round(p95, 3),
             target_p50_le_0_5=p50 <= 0.5, target_p95_le_1=p95 <= 1.0)

    def throughput(self, n: int) -> None:
        for workers in (1, 2):
            log(f"throughput: {n} no-op jobs, {workers} worker(s)")
            self.start_workers(workers)
            nonce = uuid.uuid4().hex[:8]
            t = time.monotonic()
            jobs = [self.submit(["true", f"{nonce}-{i}"]) for i in range(n)]
            states = [self.wait(j) for j in jobs]
            seconds = time.monotonic() - t
            self.stop_workers()
            emit(case="throughput", tool="nps", workers=workers, jobs=n, seconds=round(seconds, 2),
                 jobs_per_s=round(n / seconds, 2), complete=states.count("COMPLETE"))

    def staging(self, mib: int, repeat: int) -> None:
        log(f"staging: jobs on a fresh {mib} MiB input vs mc cp, {repeat} repetition(s)")
        tmp = Path(tempfile.mkdtemp(prefix="nps-jobs-bench-", dir="/var/tmp"))
        try:
            src = tmp / "src"
            src.mkdir()
            with (src / "big.bin").open("wb") as fh:
                for _ in range(mib):
                    fh.write(os.urandom(1024 * 1024))
            dataset = uuid.uuid4().hex + uuid.uuid4().hex[:8]
            self.store.put(dataset, src, DatasetRecord(id=dataset, origin=UploadOrigin(source=str(src))))
            entry = self.settings.stage_dir / f"{dataset}.r1"
            self.start_workers(1)
            colds: list[float] = []
            warms: list[float] = []
            mcs: list[float] = []
            for i in range(repeat):
                # Same starting point for every measurement: dirty pages flushed, the staged copy
                # gone; which tool goes first alternates, so neither always finds warmer caches.
                legs = ["mc", "nps"] if i % 2 == 0 else ["nps", "mc"]
                for leg in legs:
                    os.sync()
                    if leg == "mc":
                        mcs.append(self._mc_get(self.store.key(dataset, "big.bin"), tmp / "mc.bin"))
                        (tmp / "mc.bin").unlink()
                        continue
                    shutil.rmtree(entry, ignore_errors=True)  # no job holds it between runs
                    colds.append(self._staging_seconds(self.submit(["true", f"cold{i}"], [f"{dataset}:/in"])))
                    warms.append(self._staging_seconds(self.submit(["true", f"warm{i}"], [f"{dataset}:/in"])))
                log(f"  repetition {i + 1}: nps cold {colds[-1]:.3f} s, second job {warms[-1]:.3f} s, "
                    f"mc {mcs[-1]:.3f} s")
            self.stop_workers()
            cold, warm, mc_s = (statistics.median(v) for v in (colds, warms, mcs))
            size = mib * 1024 * 1024
            emit(case="staging", tool="nps_cold", seconds=round(cold, 3), MiB_per_s=round(mib / cold, 1),
                 runs_seconds=[round(c, 3) for c in colds])
            emit(case="staging", tool="nps_second_job", seconds=round(warm, 3), downloaded_bytes=0
                 if max(warms) < min(colds) / 10 else None, runs_seconds=[round(w, 3) for w in warms])
            emit(case="staging", tool="mc_cp", seconds=round(mc_s, 3), MiB_per_s=round(mib / mc_s, 1),
                 runs_seconds=[round(m, 3) for m in mcs])
            emit(case="staging", tool="summary", basis="median", cold_over_mc=round(mc_s / cold, 3),
                 target_cold_ge_0_80_mc=mc_s / cold >= 0.8, bytes=size, repeat=repeat)
            shutil.rmtree(entry, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _staging_seconds(self, job: str) -> float:
        assert self.wait(job) == "COMPLETE"
        history = self.records.history(job)
        staging = next(h.created_at for h in history if h.state.value == "STAGING")
        running = next(h.created_at for h in history if h.state.value == "RUNNING")
        return (running - staging).total_seconds()

    def _mc_get(self, key: str, dest: Path) -> float:
        mc = os.environ.get("NPS_MC") or str(self.settings.cache / "bin" / "mc")
        conf = dest.parent / "mc-config"
        secret = self.settings.minio_secret_key
        access = self.settings.minio_access_key
        assert secret is not None and access is not None
        subprocess.run([mc, "--config-dir", str(conf), "alias", "set", "b", f"http://{self.settings.minio_endpoint}",
                        access.get_secret_value(), secret.get_secret_value()], check=True, stdout=subprocess.DEVNULL)
        t = time.monotonic()
        subprocess.run([mc, "--config-dir", str(conf), "--quiet", "cp", f"b/{self.settings.minio_bucket}/{key}",
                        str(dest)], check=True, stdout=subprocess.DEVNULL)
        return time.monotonic() - t

    def cleanup(self) -> None:
        self.stop_workers()
        self.publisher.close()
        self.store.remove_bucket()
        topology(self.settings).delete()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--overhead", type=int, default=50, help="no-op jobs for the overhead case (0: skip)")
    parser.add_argument("--throughput", type=int, default=200, help="no-op jobs per worker count (0: skip)")
    parser.add_argument("--stage-mib", type=int, default=1024, help="input size for the staging case (0: skip)")
    parser.add_argument("--stage-repeat", type=int, default=3, help="cold staging runs (and mc runs), medians")
    args = parser.parse_args()
    run_id = uuid.uuid4().hex[:8]
    settings = load_settings(minio_bucket=f"nps-jobs-bench-{run_id}", queue_prefix=f"bench{run_id}")
    bench = Bench(settings)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.overhead:
            bench.overhead(args.overhead)
        if args.throughput:
            bench.throughput(args.throughput)
        if args.stage_mib:
            bench.staging(args.stage_mib, args.stage_repeat)
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
