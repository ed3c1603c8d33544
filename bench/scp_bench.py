"""The DICOM protocol alone: NPS's storage SCP versus pynetdicom's server, same run.

Both receive the same instances from dcmtk's ``storescu`` (``TCP_NODELAY=1``) over 1 and 4
associations with a handler that stores nothing, so what is measured is the cost of the protocol:
CPU seconds of this process per instance (``getrusage``) and instances per second. pynetdicom is
configured as the receiver used it before (unrestricted storage, data sets streamed to a spool
file, every storage context in every transfer syntax). Prints one JSON line per run.

    python bench/scp_bench.py [--instances 2000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydicom.uid import generate_uid

from producers.dicom_scp import StoreRequest, StoreServer
from tests.dicom.factory import make_instance

STORESCU = "/usr/bin/storescu"  # dcmtk; not from PATH, where pynetdicom installs a Python storescu


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nps_server(port: int, spool: Path) -> Callable[[], None]:
    def handler(request: StoreRequest) -> int:
        return 0

    server = StoreServer(("127.0.0.1", port), handler, spool_dir=spool)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.stop


def pynetdicom_server(port: int, spool: Path) -> Callable[[], None]:
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    _config.UNRESTRICTED_STORAGE_SERVICE = True
    _config.STORE_RECV_CHUNKED_DATASET = True
    tempfile.tempdir = str(spool)
    ae = AE(ae_title="NPS")
    ae.maximum_associations = 32
    for cx in AllStoragePresentationContexts:
        if cx.abstract_syntax is not None:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)

    def handler(event: Any) -> int:
        _ = event.dataset_path
        return 0

    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handler)])

    def stop() -> None:
        server.shutdown()
        tempfile.tempdir = None

    return stop


def run(target: str, files: list[str], root: Path, associations: int) -> dict[str, Any]:
    port = free_port()
    spool = Path(tempfile.mkdtemp(prefix="scp-spool-"))
    stop = (nps_server if target == "nps" else pynetdicom_server)(port, spool)
    lanes = [files[n::associations] for n in range(associations)]
    env = dict(os.environ, TCP_NODELAY="1")
    try:
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        senders = [subprocess.Popen([STORESCU, "-aec", "NPS", "127.0.0.1", str(port), *lane], cwd=root, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for lane in lanes]
        codes = [p.wait(timeout=600) for p in senders]
        seconds, after = time.monotonic() - t0, resource.getrusage(resource.RUSAGE_SELF)
    finally:
        stop()
        shutil.rmtree(spool, ignore_errors=True)
    if any(codes):
        raise RuntimeError(f"storescu exited with {codes} against {target}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"case": "scp", "target": target, "associations": associations, "instances": len(files),
            "seconds": round(seconds, 3), "per_s": round(len(files) / seconds, 1),
            "cpu_ms_per_instance": round(cpu / len(files) * 1000, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scp-bench-"))
    try:
        series, files = generate_uid(), []
        for i in range(args.instances):
            name = f"i{i:05d}.dcm"
            make_instance(root / name, series, number=i + 1, size=128, SeriesNumber=1)
            files.append(name)
        for n in range(args.repeat):
            for associations in (1, 4):
                for target in (("nps", "pynetdicom") if n % 2 == 0 else ("pynetdicom", "nps")):
                    print(json.dumps({**run(target, files, root, associations), "run": n + 1}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
