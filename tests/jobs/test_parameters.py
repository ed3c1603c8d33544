"""Job parameters reach the container (environment and /nps/parameters.json) through the
shared execution path: `nps run` here, `nps submit` on a worker; real Podman containers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from nps.config import Settings
from nps.jobs import JobRecords, execute, job_context
from nps.jobs.parameters import clashing_names, container_env, parameter_env, parameters_json, reserved_mounts
from nps.store import LocalStore
from schemas.job import JobInput, JobSpec, Scalar
from schemas.messages import JobRequested, JobState
from tests.jobs.conftest import BUSYBOX, run_nps, wait_for_state

Workers = Callable[..., subprocess.Popen[str]]
SHOW = "env > /output/env.txt; cp /nps/parameters.json /output/parameters.json; " \
       "(echo x > /nps/parameters.json) 2>/dev/null && echo writable > /output/file || echo read-only > /output/file"


def env_lines(text: str) -> set[str]:
    return set(text.splitlines())


def test_parameters_reach_an_nps_run_container_as_environment_and_a_read_only_file(
        local_env: dict[str, str]) -> None:
    job = run_nps("run", "-p", "FOO=bar", "-p", "threshold=0.5", "-p", "smooth=true", "-p", "label=",
                  "-e", "BAR=baz", BUSYBOX, "sh", "-c", SHOW, env=local_env).stdout.strip()
    env = env_lines(run_nps("cat", job, "env.txt", env=local_env).stdout)
    assert {"FOO=bar", "BAR=baz", "threshold=0.5", "smooth=true", "label="} <= env
    assert json.loads(run_nps("cat", job, "parameters.json", env=local_env).stdout) == {
        "FOO": "bar", "label": "", "smooth": True, "threshold": 0.5}
    assert run_nps("cat", job, "file", env=local_env).stdout == "read-only\n"


def test_a_parameter_changes_what_the_job_computes(local_env: dict[str, str]) -> None:
    double = ("sh", "-c", 'echo $((n * 2)) > /output/double')
    two = run_nps("run", "-p", "n=2", BUSYBOX, *double, env=local_env).stdout.strip()
    three = run_nps("run", "-p", "n=3", BUSYBOX, *double, env=local_env).stdout.strip()
    assert two != three
    assert run_nps("cat", two, "double", env=local_env).stdout == "4\n"
    assert run_nps("cat", three, "double", env=local_env).stdout == "6\n"


def test_parameters_reach_a_submitted_job_on_a_worker_the_same_way(
        server_env: dict[str, str], workers: Workers, server_records: JobRecords) -> None:
    workers(concurrency=1)
    job = run_nps("submit", "-p", "FOO=bar", "-p", "nps.tag=x", "-p", "count=3", "-e", "BAR=baz",
                  BUSYBOX, "sh", "-c", SHOW, env=server_env).stdout.strip()
    wait_for_state(server_records, job, {"COMPLETE"})
    env = env_lines(run_nps("--store", "minio", "cat", job, "env.txt", env=server_env).stdout)
    assert {"FOO=bar", "BAR=baz", "count=3"} <= env
    assert not any(line.startswith("nps.tag") for line in env)  # not a variable name: in the file only
    assert json.loads(run_nps("--store", "minio", "cat", job, "parameters.json", env=server_env).stdout) == {
        "FOO": "bar", "count": 3, "nps.tag": "x"}
    assert run_nps("--store", "minio", "cat", job, "file", env=server_env).stdout == "read-only\n"


def test_a_name_given_as_both_parameter_and_environment_variable_is_refused_before_anything_runs(
        local_env: dict[str, str]) -> None:
    result = run_nps("run", "-p", "X=1", "-e", "X=2", BUSYBOX, "true", env=local_env, ok=False)
    assert result.returncode == 1
    assert "X: given both as an environment variable and as a parameter" in result.stderr, result.stderr
    assert run_nps("jobs", "ls", "--json", env=local_env).stdout.strip() == "[]"


def test_a_spec_made_elsewhere_with_both_gets_the_environment_value_and_the_parameter_in_the_file(
        settings: Settings, busybox_id: str, tmp_path: Path) -> None:
    """A processor file may set a name in both ``env`` and ``parameters`` (its specs are not
    built by ``build_spec``): the documented rule applies at run time."""
    ctx = job_context(settings.model_copy(update={"cache": tmp_path / "cache"}), LocalStore(tmp_path / "home"))
    spec = JobSpec(image=busybox_id, command=("sh", "-c", SHOW), env={"X": "from env"}, parameters={"X": "param"})
    assert execute(ctx, JobRequested(job_id=spec.job_id, spec=spec)).state == JobState.COMPLETE
    result = ctx.store.path(spec.job_id)  # type: ignore[attr-defined]
    assert "X=from env" in env_lines((result / "env.txt").read_text())
    assert json.loads((result / "parameters.json").read_text()) == {"X": "param"}


def test_a_spec_made_elsewhere_with_an_input_inside_nps_fails_with_its_reason(
        settings: Settings, busybox_id: str, tmp_path: Path) -> None:
    ctx = job_context(settings.model_copy(update={"cache": tmp_path / "cache"}), LocalStore(tmp_path / "home"))
    spec = JobSpec(image=busybox_id, command=("true",),
                   inputs=(JobInput(dataset="a" * 40, revision=1, mount="/nps/in"),))
    status = execute(ctx, JobRequested(job_id=spec.job_id, spec=spec))
    assert status.state == JobState.FAILED and "where NPS puts the job's parameters" in (status.reason or "")


def test_parameter_values_become_environment_text_strings_as_given_others_as_json() -> None:
    params: dict[str, Scalar] = {"s": "0.5x", "f": 0.5, "i": 3, "b": False, "n": None, "nps.processor": "p@1", "9x": 1}
    assert parameter_env(params) == {"s": "0.5x", "f": "0.5", "i": "3", "b": "false", "n": "null"}
    spec = JobSpec(image="sha256:" + "0" * 64, command=("true",), env={"s": "env"}, parameters=params)
    assert container_env(spec)["s"] == "env"
    assert json.loads(parameters_json(params)) == params
    assert clashing_names(["s", "OTHER"], params) == ["s"]
    assert clashing_names(["nps.processor"], params) == []  # never an environment variable
    assert reserved_mounts(["/nps", "/nps/a", "/npsx", "/input"]) == ["/nps", "/nps/a"]
