"""Job commands: run (local), submit (servers), status, logs, wait, cancel, jobs ls."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.table import Table

from nps.cli import remote_jobs
from nps.cli.context import state_from, store_from
from nps.cli.output import emit_json, err, out
from nps.cli.remote import client_for
from nps.errors import BrokerUnavailable, JobNotFound
from nps.hashing import check_dataset_id
from nps.jobs import TERMINAL, JobRecords, execute, job_context, records_for
from nps.jobs.submit import build_request
from nps.jobs.submit import submit as submit_job
from schemas.messages import JobState, JobStatus

jobs_app = typer.Typer(help="List jobs.", no_args_is_help=True)
JOB_CONTEXT = {"allow_interspersed_args": False}  # everything after IMAGE belongs to the command

ImageArg = Annotated[str, typer.Argument(help="Image tag or ID (resolved to its immutable ID).", show_default=False)]
CmdArg = Annotated[list[str], typer.Argument(help="Command and arguments run in the container.", show_default=False)]
InputOpt = Annotated[list[str] | None, typer.Option("-d", "--input", help="HASH:/mount (read-only), repeatable.")]
EnvOpt = Annotated[list[str] | None, typer.Option("-e", "--env", help="KEY=VALUE in the container, repeatable.")]
ParamOpt = Annotated[list[str] | None, typer.Option(
    "-p", "--param", help="KEY=VALUE parameter, repeatable: $KEY in the container and in /nps/parameters.json.")]
CpuOpt = Annotated[float, typer.Option(help="CPUs.")]
MemOpt = Annotated[str, typer.Option(help="Memory limit, e.g. 512M, 4G.")]
WallOpt = Annotated[str, typer.Option(help="Walltime: seconds, or 30m, 2h.")]
GpuOpt = Annotated[int, typer.Option(min=0, max=64, help="GPUs (not supported yet: refused if > 0).")]
NetOpt = Annotated[bool, typer.Option("--network", help="Give the container a network (off by default).")]
RetryOpt = Annotated[int, typer.Option(help="Re-run after a non-zero exit this many times.")]
ProjectOpt = Annotated[str | None, typer.Option(help="Project the result belongs to.")]
JobArg = Annotated[str, typer.Argument(help="Job id (= result dataset id).", show_default=False)]


def run(
    ctx: typer.Context, image: ImageArg, command: CmdArg, inputs: InputOpt = None, env: EnvOpt = None,
    params: ParamOpt = None, cpu: CpuOpt = 1.0, memory: MemOpt = "2G", walltime: WallOpt = "1h",
    network: NetOpt = False, retries: RetryOpt = 0, project: ProjectOpt = None, gpu: GpuOpt = 0,
) -> None:
    """Run a job here, against the local store (no servers needed), and print the result id.

    If the result already exists it is printed at once and nothing runs.
    """
    settings = state_from(ctx).settings
    store = store_from(ctx, default="local")
    jc = job_context(settings, store)
    request = build_request(store, jc.engine.resolve_image(image), command, inputs, env, params, cpu, memory,
                            walltime, network, retries, project, gpu)
    if store.exists(request.job_id):
        print(request.job_id)
        return
    jc.records.save_request(request)
    err.print(f"running job {request.job_id} ({' '.join(command)[:60]})")
    status = execute(jc, request)
    if status.state != JobState.COMPLETE:
        err.print(f"[red]{status.state.value}[/red]: {status.reason}  (see: nps logs {request.job_id})")
        print(request.job_id)
        sys.exit(1)
    print(request.job_id)


def submit(
    ctx: typer.Context, image: ImageArg, command: CmdArg, inputs: InputOpt = None, env: EnvOpt = None,
    params: ParamOpt = None, cpu: CpuOpt = 1.0, memory: MemOpt = "2G", walltime: WallOpt = "1h",
    network: NetOpt = False, retries: RetryOpt = 0, project: ProjectOpt = None, gpu: GpuOpt = 0,
) -> None:
    """Queue a job on the servers and print its id at once (the result may not exist yet).

    Follow it with `nps status`, `nps logs`, `nps wait`. Inputs must be in MinIO. With an API
    configured (`nps login`) and no --store, the job goes through the API.
    """
    if (api := client_for(ctx)) is not None:
        remote_jobs.submit(api, image, command, inputs, env, params, cpu, memory, walltime, network, retries,
                           project, gpu)
        return
    settings = state_from(ctx).settings
    store = store_from(ctx, default="minio")
    from nps.broker import Publisher, topology
    from nps.engine import DockerEngine

    request = build_request(store, DockerEngine(settings.docker_host).resolve_image(image), command, inputs, env,
                            params, cpu, memory, walltime, network, retries, project, gpu)
    publisher = Publisher(topology(settings))
    try:
        submit_job(store, records_for(store), publisher, request)
    except BrokerUnavailable as exc:
        raise BrokerUnavailable(f"job {request.job_id} was not queued (submit it again): {exc}") from exc
    finally:
        publisher.close()
    print(request.job_id)


def status(ctx: typer.Context, job_id: JobArg, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a job's state and its timestamped history."""
    if (api := client_for(ctx)) is not None:
        remote_jobs.status(api, job_id, as_json)
        return
    records = records_for(store_from(ctx))
    history = records.history(check_dataset_id(job_id))
    if not history:
        raise JobNotFound(f"no job {job_id}")
    if as_json:
        emit_json({"job_id": job_id, "state": history[-1].state.value, "reason": history[-1].reason,
                   "history": [h.model_dump(mode="json") for h in history]})
        return
    table = Table("time", "state", "reason", "host", box=None, header_style="bold")
    for h in history:
        table.add_row(h.created_at.strftime("%Y-%m-%d %H:%M:%S"), h.state.value, h.reason or "", h.host or "")
    out.print(table)


def logs(
    ctx: typer.Context, job_id: JobArg,
    stream: Annotated[str, typer.Option(help="stdout or stderr.")] = "stdout",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Print as the job runs, until it ends.")] = False,
) -> None:
    """Print a job's stdout (or stderr): kept with the job whether it succeeded or failed.

    With -f, new output appears every few seconds while the job runs (workers copy it to the
    job record as it grows), and the command returns when the job ends.
    """
    if stream not in ("stdout", "stderr"):
        raise typer.BadParameter("stdout or stderr", param_hint="--stream")
    if (api := client_for(ctx)) is not None:
        remote_jobs.logs(api, job_id, stream, follow)
        return
    records = records_for(store_from(ctx))
    check_dataset_id(job_id)
    printed = 0
    while True:
        ended = not follow or records.state(job_id).state in TERMINAL
        data = records.log(job_id, stream) or b""
        if len(data) > printed:
            sys.stdout.buffer.write(data[printed:])
            sys.stdout.buffer.flush()
            printed = len(data)
        if ended:
            break
        time.sleep(1.0)
    if not printed and not follow:
        records.state(job_id)  # JobNotFound if there is no such job
        err.print("no output (yet)")


def _wait(records: JobRecords, job_id: str, timeout: float | None) -> JobStatus:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = records.state(job_id)
        if current.state in TERMINAL:
            return current
        if deadline is not None and time.monotonic() > deadline:
            return current
        time.sleep(0.2)


def wait(ctx: typer.Context, job_id: JobArg,
         timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds.")] = None) -> None:
    """Wait until a job ends; exit 0 if COMPLETE, 1 if FAILED or CANCELLED, 2 on timeout."""
    if (api := client_for(ctx)) is not None:
        remote_jobs.wait(api, job_id, timeout)
        return
    current = _wait(records_for(store_from(ctx)), check_dataset_id(job_id), timeout)
    err.print(f"{job_id}: {current.state.value}" + (f" ({current.reason})" if current.reason else ""))
    if current.state not in TERMINAL:
        sys.exit(2)
    if current.state != JobState.COMPLETE:
        sys.exit(1)


def cancel(ctx: typer.Context, job_id: JobArg) -> None:
    """Cancel a queued or running job (a finished job is left as it is)."""
    if (api := client_for(ctx)) is not None:
        remote_jobs.cancel(api, job_id)
        return
    records = records_for(store_from(ctx))
    current = records.state(check_dataset_id(job_id))
    if current.state in TERMINAL:
        err.print(f"{job_id} already ended: {current.state.value}")
        return
    records.request_cancel(job_id)
    err.print(f"cancellation requested for {job_id}")


@jobs_app.command("ls")
def jobs_ls(
    ctx: typer.Context,
    state: Annotated[list[JobState] | None, typer.Option("--state", help="Only jobs in these states.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List jobs with their latest state."""
    rows: list[dict[str, str]] = []
    if (api := client_for(ctx)) is not None:
        rows = remote_jobs.jobs_rows(api, [s.value for s in state or []])
    else:
        records = records_for(store_from(ctx))
        for job_id in records.ids():
            history = records.history(job_id)
            if history and (not state or history[-1].state in state):
                rows.append({"job_id": job_id, "state": history[-1].state.value,
                             "reason": history[-1].reason or "", "updated": history[-1].created_at.isoformat()})
    if as_json:
        emit_json(rows)
        return
    table = Table("job", "state", "updated", "reason", box=None, header_style="bold")
    for r in rows:
        table.add_row(r["job_id"], r["state"], r["updated"][:19], r["reason"])
    out.print(table)


def register(app: typer.Typer) -> None:
    """Attach the job commands to the top-level app."""
    app.command(context_settings=JOB_CONTEXT)(run)
    app.command(context_settings=JOB_CONTEXT)(submit)
    for fn in (status, logs, wait, cancel):
        app.command()(fn)
    app.add_typer(jobs_app, name="jobs")
