#!/usr/bin/env python3
"""Processor benchmarks. JSON lines on stdout, logs on stderr.

* ``latency``: N series committed by the real assembler (instances ingested in-process, batch
  closed), with the real indexer and processor worker running one processor on every series.
  For each series: from its manifest's commit (MinIO's millisecond Last-Modified) to its first
  job's QUEUED status (the job record's timestamp). Target: p95 <= 1 s.
* ``sweep``: M series documents bulk-indexed (as the indexer writes them), 3 processors
  (convert every MR series, statistics on each T1w's conversion, a study-level T1w+FLAIR pair),
  and every result they would produce already indexed as done. A full sweep must plan every
  target and submit nothing. Target: <= 10 s for 10,000 series, zero resubmissions.

Private queue prefix, bucket and index; worker processes stopped by pid; everything removed at
the end. Usage: ``python bench/processors_bench.py [--series 20] [--sweep-series 10000]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nps.broker import topology  # noqa: E402
from nps.config import Settings, load_settings  # noqa: E402
from nps.engine import DockerEngine  # noqa: E402
from nps.hashing import series_dataset_id  # noqa: E402
from nps.index import DatasetIndex  # noqa: E402
from nps.ingest import Ingestor  # noqa: E402
from nps.jobs import records_for  # noqa: E402
from nps.processors.catalog import IndexCatalog  # noqa: E402
from nps.processors.engine import ProcessorEngine  # noqa: E402
from nps.processors.load import Loaded  # noqa: E402
from nps.processors.plan import Planner  # noqa: E402
from nps.store.minio import MinioStore  # noqa: E402
from schemas.processor import Processor  # noqa: E402

IMAGE = "localhost/nps/busybox:1"


def log(msg: str) -> None:
    print(f"[processors_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def processors() -> dict[str, Processor]:
    def p(data: dict[str, Any]) -> Processor:
        return Processor.model_validate({"version": 1, "image": IMAGE, "command": ["true"], **data})

    return {x.name: x for x in (
        p({"name": "convert", "level": "series", "where": "modality:MR", "inputs": {"dicom": {"mount": "/input"}}}),
        p({"name": "stats", "level": "series", "where": "classification:T1w",
           "inputs": {"nifti": {"from": "convert", "mount": "/input"}}}),
        p({"name": "pair", "level": "study", "where": "modality:MR",
           "inputs": {"t1": {"from": "convert", "match": "classification:T1w", "mount": "/t1"},
                      "flair": {"from": "convert", "match": "classification:FLAIR", "mount": "/flair"}}}),
    )}


class Bench:
    def __init__(self, settings: Settings) -> None:
        prefix = f"pb{uuid.uuid4().hex[:8]}"
        self.settings = settings.model_copy(update={
            "queue_prefix": prefix, "minio_bucket": f"nps-bench-{prefix}", "series_stable_seconds": 0.5})
        self.store = MinioStore(self.settings)
        self.store.ensure_bucket()
        self.index = DatasetIndex(self.settings.es_url, prefix)
        self.index.ensure()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="nps-pbench-"))

    def env(self) -> dict[str, str]:
        s = self.settings
        return dict(os.environ, NPS_QUEUE_PREFIX=s.queue_prefix, NPS_MINIO_BUCKET=s.minio_bucket,
                    NPS_SERIES_STABLE_SECONDS=str(s.series_stable_seconds))

    def start(self, *args: str) -> None:
        out = (self.tmp / f"{args[1]}.log").open("wb")
        self.procs.append(subprocess.Popen([sys.executable, "-m", "nps", *args], env=self.env(), cwd=REPO,
                                           stdout=out, stderr=subprocess.STDOUT))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        assert self.settings.amqp_url is not None
        topology(self.settings).delete()
        self.index.drop()
        self.store.remove_bucket()
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)

    # ---- latency ---------------------------------------------------------------------------------
    def latency(self, count: int) -> dict[str, Any]:
        folder = self.tmp / "processors"
        folder.mkdir()
        (folder / "convert.yaml").write_text(
            f"name: convert\nversion: 1\nlevel: series\nwhere: 'modality:MR'\n"
            f"inputs:\n  dicom: {{mount: /input}}\nimage: {IMAGE}\ncommand: ['true']\n")
        self.start("worker", "assemble")
        self.start("worker", "index")
        self.start("worker", "processors", "--dir", str(folder))
        time.sleep(4)
        sys.path.insert(0, str(REPO / "examples"))
        from synthetic_series import write_series  # type: ignore[import-not-found]

        ingestor = Ingestor(self.store, topology(self.settings))
        ids = []
        try:
            for n in range(count):
                src = self.tmp / f"s{n}"
                uid = write_series(src, 4, 16, n)
                batch = uuid.uuid4()
                for f in sorted(src.iterdir()):
                    ingestor.ingest(f, "bench", batch_id=batch)
                ingestor.close_batch(batch, {series_dataset_id(uid)})
                ids.append(series_dataset_id(uid))
                time.sleep(0.3)  # series arrive one after another, as from a scanner
        finally:
            ingestor.close()
        records = records_for(self.store)
        latencies = []
        deadline = time.monotonic() + 120
        pending = set(ids)
        queued: dict[str, datetime] = {}
        while pending and time.monotonic() < deadline:
            for job_id in list(records.ids()):
                if job_id in queued:
                    continue
                history = records.history(job_id)
                if not history:
                    continue
                target = str(records.request(job_id).spec.parameters.get("nps.target", ""))
                queued[target.split(":", 1)[1]] = history[0].created_at
            pending = {i for i in ids if i not in queued}
            time.sleep(0.5)
        for dataset_id in ids:
            if dataset_id not in queued:
                continue
            manifest = self.store.stat_object(self.store.key(dataset_id, ".nps/manifest.json"))
            assert manifest is not None and manifest.modified is not None
            latencies.append((queued[dataset_id] - manifest.modified).total_seconds())
        result = {"case": "commit_to_queued", "series": count, "measured": len(latencies),
                  "missing": len(ids) - len(latencies),
                  "p50_s": round(statistics.median(latencies), 3) if latencies else None,
                  "p95_s": round(pct(latencies, 0.95), 3) if latencies else None,
                  "max_s": round(max(latencies), 3) if latencies else None, "target_p95_s": 1.0}
        emit(**result)
        return result

    # ---- sweep -------------------------------------------------------------------------------------
    def sweep(self, count: int) -> dict[str, Any]:
        procs = processors()
        image_id = DockerEngine(self.settings.docker_host).resolve_image(IMAGE)
        kinds = ["T1w", "FLAIR", "T2w", "DWI", "BOLD"]
        docs = []
        for n in range(count):
            uid = f"1.2.826.0.1.3680043.9.{n}"
            docs.append({"id": series_dataset_id(uid), "kind": "series", "revision": 1, "files": 10, "bytes": 1,
                         "inputs": [], "created_at": "2026-01-01T00:00:00", "series_instance_uid": uid,
                         "study_instance_uid": f"1.2.3.{n // 5}", "patient_id": f"P{n // 10}", "modality": "MR",
                         "classification": kinds[n % 5], "acquisition_datetime": f"2025-01-01T10:{n % 60:02d}:00"})
        log(f"indexing {count} series documents")
        self.index.bulk(docs)
        # Every result the processors would make is already done (indexed), upstream first.
        for name in ("convert", "stats", "pair"):
            planner = Planner(procs, IndexCatalog(self.index, self.store, preload=True), {n: image_id for n in procs})
            results = []
            for target in planner.targets(procs[name]):
                plan = planner.plan(procs[name], target)
                results += [{"id": s.job_id, "kind": "result", "revision": 1, "files": 1, "bytes": 1,
                             "inputs": [i.dataset for i in s.inputs], "created_at": "2026-01-01T00:00:00",
                             "processor": name, "processor_target": str(target)} for s in plan.specs]
            log(f"indexing {len(results)} finished {name} results")
            self.index.bulk(results)
        engine = ProcessorEngine(Loaded(processors=procs), self.store, self.index, records_for(self.store),
                                 lambda _: image_id, publisher=None)
        started = time.perf_counter()
        report = engine.sweep()
        elapsed = time.perf_counter() - started
        result = {"case": "sweep", "series": count, "processors": len(procs), "targets": report.targets,
                  "ready": report.ready, "need_inputs": report.need_inputs, "submitted": len(report.submitted),
                  "already_done": report.already_known, "seconds": round(elapsed, 2), "target_s": 10.0}
        emit(**result)
        return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=20, help="series for the latency case (0: skip)")
    parser.add_argument("--sweep-series", type=int, default=10000, help="series for the sweep case (0: skip)")
    args = parser.parse_args()
    bench = Bench(load_settings())
    summary: dict[str, Any] = {"case": "summary"}
    try:
        if args.series:
            summary["latency"] = bench.latency(args.series)
        if args.sweep_series:
            summary["sweep"] = bench.sweep(args.sweep_series)
    finally:
        bench.close()
    emit(**summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
