"""The `nps` command as a user runs it: a real process, real stores, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nps.config import Settings
from tests.conftest import REPO
from tests.store.helpers import make_tree

NPS = [sys.executable, "-m", "nps"]


def nps(*args: str, home: Path, extra_env: dict[str, str] | None = None, ok: bool = True,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, NPS_HOME=str(home)) | (extra_env or {})
    result = subprocess.run([*NPS, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
                            input=stdin)
    if ok:
        assert result.returncode == 0, f"nps {' '.join(args)} failed:\n{result.stderr}"
    return result


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", {"anat/t1.nii": b"\x00" * 4096 + b"T1", "README": b"subject 01\n"})


def test_help_lists_every_command(home: Path) -> None:
    out = nps("--help", home=home).stdout
    for command in ("put", "ls", "cat", "get", "show", "verify", "datasets", "gc", "hash", "admin", "infra"):
        assert command in out


def test_put_prints_the_id_and_the_dataset_round_trips(home: Path, src: Path, tmp_path: Path) -> None:
    dataset = nps("put", str(src), home=home).stdout.strip()
    assert len(dataset) == 40
    assert nps("put", str(src), home=home).stdout.strip() == dataset  # same content, same id
    listing = json.loads(nps("ls", dataset, "--json", home=home).stdout)
    assert {f["path"] for f in listing["files"]} == {"anat/t1.nii", "README"}
    assert nps("cat", dataset, "README", home=home).stdout == "subject 01\n"
    assert nps("cat", dataset, "anat/t1.nii", "--range", "4096-", home=home).stdout == "T1"
    nps("get", dataset, str(tmp_path / "copy"), home=home)
    assert (tmp_path / "copy" / "anat" / "t1.nii").read_bytes() == (src / "anat" / "t1.nii").read_bytes()
    assert json.loads(nps("datasets", "--json", home=home).stdout) == [dataset]
    assert json.loads(nps("show", dataset, home=home).stdout)["origin"]["kind"] == "upload"
    nps("verify", dataset, home=home)


def test_put_json_output_is_machine_readable(home: Path, src: Path) -> None:
    result = json.loads(nps("put", str(src), "--json", home=home).stdout)
    assert result["files"] == 3 and result["existed"] is False and result["store"] == "local"


def test_the_minio_store_is_selected_with_store_option(home: Path, src: Path, minio_settings: Settings) -> None:
    env = {"NPS_MINIO_BUCKET": minio_settings.minio_bucket}
    dataset = nps("--store", "minio", "put", str(src), home=home, extra_env=env).stdout.strip()
    assert nps("--store", "minio", "cat", dataset, "README", home=home, extra_env=env).stdout == "subject 01\n"
    assert nps("datasets", home=home, ok=True).stdout == ""  # the local store is untouched


def test_hash_series_prints_the_golden_id(home: Path) -> None:
    out = nps("hash", "series", "1.2.840.113619.2.55.3.604688119.969.1268071029.320", home=home).stdout
    assert out.strip() == "053be851ba4d22449140ee36e68e18845e99d438"


def test_hash_spec_reads_json_from_stdin(home: Path) -> None:
    spec = {"image": "sha256:" + "0" * 64, "command": ["true"]}
    out = nps("hash", "spec", "-", home=home, stdin=json.dumps(spec)).stdout.strip()
    from schemas.job import JobSpec

    assert out == JobSpec.model_validate(spec).job_id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["put", "/no/such/dir"], "no such directory"),
        (["ls", "not-a-hash"], "not a dataset id"),
        (["ls", "0" * 40], "not found"),
        (["cat", "0" * 40, "../../etc/passwd"], "escapes"),
        (["cat", "0" * 40, "x", "--range", "abc"], "START-END"),
        (["hash", "series", "1.2.3/../4"], "digits separated by dots"),
        (["admin", "rm", "0" * 40], "--yes"),
        (["--store", "s3", "datasets"], "'local' or 'minio'"),
    ],
)
def test_bad_input_gets_one_clear_line_and_no_traceback(home: Path, args: list[str], message: str) -> None:
    result = nps(*args, home=home, ok=False)
    assert result.returncode in (1, 2)
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_job_spec_names_the_bad_field(home: Path) -> None:
    result = nps("hash", "spec", "-", home=home, ok=False, stdin='{"image": "ubuntu:latest", "command": []}')
    assert result.returncode == 1
    assert "image" in result.stderr and "command" in result.stderr and "Traceback" not in result.stderr


def test_a_corrupted_file_makes_cat_fail_loudly(home: Path, src: Path) -> None:
    dataset = nps("put", str(src), home=home).stdout.strip()
    stored = next(home.glob(f"datasets/*/*/*/*/{dataset}/README"))
    stored.chmod(0o644)
    stored.write_bytes(b"subject 02\n")
    result = nps("cat", dataset, "README", home=home, ok=False)
    assert result.returncode == 1 and "checksum mismatch" in result.stderr


def test_admin_rm_deletes_with_confirmation(home: Path, src: Path) -> None:
    dataset = nps("put", str(src), home=home).stdout.strip()
    nps("admin", "rm", dataset, "--yes", home=home)
    assert nps("datasets", home=home).stdout == ""
