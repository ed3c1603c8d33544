"""`nps run`: a job on this machine against the local store, through the real container engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.jobs.conftest import BUSYBOX, run_nps
from tests.store.helpers import make_tree


def put_input(env: dict[str, str], tmp_path: Path) -> str:
    src = make_tree(tmp_path / "input", {"scan.txt": b"voxel data\n", "sub/more.txt": b"more\n"})
    return run_nps("put", str(src), env=env).stdout.strip()


def test_run_commits_the_output_with_provenance_and_logs(local_env: dict[str, str], tmp_path: Path) -> None:
    dataset = put_input(local_env, tmp_path)
    job = run_nps("run", "-d", f"{dataset}:/input/t1", "-e", "GREETING=hi", BUSYBOX, "sh", "-c",
                  'cat /input/t1/scan.txt > /output/copy.txt; echo "$GREETING out"; echo oops >&2',
                  env=local_env).stdout.strip()
    assert run_nps("cat", job, "copy.txt", env=local_env).stdout == "voxel data\n"
    record = json.loads(run_nps("show", job, env=local_env).stdout)
    assert record["origin"]["kind"] == "result" and record["origin"]["exit_code"] == 0
    assert record["inputs"] == [{"dataset": dataset, "revision": 1, "mount": "/input/t1"}]
    assert record["origin"]["job"]["image"].startswith("sha256:")  # the tag was pinned to an ID
    assert run_nps("logs", job, env=local_env).stdout == "hi out\n"
    assert run_nps("logs", job, "--stream", "stderr", env=local_env).stdout == "oops\n"
    assert run_nps("cat", job, ".nps/job/stdout.log", env=local_env).stdout == "hi out\n"
    states = [h["state"] for h in json.loads(run_nps("status", job, "--json", env=local_env).stdout)["history"]]
    assert states == ["STAGING", "RUNNING", "UPLOADING", "COMPLETE"]


def test_running_an_existing_result_prints_its_id_without_running(local_env: dict[str, str]) -> None:
    args = ("run", BUSYBOX, "sh", "-c", "date +%s%N > /output/t")
    first = run_nps(*args, env=local_env).stdout.strip()
    before = run_nps("cat", first, "t", env=local_env).stdout
    assert run_nps(*args, env=local_env).stdout.strip() == first
    assert run_nps("cat", first, "t", env=local_env).stdout == before
    assert len(json.loads(run_nps("status", first, "--json", env=local_env).stdout)["history"]) == 4


@pytest.mark.parametrize(
    ("options", "command", "reason"),
    [
        ([], ["sh", "-c", "echo failing >&2; exit 3"], "non-zero exit: the command exited with status 3"),
        (["--memory", "32M"], ["sh", "-c", 'x=$(head -c 200000000 /dev/zero | tr "\\0" a); echo ${#x}'],
         "out of memory"),
        (["--walltime", "2"], ["sleep", "60"], "walltime exceeded"),
    ],
)
def test_a_failed_job_keeps_its_status_and_logs_and_leaves_no_result(
    local_env: dict[str, str], options: list[str], command: list[str], reason: str
) -> None:
    result = run_nps("run", *options, BUSYBOX, *command, env=local_env, ok=False)
    assert result.returncode == 1
    job = result.stdout.strip()
    status = json.loads(run_nps("status", job, "--json", env=local_env).stdout)
    assert status["state"] == "FAILED" and reason in status["reason"]
    assert json.loads(run_nps("datasets", "--json", env=local_env).stdout) == []
    if "failing" in command[-1]:
        assert run_nps("logs", job, "--stream", "stderr", env=local_env).stdout == "failing\n"


def test_containers_are_locked_down(local_env: dict[str, str], tmp_path: Path) -> None:
    dataset = put_input(local_env, tmp_path)
    script = ("id -u > /output/uid; grep CapEff /proc/self/status > /output/caps; ls /sys/class/net > /output/net;"
              " (touch /in/x 2>/dev/null && echo writable || echo read-only) > /output/input;"
              " grep NoNewPrivs /proc/self/status > /output/nnp")
    job = run_nps("run", "-d", f"{dataset}:/in", BUSYBOX, "sh", "-c", script, env=local_env).stdout.strip()
    read = lambda name: run_nps("cat", job, name, env=local_env).stdout.strip()  # noqa: E731
    assert read("uid") == "65534"
    assert read("caps").split() == ["CapEff:", "0000000000000000"]
    assert read("net") == "lo"
    assert read("input") == "read-only"
    assert read("nnp").split() == ["NoNewPrivs:", "1"]


def test_an_output_symlink_leaving_the_output_fails_the_job(local_env: dict[str, str]) -> None:
    result = run_nps("run", BUSYBOX, "ln", "-s", "/etc/passwd", "/output/leak", env=local_env, ok=False)
    status = json.loads(run_nps("status", result.stdout.strip(), "--json", env=local_env).stdout)
    assert status["state"] == "FAILED" and "symlink points outside" in status["reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["localhost/nps/no-such-image:1", "true"], "image not found"),
        (["-d", "0" * 40 + ":/in", BUSYBOX, "true"], "does not exist"),
        (["-d", "xyz:/in", BUSYBOX, "true"], "40-hex"),
        (["-d", "{ds}:in", BUSYBOX, "true"], "absolute"),
        (["-d", "{ds}:/output", BUSYBOX, "true"], "overlaps the output"),
        (["-d", "{ds}:/a", "-d", "{ds}:/a/b", BUSYBOX, "true"], "overlap"),
        (["-d", "{ds}:/a/../etc", BUSYBOX, "true"], ".."),
        (["-d", "{ds}:/nps/in", BUSYBOX, "true"], "where NPS puts the job's parameters"),
        (["-p", "N=1", "-p", "N=2", BUSYBOX, "true"], "the same parameter is given twice"),
        (["-e", "NOEQUALS", BUSYBOX, "true"], "KEY=VALUE"),
        (["--memory", "lots", BUSYBOX, "true"], "memory"),
        (["--walltime", "soon", BUSYBOX, "true"], "walltime"),
        ([BUSYBOX], "Missing argument"),
    ],
)
def test_invalid_jobs_are_refused_before_anything_runs(
    local_env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    dataset = put_input(local_env, tmp_path)
    result = run_nps("run", *[a.replace("{ds}", dataset) for a in args], env=local_env, ok=False)
    assert result.returncode in (1, 2)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert run_nps("jobs", "ls", "--json", env=local_env).stdout.strip() == "[]"


def test_logs_are_capped_at_the_configured_size(local_env: dict[str, str]) -> None:
    env = dict(local_env, NPS_LOG_LIMIT_MB="1")
    job = run_nps("run", BUSYBOX, "sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x", env=env).stdout.strip()
    log = run_nps("logs", job, env=env).stdout
    assert log.startswith("x" * 1000)
    assert log.count("x") == 1024 * 1024
    assert "log truncated at 1048576 bytes" in log


def test_a_burst_of_output_just_before_exit_is_kept_whole_and_once(local_env: dict[str, str]) -> None:
    """The logs of an exited container are read whole rather than waiting for the followed
    stream to end: nothing may be lost or written twice where the two meet."""
    job = run_nps("run", BUSYBOX, "sh", "-c", "seq 1 100000; seq 1 5000 >&2", env=local_env).stdout.strip()
    assert run_nps("logs", job, env=local_env).stdout.splitlines() == [str(i) for i in range(1, 100001)]
    assert run_nps("logs", job, "--stream", "stderr", env=local_env).stdout.splitlines() == [
        str(i) for i in range(1, 5001)]


def test_a_job_cannot_make_the_runner_write_through_its_symlinks(local_env: dict[str, str], tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    job = run_nps("run", BUSYBOX, "sh", "-c",
                  f"mkdir -p /output/.nps/job && ln -s {victim} /output/.nps/job/stdout.log; echo pwned",
                  env=local_env).stdout.strip()
    assert not victim.exists()
    assert run_nps("cat", job, ".nps/job/stdout.log", env=local_env).stdout == "pwned\n"
    hostdir = tmp_path / "hostdir"
    hostdir.mkdir()
    result = run_nps("run", BUSYBOX, "sh", "-c", f"ln -s {hostdir} /output/.nps; echo x", env=local_env, ok=False)
    assert list(hostdir.iterdir()) == []
    status = json.loads(run_nps("status", result.stdout.strip(), "--json", env=local_env).stdout)
    assert status["state"] == "FAILED" and "output cannot be stored" in status["reason"]


def test_one_dataset_can_be_mounted_twice(local_env: dict[str, str], tmp_path: Path) -> None:
    dataset = put_input(local_env, tmp_path)
    job = run_nps("run", "-d", f"{dataset}:/a", "-d", f"{dataset}:/b", BUSYBOX, "sh", "-c",
                  "cat /a/scan.txt /b/scan.txt > /output/both", env=local_env).stdout.strip()
    assert run_nps("cat", job, "both", env=local_env).stdout == "voxel data\nvoxel data\n"


def test_a_very_long_failure_reason_is_truncated_not_fatal(tmp_path: Path) -> None:
    from nps.blobs import LocalBlobs
    from nps.jobs import JobRecords
    from schemas.messages import JobState

    records = JobRecords(LocalBlobs(tmp_path))
    status = records.set_state("a" * 40, JobState.FAILED, "x" * 10_000)
    assert len(status.reason or "") <= 4096 and (status.reason or "").endswith("(truncated)")
    assert records.state("a" * 40).state == JobState.FAILED
