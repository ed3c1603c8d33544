"""Running one job, start to finish: stage, run the container, keep the logs, commit the result.

Shared by ``nps run`` (local store, no servers) and the job worker (MinIO). Problems with the
job itself end as a FAILED status with a reason a user understands; infrastructure problems
(store, engine) raise, so a worker can retry them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nps.engine import ContainerEngine, Mount, RunRequest, RunResult
from nps.errors import CorruptDataset, ImageNotFound, InvalidSource, NPSError
from nps.jobs.parameters import PARAMETERS_DIR, PARAMETERS_FILE, container_env, parameters_json, reserved_mounts
from nps.jobs.records import LOG_NAMES, JobRecords
from nps.jobs.stage import InputUnavailable, StageCache
from nps.jobs.sweep import sweep
from nps.locks import held
from nps.store import DatasetStore
from schemas.dataset import DatasetRecord, ResultOrigin
from schemas.job import OUTPUT_MOUNT
from schemas.messages import JobRequested, JobState, JobStatus

LOG_DIR_IN_RESULT = ".nps/job"
LOG_PUBLISH_S = 2.0


@dataclass
class JobContext:
    """Everything a job needs to run."""

    store: DatasetStore
    engine: ContainerEngine
    records: JobRecords
    stage: StageCache
    workdir: Path
    log_limit_bytes: int = 10 * 1024 * 1024


def failure_reason(result: RunResult, request: JobRequested) -> str | None:
    """Why a finished run failed, in words; None if it succeeded."""
    if result.timed_out:
        return f"walltime exceeded: killed after {request.resources.walltime_s} s"
    if result.oom_killed:
        return f"out of memory: the job needed more than its {request.resources.memory_mb} MiB limit"
    if result.exit_code != 0:
        return f"non-zero exit: the command exited with status {result.exit_code}"
    return None


class JobAbandoned(NPSError):
    """This runner lost the job to another one (its lock was taken over): it stopped and
    recorded nothing more; the other runner's work is the job's."""


def execute(ctx: JobContext, request: JobRequested, cancel: threading.Event | None = None,
            abandon: threading.Event | None = None) -> JobStatus:
    """Run ``request`` to a terminal status (COMPLETE, FAILED or CANCELLED). When ``abandon`` is
    set (the job's lock was lost) the container is stopped and JobAbandoned raised, with no
    further status written and nothing committed."""
    cancel = cancel or threading.Event()
    if abandon is not None:
        guarded = dataclasses.replace(ctx, records=_GuardedRecords(ctx.records, abandon))
        with _stopping_on(abandon, cancel):
            status = execute(guarded, request, cancel)
        if abandon.is_set():
            raise JobAbandoned(f"job {request.job_id}: another runner took it over")
        return status
    job_id = request.job_id
    history = ctx.records.history(job_id)  # start from what is stored, not from an earlier run's memory
    if ctx.store.exists(job_id):
        if history and history[-1].state == JobState.COMPLETE:
            return history[-1]  # a duplicate message (a re-publish): nothing new to record
        return ctx.records.set_state(job_id, JobState.COMPLETE, "result already exists")
    if ctx.records.cancel_requested(job_id):
        return ctx.records.set_state(job_id, JobState.CANCELLED, "cancelled before it started")
    if reserved := reserved_mounts(i.mount for i in request.spec.inputs):  # a spec not made by build_spec
        return ctx.records.set_state(job_id, JobState.FAILED, f"input mount {reserved[0]!r} is inside "
                                     f"{PARAMETERS_DIR}, where NPS puts the job's parameters")
    ctx.records.set_state(job_id, JobState.STAGING)
    try:
        with ctx.stage.staged(ctx.store, request.spec.inputs) as mounts:
            return _run_and_commit(ctx, request, mounts, cancel)
    except InputUnavailable as exc:
        return ctx.records.set_state(job_id, JobState.FAILED, f"input vanished: {exc}")
    except CorruptDataset as exc:
        return ctx.records.set_state(job_id, JobState.FAILED, f"input corrupt: {exc}")


class _GuardedRecords(JobRecords):
    """Job records that refuse every status once ``abandon`` is set: the runner that lost the
    job must not write over the history of the one that has it."""

    def __init__(self, records: JobRecords, abandon: threading.Event) -> None:
        super().__init__(records.blobs)
        self.listeners = records.listeners
        self.abandon = abandon

    def set_state(self, job_id: str, state: JobState, reason: str | None = None) -> JobStatus:
        if self.abandon.is_set():
            raise JobAbandoned(f"job {job_id}: another runner took it over; not recording {state.value}")
        return super().set_state(job_id, state, reason)


@contextlib.contextmanager
def _stopping_on(abandon: threading.Event, cancel: threading.Event) -> Iterator[None]:
    """While in the block, ``abandon`` stops the container (through ``cancel``)."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if abandon.wait(0.2):
                if not done.is_set():
                    cancel.set()
                return

    threading.Thread(target=watch, daemon=True).start()
    try:
        yield
    finally:
        done.set()  # the watcher ends at its next look; the job need not wait for it


def _run_and_commit(ctx: JobContext, request: JobRequested, mounts: dict[str, Path],
                    cancel: threading.Event) -> JobStatus:
    job_id = request.job_id
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"job-{job_id[:12]}-", dir=ctx.workdir))
    with held(work.with_name(work.name + ".lock")):  # tells sweep_leftovers this folder is in use
        return _attempts(ctx, request, mounts, cancel, work)


def _attempts(ctx: JobContext, request: JobRequested, mounts: dict[str, Path], cancel: threading.Event,
              work: Path) -> JobStatus:
    job_id = request.job_id
    try:
        _write_parameters(request, work)
        for attempt in range(request.resources.retries + 1):
            output = _fresh_output(work)
            ctx.records.set_state(job_id, JobState.RUNNING, f"attempt {attempt + 1}" if attempt else None)
            started = datetime.now(UTC)
            with _publishing_logs(ctx, job_id, work):
                try:
                    result = ctx.engine.run(_run_request(request, mounts, output, work, ctx.log_limit_bytes), cancel)
                except ImageNotFound as exc:
                    return ctx.records.set_state(job_id, JobState.FAILED,
                                                 f"engine error: {exc} on {socket.gethostname()}")
            if result.cancelled:
                return ctx.records.set_state(job_id, JobState.CANCELLED, "cancelled while running")
            reason = failure_reason(result, request)
            if reason is None:
                return _commit(ctx, request, output, work, result, started)
            if result.timed_out or result.oom_killed:
                break  # more of the same will not help; rerun with more resources instead
        return ctx.records.set_state(job_id, JobState.FAILED, reason)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _publishing_logs(ctx: JobContext, job_id: str, work: Path) -> Iterator[None]:
    """Copy the growing logs to the job record every few seconds (for `nps logs -f`), and once at the end."""
    done = threading.Event()

    def save() -> None:
        for name in LOG_NAMES:
            path = work / f"{name}.log"
            if path.exists():
                ctx.records.save_log(job_id, name, path)

    def loop() -> None:
        while not done.wait(LOG_PUBLISH_S):
            with contextlib.suppress(NPSError, OSError):
                save()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        save()


def sweep_leftovers(ctx: JobContext) -> list[str]:
    """Remove scratch folders and partial stagings of dead processes on this host."""
    return [*sweep(ctx.workdir, "job-*"), *ctx.stage.sweep()]


def _add_logs(output: Path, work: Path) -> None:
    """Put the logs in the result at ``.nps/job/`` without ever following a link the job made.

    ``/output`` belongs to the (finished) container: ``.nps`` or ``.nps/job`` may be symlinks
    pointing anywhere on this host. A symlinked ``.nps`` is left alone (the store refuses it
    later, failing the job); whatever the job put at ``.nps/job`` is replaced.
    """
    meta = output / ".nps"
    if meta.is_symlink() or (meta.exists() and not meta.is_dir()):
        return
    meta.mkdir(exist_ok=True)
    logs = output / LOG_DIR_IN_RESULT
    if logs.is_symlink() or logs.is_file():
        logs.unlink()
    elif logs.exists():
        shutil.rmtree(logs)
    logs.mkdir()
    for name in LOG_NAMES:
        fd = os.open(logs / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out, (work / f"{name}.log").open("rb") as src:
            shutil.copyfileobj(src, out)


def _write_parameters(request: JobRequested, work: Path) -> None:
    """The folder mounted read-only at ``/nps``: the job's parameters as JSON."""
    folder = work / "nps"
    folder.mkdir()
    (folder / PARAMETERS_FILE).write_bytes(parameters_json(request.spec.parameters))
    os.chmod(folder / PARAMETERS_FILE, 0o644)
    os.chmod(folder, 0o755)  # readable by the container's unprivileged user


def _fresh_output(work: Path) -> Path:
    output = work / "output"
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir()
    os.chmod(output, 0o777)  # the container runs as an unprivileged user
    return output


def _run_request(request: JobRequested, mounts: dict[str, Path], output: Path, work: Path,
                 log_limit_bytes: int) -> RunRequest:
    res = request.resources
    return RunRequest(
        image=request.spec.image,
        command=request.spec.command,
        mounts=(*(Mount(path, mount) for mount, path in mounts.items()), Mount(work / "nps", PARAMETERS_DIR),
                Mount(output, OUTPUT_MOUNT, read_only=False)),
        env=container_env(request.spec),
        stdout=work / "stdout.log",
        stderr=work / "stderr.log",
        memory_mb=res.memory_mb,
        cpu=res.cpu,
        pids=res.pids,
        walltime_s=res.walltime_s,
        network=res.network,
        log_limit_bytes=log_limit_bytes,
        labels={"nps.job": request.job_id},
    )


def _commit(ctx: JobContext, request: JobRequested, output: Path, work: Path, result: RunResult,
            started: datetime) -> JobStatus:
    job_id = request.job_id
    ctx.records.set_state(job_id, JobState.UPLOADING)
    _add_logs(output, work)
    record = DatasetRecord(
        id=job_id,
        project=request.project,
        origin=ResultOrigin(job=request.spec, resources=request.resources, exit_code=result.exit_code,
                            started_at=started, finished_at=datetime.now(UTC), host=socket.gethostname(),
                            duration_s=round(result.duration_s, 3), peak_memory_mb=result.peak_memory_mb),
        inputs=request.spec.inputs,
    )
    try:
        ctx.store.put(job_id, output, record)
    except (InvalidSource, OSError) as exc:  # e.g. an escaping symlink, an unreadable file
        return ctx.records.set_state(job_id, JobState.FAILED, f"output cannot be stored: {exc}")
    return ctx.records.set_state(job_id, JobState.COMPLETE)
