#!/usr/bin/env python3
"""How long a finished job's logs take to read whole: from the engine's k8s-file log file
(what the worker does when it can) against the engine's API (the fallback). JSON lines on
stdout, logs on stderr.

One busybox container writes ``--mib`` MiB of short numbered lines (``seq``, the shape of a
chatty tool's output), exits, and its stdout is read both ways, alternating which goes first,
``--repeat`` times; the bytes must be identical. The container is removed at the end.
Usage: ``python bench/logs_bench.py [--mib 10] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import docker.errors  # noqa: E402

from nps.config import load_settings  # noqa: E402
from nps.engine import DockerEngine  # noqa: E402
from nps.engine.k8slog import log_file, read_stream  # noqa: E402

BUSYBOX = "localhost/nps/busybox:1"


def log(msg: str) -> None:
    print(f"[logs_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=float, default=10.0, help="log size in MiB (default 10)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.mib <= 0 or args.repeat < 1:
        parser.error("--mib must be > 0 and --repeat >= 1")
    engine = DockerEngine(load_settings().docker_host)
    lines = max(1, int(args.mib * 1024 * 1024 / 7.2))  # seq's lines average ~7.2 bytes here
    cid = engine.client.api.create_container(BUSYBOX, ["seq", "1", str(lines)])["Id"]
    try:
        container = engine.client.containers.get(cid)
        container.start()
        container.wait(timeout=600)
        container.reload()
        path = log_file(container.attrs)
        if path is None:
            raise SystemExit("this engine keeps no k8s-file log this process can read")

        def from_file() -> bytes:
            return b"".join(read_stream(path, "stdout"))

        def from_api() -> bytes:
            return b"".join(container.logs(stream=True, follow=False, stdout=True, stderr=False))

        runs: dict[str, list[tuple[float, float]]] = {"file": [], "api": []}
        reference: bytes | None = None
        for i in range(args.repeat):
            order = [("file", from_file), ("api", from_api)]
            for name, fn in order if i % 2 == 0 else order[::-1]:
                c0, t0 = cpu(), time.perf_counter()
                data = fn()
                seconds, used = time.perf_counter() - t0, cpu() - c0
                reference = reference or data
                if data != reference:
                    raise SystemExit(f"{name}: {len(data)} bytes differ from the other read's {len(reference)}")
                runs[name].append((seconds, used))
                log(f"{name}: {len(data) / 2**20:.1f} MiB in {seconds:.2f} s (reader CPU {used:.2f} s)")
        medians = {name: statistics.median(s for s, _ in r) for name, r in runs.items()}
        for name, r in runs.items():
            print(json.dumps({"case": "job_log_read", "source": name, "bytes": len(reference or b""),
                              "lines": lines, "seconds_median": round(medians[name], 3),
                              "runs_seconds": [round(s, 3) for s, _ in r],
                              "reader_cpu_s": [round(c, 3) for _, c in r]}))
        print(json.dumps({"case": "summary", "api_over_file_time": round(medians["api"] / medians["file"], 1)}))
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            engine.client.api.remove_container(cid, force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
