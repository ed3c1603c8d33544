"""The layering seen at run time: what importing a layer really loads.

``make lint`` checks the import graph statically (``lint-imports``, docs/architecture.md);
these tests check the same rules in a fresh interpreter, where every import really runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import nps.errors
import nps.hashing
import nps.layout
import schemas.errors
from schemas.messages import MalformedMessage, decode_message
from tests.conftest import REPO


def loaded_after(code: str) -> set[str]:
    """Names of the modules loaded by running ``code`` in a fresh interpreter at the repo root."""
    script = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_loading_the_whole_contract_loads_nothing_of_nps() -> None:
    loaded = loaded_after("import schemas, schemas.export, schemas.processor, schemas.series")
    ours = sorted(m for m in loaded if m.split(".")[0] in ("nps", "producers", "consumers"))
    assert ours == []


def test_the_engine_contract_loads_without_the_docker_adapter() -> None:
    loaded = loaded_after("import nps.engine")
    assert "nps.engine.docker" not in loaded
    assert "docker" not in loaded


def test_the_docker_adapter_is_still_found_under_the_engine_package() -> None:
    loaded = loaded_after("from nps.engine import DockerEngine\nassert DockerEngine.__module__ == 'nps.engine.docker'")
    assert "nps.engine.docker" in loaded


def test_the_engine_package_names_no_other_attribute() -> None:
    import nps.engine

    with pytest.raises(AttributeError, match="no attribute 'PodmanEngine'"):
        _ = nps.engine.PodmanEngine  # type: ignore[attr-defined]


def test_the_contract_errors_are_nps_errors() -> None:
    assert nps.errors.NPSError is schemas.errors.NPSError
    assert nps.errors.InvalidPath is schemas.errors.InvalidPath
    assert nps.errors.InvalidDatasetId is schemas.errors.InvalidDatasetId
    with pytest.raises(nps.errors.NPSError):
        decode_message(b"not json")
    assert issubclass(MalformedMessage, nps.errors.NPSError)


def test_nps_names_for_the_moved_rules_still_work() -> None:
    with pytest.raises(nps.errors.InvalidPath):
        nps.layout.check_relpath("../escape")
    with pytest.raises(nps.errors.InvalidDatasetId):
        nps.hashing.check_dataset_id("XYZ")
    assert nps.hashing.json_dataset_id({"a": 1}) == nps.hashing.sha1_hex(json.dumps({"a": 1}).replace(" ", "").encode())
