"""Processor tests reuse the import fixtures (private queues, bucket, index; real processes)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from nps.config import Settings
from tests.ingest.conftest import env_for, ingest_settings, pipeline, processes, wait_for_echo  # noqa: F401 (fixtures)
from tests.jobs.conftest import busybox_id  # noqa: F401 (fixture)
from tests.processors.helpers import topology_of, wait_consuming

#: The calling AE title whose instances the receiver of ``stack`` files under project "alpha".
ALPHA_AE = "ALPHA"


@dataclass
class Stack:
    """The running servers: settings, the environment of `nps` commands, the processor folder."""

    settings: Settings
    env: dict[str, str]
    folder: Path
    processors: subprocess.Popen[str]


@pytest.fixture
def stack(pipeline: Settings, processes: Callable[..., subprocess.Popen[str]],  # noqa: F811 (fixtures)
          busybox_id: str, tmp_path: Path) -> Callable[..., Stack]:  # noqa: F811
    """Start the job worker, the processor worker (on the files given) and a receiver, and wait
    until each is ready."""

    def start(files: dict[str, str] | None = None) -> Stack:
        folder = tmp_path / "processors"
        folder.mkdir()
        for name, text in (files or {}).items():
            (folder / name).write_text(text)
        env = env_for(pipeline) | {"NPS_AE_PROJECTS": json.dumps({ALPHA_AE: "alpha"})}
        topology = topology_of(pipeline)
        wait_consuming(pipeline, topology.jobs, processes("worker", "jobs", "-c", "2", env=env))
        worker = processes("worker", "processors", "--dir", str(folder), env=env)
        wait_consuming(pipeline, topology.processors, worker)
        receiver = processes("receiver", "--processes", "1", env=env)
        wait_for_echo(pipeline.dicom_port, receiver)
        return Stack(pipeline, env, folder, worker)

    return start
