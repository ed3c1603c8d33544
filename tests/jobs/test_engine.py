"""The container engine adapter against the real Podman: what a restarted worker cleans up."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys

import docker.errors

from nps.config import Settings
from nps.engine import DockerEngine
from tests.jobs.conftest import BUSYBOX


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # exited and reaped: no such process (pids are not reused this quickly)


def test_reaping_removes_job_containers_of_dead_workers_on_this_host_only(settings: Settings, busybox_id: str) -> None:
    engine = DockerEngine(settings.docker_host)
    host = socket.gethostname()
    owners = {"dead": f"{host}:{dead_pid()}", "alive": f"{host}:{os.getpid()}", "elsewhere": "other-host:1"}
    made = {name: engine.client.api.create_container(BUSYBOX, ["true"], labels={"nps": "job", "nps.owner": owner})["Id"]
            for name, owner in owners.items()}
    try:
        removed = engine.reap_orphans()
        left = {c["Id"] for c in engine.client.api.containers(all=True, filters={"label": "nps=job"})}
        assert made["dead"][:12] in removed and made["dead"] not in left
        assert made["alive"] in left and made["elsewhere"] in left  # a live worker's, another host's
    finally:
        for cid in made.values():
            with contextlib.suppress(docker.errors.NotFound):  # already reaped
                engine.client.api.remove_container(cid, force=True)
