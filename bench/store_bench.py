#!/usr/bin/env python3
"""Benchmark the NPS MinIO store against MinIO's own ``mc`` client, side by side, in one run.

Cases (same bytes for both tools, generated once under /var/tmp):

* ``large``: one file of ``--large-mib`` MiB (default 1024).
* ``small``: ``--small-count`` files of ``--small-kib`` KiB each (default 10,000 x 10 KiB).

For each case and each repetition: NPS ``put`` (fresh dataset id) and ``get``, then
``mc cp`` up (fresh prefix) and down. Results go to stdout as JSON lines, one per
(case, tool), then a final line with the nps/mc throughput ratios and whether the targets
are met:

* large put and get: NPS throughput >= 0.80 x mc's;
* small put and get: NPS >= 500 files/s and >= mc's files/s.

Ratios and targets use the median of the repetitions (best is reported as well).
Before each timed step the page cache's dirty data is written out (``sync``, not timed): MinIO
fdatasyncs every object, and on ext4 that waits for a journal commit which would otherwise also
carry the previous step's writeback (a 1 GiB download, 10,000 new files), so a step would pay
for whichever tool ran before it.
Progress goes to stderr. Everything the run creates (objects in the bench bucket, the
bucket itself if this run created it, temp dirs, the private mc config) is removed at the
end, also on failure or Ctrl-C / SIGTERM.

Usage::

    /var/cache/nps/venv/bin/python bench/store_bench.py [--large-mib 1024] [--small-count 10000]
        [--small-kib 10] [--only large|small] [--repeat N] [--bucket nps-bench]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nps.config import default_cache, load_settings
from nps.store.minio import MinioStore
from schemas.dataset import DatasetRecord, UploadOrigin

MiB = 1024 * 1024
WRITE_CHUNK = 16 * MiB
LARGE_RATIO_TARGET = 0.80
SMALL_FPS_TARGET = 500.0


def log(msg: str) -> None:
    print(f"[store_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=False), flush=True)


def read_stack_env() -> dict[str, str]:
    """``stack.env`` as a dict; ``NPS_*`` environment variables win, as in nps.config."""
    env: dict[str, str] = {}
    path = default_cache() / "stack.env"
    if path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                k, v = line.split("=", 1)
                env[k.strip()] = v.strip()
    env.update({k: v for k, v in os.environ.items() if k.startswith("NPS_")})
    return env


def find_server_pid(endpoint: str) -> int | None:
    """Pid of the local ``minio server`` listening on ``endpoint``, if it runs on this host (best effort)."""
    port = endpoint.rsplit(":", 1)[-1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if not words or not os.path.basename(words[0]).startswith("minio") or "server" not in words:
            continue
        if any(w.endswith(f":{port}") for w in words) or (port == "9000" and not any(":" in w for w in words)):
            return int(entry.name)
    return None


def proc_cpu_seconds(pid: int | None) -> float | None:
    """user + system CPU seconds of process ``pid`` (all threads), or None if unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nps_revision() -> str | None:
    """The commit of the nps code under test, with "+dirty" if nps/ or schemas/ have local changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", "nps", "schemas"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def new_dataset_id() -> str:
    return hashlib.sha1(os.urandom(16), usedforsecurity=False).hexdigest()


def tree_stats(root: Path) -> tuple[int, int]:
    """(file count, total bytes) of regular files under ``root``, ``.nps/`` excluded."""
    n = total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and ".nps" in dirnames:
            dirnames.remove(".nps")
        for name in filenames:
            n += 1
            total += os.stat(os.path.join(dirpath, name)).st_size
    return n, total


# ---- test data ------------------------------------------------------------------------------------
def make_large(dirpath: Path, mib: int) -> tuple[int, int]:
    dirpath.mkdir(parents=True)
    size = mib * MiB
    with (dirpath / "large.bin").open("wb") as fh:
        left = size
        while left:
            n = min(WRITE_CHUNK, left)
            fh.write(os.urandom(n))
            left -= n
    return 1, size


def make_small(dirpath: Path, count: int, kib: int) -> tuple[int, int]:
    dirpath.mkdir(parents=True)
    size = kib * 1024
    width = max(5, len(str(count - 1)))
    for i in range(count):
        (dirpath / f"f{i:0{width}d}.bin").write_bytes(os.urandom(size))
    return count, count * size


# ---- the run --------------------------------------------------------------------------------------
@dataclass
class Bench:
    args: argparse.Namespace
    store: MinioStore
    mc: str
    endpoint: str
    root: Path  # temp dir under /var/tmp: data, downloads, mc config
    run_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    dataset_ids: list[str] = field(default_factory=list)
    mc_prefixes: list[str] = field(default_factory=list)
    bucket_created: bool = False
    server_pid: int | None = None
    # (case, tool) -> [(wall seconds, client CPU seconds, server CPU seconds or None)]
    results: dict[tuple[str, str], list[tuple[float, float, float | None]]] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        return self.store.bucket

    @property
    def mc_config(self) -> Path:
        return self.root / "mc-config"

    # -- mc -----------------------------------------------------------------------------------------
    def mc_run(self, *argv: str) -> None:
        cmd = [self.mc, "--config-dir", str(self.mc_config), "--quiet", "--no-color", "--disable-pager", *argv]
        env = dict(os.environ, MC_CONFIG_DIR=str(self.mc_config))
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
        if proc.returncode != 0:
            # These commands carry no credentials (the alias holds them), so they can be shown.
            raise RuntimeError(f"mc failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.decode()[-2000:]}")

    def setup_mc(self, access_key: str, secret_key: str) -> None:
        self.mc_config.mkdir(mode=0o700)
        cmd = [self.mc, "--config-dir", str(self.mc_config), "--quiet", "--no-color", "alias", "set", "nps",
               f"http://{self.endpoint}", access_key, secret_key, "--api", "S3v4"]
        env = dict(os.environ, MC_CONFIG_DIR=str(self.mc_config))
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"mc alias set failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")

    # -- bucket / cleanup ---------------------------------------------------------------------------
    def ensure_bucket(self) -> None:
        self.bucket_created = self.store.ensure_bucket()
        log(f"bucket {self.bucket!r} {'created' if self.bucket_created else 'already existed'}")

    def remove_prefix(self, prefix: str) -> int:
        return self.store.delete_objects([o.key for o in self.store.list_objects(prefix)])

    def cleanup_objects(self) -> None:
        removed = 0
        for ds in self.dataset_ids:  # committed or partial: remove everything under the prefix
            try:
                removed += self.remove_prefix(self.store.key(ds))
            except Exception as exc:  # keep cleaning the rest
                log(f"cleanup of dataset {ds} failed: {exc}")
        for prefix in self.mc_prefixes:
            try:
                removed += self.remove_prefix(prefix)
            except Exception as exc:
                log(f"cleanup of {prefix} failed: {exc}")
        log(f"removed {removed} object(s) from bucket {self.bucket!r}")
        if self.bucket_created:
            try:
                left = next(iter(self.store.list_objects("")), None)
                if left is None:
                    self.store.remove_bucket()
                    log(f"removed bucket {self.bucket!r} (created by this run)")
                else:
                    log(f"bucket {self.bucket!r} not removed: it holds objects this run did not create")
            except Exception as exc:
                log(f"could not remove bucket {self.bucket!r}: {exc}")

    # -- measurements -------------------------------------------------------------------------------
    def measure(self, case: str, tool: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` and record wall time, client CPU (this process for nps, the mc child
        for mc) and MinIO server CPU (when the server runs on this host)."""
        flush = time.perf_counter()
        os.sync()  # untimed: the previous step's writeback is not this step's cost
        flush = time.perf_counter() - flush
        srv0 = proc_cpu_seconds(self.server_pid)
        cpu0 = time.process_time() if tool == "nps" else children_cpu_seconds()
        t0 = time.perf_counter()
        out = fn(*args)
        seconds = time.perf_counter() - t0
        cpu = (time.process_time() if tool == "nps" else children_cpu_seconds()) - cpu0
        srv1 = proc_cpu_seconds(self.server_pid)
        srv = srv1 - srv0 if srv0 is not None and srv1 is not None else None
        self.results.setdefault((case, tool), []).append((seconds, cpu, srv))
        files, nbytes = self.sizes[case.split("_")[0]]
        srv_txt = f"  server CPU {srv:6.2f} s" if srv is not None else ""
        srv_txt += f"  (sync before: {flush:.2f} s)"
        log(f"  {case:<10} {tool:<4} {seconds:8.3f} s  {nbytes / MiB / seconds:9.1f} MiB/s  "
            f"{files / seconds:9.1f} files/s  client CPU {cpu:6.2f} s{srv_txt}")
        return out

    def fresh_dir(self, name: str) -> Path:
        d = self.root / "dl" / f"{name}-{uuid.uuid4().hex[:8]}"
        d.parent.mkdir(exist_ok=True)
        return d

    def check_download(self, case: str, dest: Path, tool: str) -> None:
        expected = self.sizes[case]
        got = tree_stats(dest)
        if got != expected:
            raise RuntimeError(f"{tool} {case} download has {got} (files, bytes), expected {expected}")

    def nps_round(self, case: str, src: Path) -> None:
        ds = new_dataset_id()
        self.dataset_ids.append(ds)
        record = DatasetRecord(id=ds, origin=UploadOrigin(source=str(src)))
        manifest = self.measure(f"{case}_put", "nps", self.store.put, ds, src, record)
        if len(manifest.files) != self.sizes[case][0] + 1:  # + .nps/dataset.json
            raise RuntimeError(f"nps put stored {len(manifest.files)} files, expected {self.sizes[case][0] + 1}")

        dest = self.fresh_dir(f"nps-{case}")
        self.measure(f"{case}_get", "nps", self.store.get, ds, dest)
        self.check_download(case, dest, "nps")
        shutil.rmtree(dest)

    def mc_round(self, case: str, src: Path) -> None:
        prefix = f"bench-mc/{self.run_tag}/{case}-{uuid.uuid4().hex[:8]}/"
        self.mc_prefixes.append(prefix)
        remote = f"nps/{self.bucket}/{prefix}"
        dest = self.fresh_dir(f"mc-{case}")
        if case == "large":
            self.measure(f"{case}_put", "mc", self.mc_run, "cp", str(src / "large.bin"), f"{remote}large.bin")
            dest.mkdir()
            self.measure(f"{case}_get", "mc", self.mc_run, "cp", f"{remote}large.bin", str(dest / "large.bin"))
        else:
            self.measure(f"{case}_put", "mc", self.mc_run, "cp", "--recursive", f"{src}/", remote)
            dest.mkdir()
            self.measure(f"{case}_get", "mc", self.mc_run, "cp", "--recursive", remote, f"{dest}/")
        self.check_download(case, dest, "mc")
        shutil.rmtree(dest)

    def run_case(self, case: str, src: Path) -> None:
        log(f"case {case}: {self.sizes[case][0]} file(s), {self.sizes[case][1] / MiB:.1f} MiB, "
            f"{self.args.repeat} repetition(s)")
        for i in range(self.args.repeat):
            log(f" repetition {i + 1}/{self.args.repeat}")
            # Alternate which tool goes first so neither always gets the warmer caches.
            order = (self.nps_round, self.mc_round) if i % 2 == 0 else (self.mc_round, self.nps_round)
            for fn in order:
                fn(case, src)

    # -- report -------------------------------------------------------------------------------------
    def report(self) -> None:
        summary: dict[tuple[str, str], dict[str, Any]] = {}
        for case in ("large", "small"):
            if case not in self.sizes:
                continue
            files, nbytes = self.sizes[case]
            for op in ("put", "get"):
                for tool in ("nps", "mc"):
                    measured = self.results.get((f"{case}_{op}", tool))
                    if not measured:
                        continue
                    runs = [m[0] for m in measured]
                    best, med = min(runs), statistics.median(runs)
                    cpus = [m[1] for m in measured]
                    srvs = [m[2] for m in measured if m[2] is not None]
                    row = {
                        "case": f"{case}_{op}", "tool": tool,
                        "seconds": round(best, 4), "seconds_median": round(med, 4),
                        "bytes": nbytes, "files": files,
                        "MiB_per_s": round(nbytes / MiB / best, 2),
                        "MiB_per_s_median": round(nbytes / MiB / med, 2),
                        "files_per_s": round(files / best, 2),
                        "files_per_s_median": round(files / med, 2),
                        "repeat": len(runs), "runs_seconds": [round(r, 4) for r in runs],
                        # CPU seconds used while measuring (medians): the client (nps: this Python
                        # process, all threads; mc: the mc child) and the MinIO server process.
                        "client_cpu_s": round(statistics.median(cpus), 3),
                        "server_cpu_s": round(statistics.median(srvs), 3) if srvs else None,
                    }
                    summary[(f"{case}_{op}", tool)] = row
                    emit(row)

        ratios: dict[str, float] = {}
        ratios_best: dict[str, float] = {}
        targets: dict[str, bool] = {}
        for name in ("large_put", "large_get", "small_put", "small_get"):
            nps, mc = summary.get((name, "nps")), summary.get((name, "mc"))
            if not nps or not mc:
                continue
            # Same bytes and files for both tools, so any throughput gives the same ratio.
            ratios[name] = round(mc["seconds_median"] / nps["seconds_median"], 3)
            ratios_best[name] = round(mc["seconds"] / nps["seconds"], 3)
            if name.startswith("large"):
                targets[f"{name}_ge_{LARGE_RATIO_TARGET:.2f}x_mc"] = ratios[name] >= LARGE_RATIO_TARGET
            else:
                targets[f"{name}_ge_{SMALL_FPS_TARGET:.0f}_files_per_s"] = (
                    nps["files_per_s_median"] >= SMALL_FPS_TARGET)
                targets[f"{name}_ge_mc_files_per_s"] = ratios[name] >= 1.0
        emit({
            "case": "summary",
            "ratio_basis": "median",
            "nps_over_mc_throughput": ratios,
            "nps_over_mc_throughput_best": ratios_best,
            "targets": targets,
            "all_targets_met": bool(targets) and all(targets.values()),
            "params": {"large_mib": self.args.large_mib, "small_count": self.args.small_count,
                       "small_kib": self.args.small_kib, "only": self.args.only, "repeat": self.args.repeat,
                       "bucket": self.bucket, "transfer_workers": self.store.workers,
                       "part_size_mib": self.store.part_size // MiB, "cpus": os.cpu_count(),
                       "server_pid_found": self.server_pid is not None, "nps_revision": nps_revision()},
        })


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--large-mib", type=int, default=1024, help="size of the large file in MiB (default 1024)")
    p.add_argument("--small-count", type=int, default=10000, help="number of small files (default 10000)")
    p.add_argument("--small-kib", type=int, default=10, help="size of each small file in KiB (default 10)")
    p.add_argument("--only", choices=("large", "small"), help="run only one case")
    p.add_argument("--repeat", type=int, default=1, help="repetitions per tool and case (default 1)")
    p.add_argument("--bucket", default="nps-bench", help="dedicated bucket (default nps-bench)")
    p.add_argument("--tmp", default="/var/tmp", help="where to create the temp directory (default /var/tmp)")
    args = p.parse_args(argv)
    for name in ("large_mib", "small_count", "small_kib", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    env = read_stack_env()
    mc = env.get("NPS_MC") or shutil.which("mc")
    if not mc or not os.access(mc, os.X_OK):
        log("no mc binary: set NPS_MC (stack.env) or put mc on PATH")
        return 2
    settings = load_settings(minio_bucket=args.bucket)
    assert settings.minio_access_key is not None and settings.minio_secret_key is not None
    store = MinioStore(settings)

    root = Path(tempfile.mkdtemp(prefix="nps-store-bench-", dir=args.tmp))
    bench = Bench(args, store, mc, settings.minio_endpoint, root, server_pid=find_server_pid(settings.minio_endpoint))
    log(f"temp dir {root}; endpoint {settings.minio_endpoint}; bucket {args.bucket}; mc {mc}; "
        f"nps workers {store.workers}, part size {store.part_size // MiB} MiB")
    rc = 1
    try:
        bench.setup_mc(settings.minio_access_key.get_secret_value(), settings.minio_secret_key.get_secret_value())
        bench.ensure_bucket()
        cases = [args.only] if args.only else ["large", "small"]
        data: dict[str, Path] = {}
        for case in cases:
            t0 = time.perf_counter()
            if case == "large":
                data[case] = root / "data-large"
                bench.sizes[case] = make_large(data[case], args.large_mib)
            else:
                data[case] = root / "data-small"
                bench.sizes[case] = make_small(data[case], args.small_count, args.small_kib)
            log(f"generated {case} data in {time.perf_counter() - t0:.1f} s: {bench.sizes[case][0]} file(s), "
                f"{bench.sizes[case][1] / MiB:.1f} MiB")
        for case in cases:
            bench.run_case(case, data[case])
        bench.report()
        rc = 0
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); cleaning up")
        rc = 130
    finally:
        try:
            bench.cleanup_objects()
        finally:
            shutil.rmtree(root, ignore_errors=True)
            log(f"removed {root}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
