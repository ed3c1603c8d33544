"""`nps submit` and `nps worker jobs`: real RabbitMQ, MinIO and container engine, real processes."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import blake3

from nps.config import load_settings
from nps.engine import DockerEngine
from nps.jobs import JobRecords
from schemas.messages import JobState
from tests.conftest import REPO
from tests.jobs.conftest import BUSYBOX, run_nps, stop_when_idle, wait_for_state
from tests.store.helpers import make_tree

Workers = Callable[..., subprocess.Popen[str]]


def minio(*args: str) -> tuple[str, ...]:
    return ("--store", "minio", *args)


def test_a_submitted_job_runs_on_a_worker_and_its_result_is_in_minio(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords, tmp_path: Path
) -> None:
    src = make_tree(tmp_path / "in", {"t1.txt": b"T1 weighted\n"})
    dataset = run_nps(*minio("put", str(src)), env=server_env).stdout.strip()
    job = run_nps("submit", "-d", f"{dataset}:/in", BUSYBOX, "sh", "-c", "wc -c < /in/t1.txt > /output/size",
                  env=server_env).stdout.strip()
    assert server_records.state(job).state == JobState.QUEUED  # printed at once, nothing ran yet
    workers(concurrency=1)
    run_nps(*minio("wait", job, "--timeout", "120"), env=server_env)
    assert run_nps(*minio("cat", job, "size"), env=server_env).stdout.strip() == "12"
    states = [h.state.value for h in server_records.history(job)]
    assert states == ["QUEUED", "STAGING", "RUNNING", "UPLOADING", "COMPLETE"]
    record = json.loads(run_nps(*minio("show", job), env=server_env).stdout)
    assert record["inputs"][0]["dataset"] == dataset


def test_a_failing_job_is_failed_with_its_reason_and_logs_and_is_not_retried(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords
) -> None:
    worker = workers(concurrency=1)
    job = run_nps("submit", BUSYBOX, "sh", "-c", "echo cannot read header >&2; exit 3", env=server_env).stdout.strip()
    status = wait_for_state(server_records, job, {"FAILED"})
    assert status.reason == "non-zero exit: the command exited with status 3"
    assert run_nps(*minio("logs", job, "--stream", "stderr"), env=server_env).stdout == "cannot read header\n"
    assert run_nps(*minio("wait", job), env=server_env, ok=False).returncode == 1
    assert stop_when_idle(server_env, [worker]) == 0  # acked, not requeued for another run
    assert [h.state.value for h in server_records.history(job)].count("RUNNING") == 1
    assert run_nps(*minio("datasets", "--json"), env=server_env).stdout.strip() == "[]"


def test_a_worker_killed_mid_job_loses_nothing_and_the_job_completes_once(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords
) -> None:
    first = workers(concurrency=1)
    job = run_nps("submit", BUSYBOX, "sh", "-c", "sleep 3; echo done > /output/result", env=server_env).stdout.strip()
    wait_for_state(server_records, job, {"RUNNING"})
    first.send_signal(signal.SIGKILL)
    first.wait()
    workers(concurrency=1)  # the job is redelivered to the new worker
    run_nps(*minio("wait", job, "--timeout", "120"), env=server_env)
    assert run_nps(*minio("cat", job, "result"), env=server_env).stdout == "done\n"
    states = [h.state.value for h in server_records.history(job)]
    assert states.count("COMPLETE") == 1 and states[-1] == "COMPLETE"
    assert json.loads(run_nps(*minio("datasets", "--json"), env=server_env).stdout) == [job]
    # The dead worker's container was reaped by the next worker; nothing of the job is left running.
    engine = DockerEngine(load_settings().docker_host)
    assert engine.client.api.containers(all=True, filters={"label": f"nps.job={job}"}) == []


def test_sigterm_lets_the_running_job_finish_before_the_worker_exits(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords
) -> None:
    worker = workers(concurrency=1)
    job = run_nps("submit", BUSYBOX, "sh", "-c", "sleep 2; echo ok > /output/r", env=server_env).stdout.strip()
    wait_for_state(server_records, job, {"RUNNING"})
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    assert server_records.state(job).state == JobState.COMPLETE


def test_the_same_spec_submitted_many_times_at_once_runs_once(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords
) -> None:
    worker = workers(concurrency=2)
    args = ("submit", BUSYBOX, "sh", "-c", "sleep 1; date +%s%N > /output/stamp")
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = set(pool.map(lambda _: run_nps(*args, env=server_env).stdout.strip(), range(6)))
    assert len(ids) == 1
    job = ids.pop()
    wait_for_state(server_records, job, {"COMPLETE"})
    assert stop_when_idle(server_env, [worker]) == 0  # every duplicate message handled
    states = [h.state.value for h in server_records.history(job)]
    assert states.count("RUNNING") == 1 and states.count("COMPLETE") == 1, states
    assert json.loads(run_nps(*minio("datasets", "--json"), env=server_env).stdout) == [job]


def test_a_malformed_message_is_dead_lettered_with_its_reason_and_the_queue_keeps_going(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords, minio_settings: object
) -> None:
    from nps.broker import Publisher, Topology

    topo = Topology(url=server_env.get("NPS_AMQP_URL") or _amqp_url(), prefix=server_env["NPS_QUEUE_PREFIX"],
                    delivery_limit=3)
    publisher = Publisher(topo)
    publisher.publish_raw("", topo.jobs, b'{"type": "job.requested", "version": 1, "job_id": "../../etc"}',
                          message_id="bad-1")
    publisher.publish_raw("", topo.jobs, b"\x00\xffnot json", message_id="bad-2")
    spec = {"image": "sha256:" + "0" * 64, "command": ["true"]}
    from schemas.job import JobSpec

    huge = {"type": "job.requested", "version": 1, "job_id": JobSpec.model_validate(spec).job_id, "spec": spec,
            "resources": {"memory": "9" * 400 + "K"}}
    publisher.publish_raw("", topo.jobs, json.dumps(huge).encode(), message_id="bad-3")
    publisher.close()
    workers(concurrency=1)
    job = run_nps("submit", BUSYBOX, "true", env=server_env).stdout.strip()
    wait_for_state(server_records, job, {"COMPLETE"})
    dead = json.loads(run_nps("dlq", "ls", "--json", env=server_env).stdout)
    reasons = {d["message_id"]: d["reason"] for d in dead}
    assert set(reasons) == {"bad-1", "bad-2", "bad-3"}
    assert all(r.startswith("malformed message") for r in reasons.values())
    assert "job_id" in reasons["bad-1"] and "Invalid JSON" in reasons["bad-2"]


def test_infrastructure_failures_are_retried_then_dead_lettered_and_replayable(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords
) -> None:
    # A real fault: this worker's container engine socket does not exist.
    broken = workers(concurrency=1, extra={"NPS_DOCKER_HOST": "unix:///nonexistent/engine.sock"})
    job = run_nps("submit", BUSYBOX, "sh", "-c", "echo ok > /output/r", env=server_env).stdout.strip()
    deadline = time.monotonic() + 120
    dead: list[dict[str, object]] = []
    while time.monotonic() < deadline and not dead:
        dead = json.loads(run_nps("dlq", "ls", "--json", env=server_env).stdout)
        time.sleep(1)
    assert [d["job_id"] for d in dead] == [job]
    assert "delivery limit" in str(dead[0]["reason"])
    status = server_records.state(job)  # the last delivery left a final status saying why
    assert status.state == JobState.FAILED and "infrastructure error" in (status.reason or "")
    broken.send_signal(signal.SIGTERM)
    broken.wait(timeout=60)

    workers(concurrency=1)  # a healthy worker
    run_nps("dlq", "replay", env=server_env)
    run_nps(*minio("wait", job, "--timeout", "120"), env=server_env)
    assert json.loads(run_nps("dlq", "ls", "--json", env=server_env).stdout) == []


def test_cancel_stops_a_running_job_and_leaves_no_result(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords
) -> None:
    workers(concurrency=1)
    job = run_nps("submit", BUSYBOX, "sleep", "60", env=server_env).stdout.strip()
    wait_for_state(server_records, job, {"RUNNING"})
    run_nps(*minio("cancel", job), env=server_env)
    status = wait_for_state(server_records, job, {"CANCELLED"}, timeout=30)
    assert status.reason == "cancelled while running"
    assert run_nps(*minio("datasets", "--json"), env=server_env).stdout.strip() == "[]"


def test_a_result_made_locally_is_pushed_with_its_provenance_and_pulled_back(
    server_env: dict[str, str], tmp_path: Path
) -> None:
    job = run_nps("run", BUSYBOX, "sh", "-c", "echo hpc > /output/r", env=server_env).stdout.strip()
    run_nps("push", job, env=server_env)
    record = json.loads(run_nps(*minio("show", job), env=server_env).stdout)
    assert record["origin"]["kind"] == "result" and record["id"] == job
    other_home = dict(server_env, NPS_HOME=str(tmp_path / "elsewhere"))
    run_nps("pull", job, env=other_home)
    assert run_nps("cat", job, "r", env=other_home).stdout == "hpc\n"


def test_a_pushed_result_whose_provenance_was_altered_is_refused(server_env: dict[str, str]) -> None:
    job = run_nps("run", BUSYBOX, "sh", "-c", "echo x > /output/r", env=server_env).stdout.strip()
    home = Path(server_env["NPS_HOME"])
    record_file = next(home.glob(f"datasets/*/*/*/*/{job}/.nps/dataset.json"))
    record = json.loads(record_file.read_text())
    record["origin"]["job"]["command"] = ["sh", "-c", "something else"]
    new_bytes = json.dumps(record).encode()
    record_file.chmod(0o644)
    record_file.write_bytes(new_bytes)
    # Make the manifest agree, so only the id-versus-spec check can catch the forgery.
    manifest_file = record_file.with_name("manifest.json")
    manifest = json.loads(manifest_file.read_text())
    for entry in manifest["files"]:
        if entry["path"] == ".nps/dataset.json":
            entry.update(size=len(new_bytes), blake3=blake3.blake3(new_bytes).hexdigest())
    manifest_file.chmod(0o644)
    manifest_file.write_text(json.dumps(manifest))
    result = run_nps("push", job, env=server_env, ok=False)
    assert result.returncode == 1 and "does not match its origin" in result.stderr
    assert run_nps(*minio("datasets", "--json"), env=server_env).stdout.strip() == "[]"


def _amqp_url() -> str:
    from nps.config import load_settings

    url = load_settings().amqp_url
    assert url is not None
    return url.get_secret_value()


def follow_logs(env: dict[str, str], records: JobRecords, job: str) -> tuple[str, str, bool]:
    """Once the job runs, `nps logs -f` it to the end: (its first line, the rest, whether the
    job was still RUNNING when the first line arrived)."""
    wait_for_state(records, job, {"RUNNING"})
    follower = subprocess.Popen([sys.executable, "-m", "nps", "--store", "minio", "logs", "-f", job],
                                env=env, cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    first = follower.stdout.readline()
    running = records.state(job).state == JobState.RUNNING
    rest = follower.stdout.read()
    assert follower.wait(timeout=120) == 0
    return first, rest, running


def test_logs_follow_shows_output_while_the_job_runs(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords
) -> None:
    workers(concurrency=1)
    job = run_nps("submit", BUSYBOX, "sh", "-c", "for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done",
                  env=server_env).stdout.strip()
    first, rest, running_when_first_line_arrived = follow_logs(server_env, server_records, job)
    assert first == "tick 1\n" and running_when_first_line_arrived
    assert (first + rest).splitlines() == [f"tick {i}" for i in range(1, 7)]


def test_logs_follow_of_a_fast_writer_shows_every_line_once_in_order(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords
) -> None:
    """Bursts of 100,000 lines a second apart: what `nps logs -f` prints while the job runs and
    after it ends is the log itself, no line lost, repeated or garbled."""
    workers(concurrency=1)
    script = "for i in 0 1 2; do seq $((i*100000+1)) $((i*100000+100000)); sleep 1; done"
    job = run_nps("submit", BUSYBOX, "sh", "-c", script, env=server_env).stdout.strip()
    first, rest, running_when_first_line_arrived = follow_logs(server_env, server_records, job)
    assert running_when_first_line_arrived
    lines = (first + rest).splitlines()
    expected = [str(n) for n in range(1, 300_001)]
    assert len(lines) == len(expected) and lines == expected, (len(lines), lines[:3], lines[-3:])


def test_gpu_jobs_are_refused_clearly(server_env: dict[str, str]) -> None:
    result = run_nps("submit", "--gpu", "1", BUSYBOX, "true", env=server_env, ok=False)
    assert result.returncode == 1 and "GPU jobs are not supported yet" in result.stderr


def test_a_worker_paused_past_its_lease_stops_its_run_and_leaves_the_job_to_the_one_that_took_it(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords, tmp_path: Path
) -> None:
    import socket

    first = workers(concurrency=1)
    submit = ("submit", BUSYBOX, "sh", "-c", "sleep 30; echo done > /output/r")
    job = run_nps(*submit, env=server_env).stdout.strip()
    wait_for_state(server_records, job, {"RUNNING"})
    run_nps(*submit, env=server_env)  # a second delivery of the same job
    workers(concurrency=1)  # gets it, finds the job's lock held, waits
    engine = DockerEngine(load_settings().docker_host)
    owner = {"label": f"nps.owner={socket.gethostname()}:{first.pid}"}
    # Plain listings: the SDK's inspects each container and fails on one removed meanwhile.
    assert len(engine.client.api.containers(filters=owner)) == 1
    first.send_signal(signal.SIGSTOP)  # paused past the 3 s lease: the second worker takes the job over
    try:
        deadline = time.monotonic() + 60
        while [h.state.value for h in server_records.history(job)].count("STAGING") < 2:
            assert time.monotonic() < deadline, "the second worker never took the job over"
            time.sleep(0.2)
    finally:
        first.send_signal(signal.SIGCONT)
    # The first worker finds its lock gone at its next heartbeat and stops its container (long
    # before its 30 s sleep ends) without writing anything into the job's history.
    deadline = time.monotonic() + 15
    while engine.client.api.containers(all=True, filters=owner):
        assert time.monotonic() < deadline, "the paused worker kept running a job it no longer held"
        time.sleep(0.2)
    run_nps(*minio("wait", job, "--timeout", "120"), env=server_env)
    states = [h.state.value for h in server_records.history(job)]
    assert states.count("COMPLETE") == 1 and "CANCELLED" not in states and "FAILED" not in states, states
    assert states[-4:] == ["STAGING", "RUNNING", "UPLOADING", "COMPLETE"], states
    assert first.poll() is None  # still a healthy worker
    log = next(p for p in sorted(tmp_path.glob("worker-0.log")))
    assert "lost the lock of job" in log.read_text()


def test_a_job_the_broker_did_not_take_is_marked_not_queued_and_queues_when_submitted_again(
    server_env: dict[str, str], workers: Workers, server_records: JobRecords
) -> None:
    """RabbitMQ unreachable at submit time (a real closed port): the job must not sit QUEUED
    forever waiting for a message that was never sent."""
    url = urlsplit(server_env.get("NPS_AMQP_URL") or _amqp_url())
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    cut_off = server_env | {"NPS_AMQP_URL": urlunsplit(url._replace(netloc=url.netloc.replace(
        f"{url.hostname}:{url.port}", f"127.0.0.1:{closed}")))}
    argv = ("submit", BUSYBOX, "sh", "-c", "echo later > /output/x")
    failed = run_nps(*argv, env=cut_off, ok=False)
    assert failed.returncode != 0
    found = re.search(r"job ([0-9a-f]{40}) was not queued", failed.stderr)
    assert found, failed.stderr
    job = found.group(1)
    last = server_records.state(job)
    assert last.state == JobState.FAILED and last.reason and last.reason.startswith("not queued"), last
    assert run_nps(*argv, env=server_env).stdout.strip() == job  # the same spec, the broker back
    workers(concurrency=1)
    wait_for_state(server_records, job, {"COMPLETE"})
    states = [h.state.value for h in server_records.history(job)]
    assert states[:3] == ["QUEUED", "FAILED", "QUEUED"] and states[-1] == "COMPLETE", states
