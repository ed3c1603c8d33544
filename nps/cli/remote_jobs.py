"""The job commands (submit, status, logs, wait, cancel) through the REST API."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich.table import Table

from nps.cli.output import emit_json, err, out
from nps.hashing import check_dataset_id
from nps.jobs.plan import build_resources, parse_assignment, parse_input

if TYPE_CHECKING:
    from nps.client import Client

TERMINAL = frozenset({"COMPLETE", "FAILED", "CANCELLED"})


def submit(api: Client, image: str, command: list[str], inputs: list[str] | None, env: list[str] | None,
           params: list[str] | None, cpu: float, memory: str, walltime: str, network: bool, retries: int,
           project: str | None, gpu: int) -> None:
    """Queue a job through the API; prints its id (the same id a local submit would give)."""
    resources = build_resources(cpu, memory, walltime, gpu, network, retries)
    answer = api.submit(image, command, [parse_input(i) for i in inputs or []],
                        dict(parse_assignment(e, "-e") for e in env or []),
                        dict(parse_assignment(p, "-p") for p in params or []),
                        resources.model_dump(mode="json"), project)
    print(answer["job_id"])


def _reason(job: dict[str, Any]) -> str | None:
    history = job.get("history") or []
    return history[-1].get("reason") if history else None


def status(api: Client, job_id: str, as_json: bool) -> None:
    """A job's state and history, as `nps status` prints them."""
    job = api.job(check_dataset_id(job_id))
    history = job.get("history") or []
    if as_json:
        emit_json({"job_id": job_id, "state": job["state"], "reason": _reason(job), "history": history})
        return
    table = Table("time", "state", "reason", "host", box=None, header_style="bold")
    for h in history:
        when = datetime.fromisoformat(h["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(when, h["state"], h.get("reason") or "", h.get("host") or "")
    if not history:
        table.add_row("", job["state"], "", "")
    out.print(table)


def logs(api: Client, job_id: str, stream: str, follow: bool) -> None:
    """Print a job's output; with ``follow``, until the job ends."""
    check_dataset_id(job_id)
    printed = 0
    while True:
        ended = not follow or api.job(job_id)["state"] in TERMINAL
        data = api.logs(job_id, "stderr" if stream == "stderr" else "stdout")
        if len(data) > printed:
            sys.stdout.buffer.write(data[printed:])
            sys.stdout.buffer.flush()
            printed = len(data)
        if ended:
            break
        time.sleep(1.0)
    if not printed and not follow:
        api.job(job_id)  # JobNotFound if there is no such job
        err.print("no output (yet)")


def wait(api: Client, job_id: str, timeout: float | None) -> None:
    """Wait for a job; exit 0 COMPLETE, 1 FAILED/CANCELLED, 2 on timeout."""
    job = api.wait(check_dataset_id(job_id), timeout)
    reason = _reason(job)
    err.print(f"{job_id}: {job['state']}" + (f" ({reason})" if reason else ""))
    if job["state"] not in TERMINAL:
        sys.exit(2)
    if job["state"] != "COMPLETE":
        sys.exit(1)


def cancel(api: Client, job_id: str) -> None:
    """Ask a job to stop unless it already ended."""
    job = api.job(check_dataset_id(job_id))
    if job["state"] in TERMINAL:
        err.print(f"{job_id} already ended: {job['state']}")
        return
    api.cancel(job_id)
    err.print(f"cancellation requested for {job_id}")


def jobs_rows(api: Client, states: list[str]) -> list[dict[str, str]]:
    """`nps jobs ls`'s rows through the API."""
    return [{"job_id": j["job_id"], "state": j["state"], "reason": j.get("reason") or "",
             "updated": j.get("updated") or ""} for j in api.iter_jobs(states)]
