"""`nps` as a researcher runs it against a real API server: nothing configured but the URL and
a token (the local services are deliberately unreachable), the same commands and outputs as
against the stores, and only the caller's projects visible."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import BUSYBOX, api, busybox_id, served, workers  # noqa: F401 (fixtures)
from tests.conftest import REPO

# Anything that would reach MinIO or Elasticsearch directly fails: the API must be the only route.
NO_SERVICES = {"NPS_MINIO_ENDPOINT": "127.0.0.1:9", "NPS_ES_URL": "http://127.0.0.1:9", "NPS_STORE": "minio"}
LINES = ["sh", "-c", 'n=$(wc -l < /input/notes.txt) && echo "lines $n" && mkdir -p /output/.nps && '
         'echo "{\\"lines\\": $n}" > /output/.nps/metadata.json']


def nps(*args: str, cfg: Path, env: dict[str, str] | None = None, ok: bool = True, stdin: str | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("NPS_API_URL", "NPS_API_TOKEN")}
    result = subprocess.run([sys.executable, "-m", "nps", *args], env=base | NO_SERVICES | {
        "XDG_CONFIG_HOME": str(cfg)} | (env or {}), cwd=REPO, capture_output=True, text=True, input=stdin,
        timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    if ok:
        assert result.returncode == 0, f"nps {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
    return result


@pytest.fixture
def alice(served: dict[str, Any], tmp_path: Path) -> Path:  # noqa: F811
    """A config home where alice ran `nps login`."""
    cfg = tmp_path / "alice-cfg"
    nps("login", served["url"], "--token", served["tokens"]["alice"], cfg=cfg)
    return cfg


def test_login_writes_a_private_config_whoami_and_logout(served: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    cfg, token = tmp_path / "cfg", served["tokens"]["alice"]
    done = nps("login", served["url"], cfg=cfg, stdin=token + "\n")  # asked for, hidden
    path = cfg / "nps" / "client.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert token not in done.stdout + done.stderr and "alice" in done.stderr
    me = nps("whoami", cfg=cfg)
    assert me.stdout == "alice\n" and "alpha" in me.stderr and token not in me.stdout + me.stderr
    assert json.loads(nps("whoami", "--json", cfg=cfg).stdout)["projects"] == ["alpha"]

    wrong = nps("login", served["url"], "--token", "nps_wrong", cfg=cfg, ok=False)
    assert wrong.returncode == 1 and "refused the token" in wrong.stderr and "nps login" in wrong.stderr
    assert "nps_wrong" not in wrong.stderr
    assert nps("whoami", cfg=cfg).stdout == "alice\n"  # a failed login keeps the saved one
    env_wrong = nps("whoami", cfg=cfg, env={"NPS_API_TOKEN": "nps_expired"}, ok=False)
    assert env_wrong.returncode == 1 and "refused the token" in env_wrong.stderr
    bob = nps("whoami", cfg=tmp_path / "none", env={"NPS_API_URL": served["url"],
                                                     "NPS_API_TOKEN": served["tokens"]["bob"]})
    assert bob.stdout == "bob\n"

    nps("logout", cfg=cfg)
    assert not path.exists()
    for command in (["whoami"], ["group", "ls"], ["analysis", "ls"]):
        gone = nps(*command, cfg=cfg, ok=False)
        assert gone.returncode == 1 and "nps login URL" in gone.stderr


def test_an_unreachable_api_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = nps("find", "*", cfg=tmp_path, env={"NPS_API_URL": url, "NPS_API_TOKEN": "nps_x"}, ok=False)
    assert down.returncode == 1 and f"API at {url} is unreachable" in down.stderr


def test_datasets_and_search_through_the_api_show_only_your_projects(
        served: dict[str, Any], alice: Path, tmp_path: Path) -> None:  # noqa: F811
    alpha, beta = served["data"]["alpha"], served["data"]["beta"]
    found = json.loads(nps("find", "*", "--format", "json", cfg=alice).stdout)
    assert [h["id"] for h in found["hits"]] == [alpha] and found["total"] == 1
    assert [h["id"] for h in json.loads(nps("search", "*", "--json", cfg=alice).stdout)] == [alpha]
    table = nps("find", "--fields", "id,project", "--format", "csv", "--kind", "upload", cfg=alice).stdout
    assert list(csv.reader(io.StringIO(table))) == [["id", "project"], [alpha, "alpha"]]
    assert nps("find", "--kind", "series", "--format", "json", cfg=alice).stdout.count(alpha) == 0
    dated = json.loads(nps("find", "--from", "2000-01-01", "--format", "json", cfg=alice).stdout)
    assert dated["total"] == 0  # uploads have no study date
    paged = json.loads(nps("find", "--size", "1", "--all", "--sort", "id:asc", "-f", "json", cfg=alice).stdout)
    assert [h["id"] for h in paged["hits"]] == [alpha] and paged["next"] is None
    bob = {"NPS_API_URL": served["url"], "NPS_API_TOKEN": served["tokens"]["bob"]}
    assert [h["id"] for h in json.loads(nps("find", "--format", "json", cfg=tmp_path, env=bob).stdout)["hits"]] \
        == [beta]

    listing = json.loads(nps("ls", alpha, "--json", cfg=alice).stdout)
    assert {f["path"] for f in listing["files"]} == {"notes.txt", "sub/x.bin"} and listing["revision"] == 1
    assert nps("cat", alpha, "notes.txt", cfg=alice).stdout == "alpha data\n" * 1000
    assert nps("cat", alpha, "notes.txt", "--range", "0-5", cfg=alice).stdout == "alpha"
    assert json.loads(nps("show", alpha, cfg=alice).stdout)["origin"]["kind"] == "upload"
    hidden = nps("cat", beta, "notes.txt", cfg=alice, ok=False)
    assert hidden.returncode == 1 and "not found" in hidden.stderr and "beta secrets" not in hidden.stdout
    assert nps("show", beta, cfg=alice, ok=False).returncode == 1

    nps("get", alpha, str(tmp_path / "copy"), cfg=alice)
    assert (tmp_path / "copy" / "notes.txt").read_bytes() == b"alpha data\n" * 1000
    assert (tmp_path / "copy" / "sub" / "x.bin").read_bytes() == bytes(range(256)) * 4
    busy = nps("get", alpha, str(tmp_path / "copy"), cfg=alice, ok=False)
    assert busy.returncode == 1 and "not an empty directory" in busy.stderr

    local = nps("--store", "local", "ls", alpha, cfg=alice, ok=False, env={"NPS_HOME": str(tmp_path / "h")})
    assert local.returncode == 1 and "not found" in local.stderr  # --store still means the store


def test_groups_and_metadata(served: dict[str, Any], alice: Path, tmp_path: Path) -> None:  # noqa: F811
    alpha, beta = served["data"]["alpha"], served["data"]["beta"]
    group = nps("group", "create", "everything", "--query", "*", cfg=alice)
    group_id = group.stdout.strip()
    assert group_id.startswith("g-") and "1 dataset(s) in project alpha" in group.stderr
    assert nps("group", "show", group_id, cfg=alice).stdout == f"{alpha}\n"
    assert nps("group", "show", group_id, "--query", "files:>100", cfg=alice).stdout == ""
    shown = json.loads(nps("group", "show", group_id, "--json", cfg=alice).stdout)
    assert shown["total"] == 1 and shown["group"]["name"] == "everything"
    assert [g["id"] for g in json.loads(nps("group", "ls", "--json", cfg=alice).stdout)] == [group_id]
    (tmp_path / "ids").write_text(f"# mine\n{alpha}\n\n{beta}\n")
    refused = nps("group", "create", "stolen", "--ids-file", str(tmp_path / "ids"), cfg=alice, ok=False)
    assert refused.returncode == 1 and beta in refused.stderr  # not visible to alice

    nps("meta", "add", alpha, "quality=good", "score=3", "--note", "looked at it", cfg=alice)
    meta = json.loads(nps("meta", "show", alpha, "--json", cfg=alice).stdout)
    assert meta["merged"] == {"quality": "good", "score": 3} and meta["layers"][0]["author"] == "alice"
    found = json.loads(nps("find", "user.score:>2", "--format", "json", cfg=alice).stdout)
    assert [h["id"] for h in found["hits"]] == [alpha]
    assert nps("meta", "add", beta, "x=1", cfg=alice, ok=False).returncode == 1


def test_submit_wait_logs_analysis_export_through_the_api(
        served: dict[str, Any], alice: Path, workers: None, tmp_path: Path) -> None:  # noqa: F811
    alpha = served["data"]["alpha"]
    job = nps("submit", "-d", f"{alpha}:/input", "--memory", "256M", BUSYBOX, *LINES, cfg=alice).stdout.strip()
    assert len(job) == 40
    assert nps("submit", "-d", f"{alpha}:/input", "--memory", "256M", BUSYBOX, *LINES, cfg=alice).stdout.strip() \
        == job  # the same spec is the same job
    waited = nps("wait", job, cfg=alice)
    assert f"{job}: COMPLETE" in waited.stderr
    status = json.loads(nps("status", job, "--json", cfg=alice).stdout)
    assert status["state"] == "COMPLETE" and status["history"][0]["state"] == "QUEUED"
    assert "COMPLETE" in nps("status", job, cfg=alice).stdout
    assert nps("logs", job, cfg=alice).stdout == "lines 1000\n"
    assert nps("logs", job, "--follow", cfg=alice).stdout == "lines 1000\n"  # ended: returns at once
    missing = nps("wait", "0" * 40, cfg=alice, ok=False)
    assert missing.returncode == 1 and "no job" in missing.stderr
    assert "already ended" in nps("cancel", job, cfg=alice).stderr
    deadline = time.monotonic() + 30  # the list comes from the jobs index, a second or so behind the record
    while not (listed := json.loads(nps("jobs", "ls", "--state", "COMPLETE", "--json", cfg=alice).stdout)):
        assert time.monotonic() < deadline, "the finished job never reached the job list"
        time.sleep(0.5)
    assert [(r["job_id"], r["state"]) for r in listed] == [(job, "COMPLETE")]
    assert json.loads(nps("jobs", "ls", "--state", "FAILED", "--json", cfg=alice).stdout) == []
    ancestors = nps("provenance", job, cfg=alice).stdout
    assert ancestors == f"1\t{alpha}\n"
    bob = {"NPS_API_URL": served["url"], "NPS_API_TOKEN": served["tokens"]["bob"]}
    other = nps("status", job, cfg=tmp_path, env=bob, ok=False)
    assert other.returncode == 1 and "no job" in other.stderr
    assert json.loads(nps("jobs", "ls", "--json", cfg=tmp_path, env=bob).stdout) == []

    group_id = nps("group", "create", "alpha", "--query", "kind:upload", cfg=alice).stdout.strip()
    made = json.loads(nps("analysis", "map", "--group", group_id, "--image", BUSYBOX, "--memory", "256M", "--json",
                          "--", *LINES, cfg=alice).stdout)
    analysis = made["analysis"]["id"]
    done = nps("analysis", "status", analysis, "--wait", cfg=alice)
    assert "done" in done.stderr and "1 COMPLETE" in done.stderr
    status = json.loads(nps("analysis", "status", analysis, "--json", cfg=alice).stdout)
    assert status["analysis"]["skipped"] == 1  # that member's result exists
    assert nps("analysis", "jobs", analysis, cfg=alice).stdout == f"{job}\n"
    assert analysis in nps("analysis", "ls", cfg=alice).stdout

    deadline = time.monotonic() + 120  # the indexer sees the result a moment after it is stored
    while not json.loads(nps("find", f"id:{job}", "--format", "json", cfg=alice).stdout)["hits"]:
        assert time.monotonic() < deadline, "the result was never indexed"
        time.sleep(0.5)
    nps("export", "--query", "metadata.lines:>0", "--fields", "metadata.lines", "--input-fields", "id,project",
        "-o", str(tmp_path / "table.csv"), cfg=alice)
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert rows == [{"result": job, "input": alpha, "metadata.lines": "1000", "input.id": alpha,
                     "input.project": "alpha"}]
    jsonl = nps("export", "--analysis", analysis, "--fields", "metadata.lines", "--format", "jsonl", cfg=alice)
    assert [json.loads(line)["metadata.lines"] for line in jsonl.stdout.splitlines()] == [1000]
