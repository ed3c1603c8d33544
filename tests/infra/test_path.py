"""What `make` puts on PATH for the demo, the tests and the benchmarks: a folder holding `nps`
alone, so `storescu`, `echoscu`... are dcmtk's, as the README and the demo mean. (The
virtualenv's bin also holds pynetdicom's Python programs of those names.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from nps.hashing import series_dataset_id
from tests.conftest import REPO, dcmtk, service_missing

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PREPENDED = re.compile(r"^PATH=(\S+):\$PATH (.+)$")


def prepended_by_make(*targets: str) -> dict[str, str]:
    """Each command of ``targets`` that make runs with a folder put first on PATH -> that folder
    (``make -n`` prints the commands without running any)."""
    printed = subprocess.run(["make", "-n", "-s", *targets], cwd=REPO, capture_output=True, text=True,
                             timeout=120, check=True).stdout
    return {m[2]: m[1] for line in printed.splitlines() if (m := PREPENDED.match(line))}


def test_make_puts_only_nps_first_on_path_for_the_demo_the_tests_and_the_benchmarks() -> None:
    prepended = prepended_by_make("demo", "test", "bench")
    assert any("examples/demo.sh" in cmd for cmd in prepended) and any("pytest" in cmd for cmd in prepended)
    assert any("bench/" in cmd for cmd in prepended)
    for folder in set(prepended.values()):
        if not Path(folder).is_dir():
            service_missing(f"{folder} is missing: `make setup` makes it")
        assert sorted(p.name for p in Path(folder).iterdir()) == ["nps"], folder


def test_with_that_folder_first_storescu_and_echoscu_are_dcmtks_and_nps_runs() -> None:
    for folder in set(prepended_by_make("demo").values()):
        path = f"{folder}:{SYSTEM_PATH}"
        for tool in ("storescu", "echoscu"):
            assert shutil.which(tool, path=path) == dcmtk(tool)
        nps = shutil.which("nps", path=path)
        assert nps == f"{folder}/nps"
        hashed = subprocess.run([nps, "hash", "series", "1.2.3"], capture_output=True, text=True, timeout=60)
        assert hashed.returncode == 0 and hashed.stdout.strip() == series_dataset_id("1.2.3"), hashed.stderr
