"""Kept job logs read from the engine's k8s-file log file instead of its (slow) API."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import docker.errors
import pytest

from nps.config import Settings
from nps.engine import DockerEngine
from nps.engine.k8slog import NotK8sLog, follow, log_file, read_stream, stream_lines
from tests.jobs.conftest import BUSYBOX

LOG = [
    b"2026-11-27T19:00:00.000000001+00:00 stdout F first line\n",
    b"2026-11-27T19:00:00.000000002+00:00 stderr F an error: with  two spaces\n",
    b"2026-11-27T19:00:00.000000002+00:00 stderr F 10%\r50%\r100%\n",  # a progress bar
    b"2026-11-27T19:00:00.000000003+00:00 stdout P a long line in \n",
    b"2026-11-27T19:00:00.000000004+00:00 stdout F two parts\n",
    b"2026-11-27T19:00:00.000000005+00:00 stdout F \n",  # an empty line
    b"2026-11-27T19:00:00.000000006+00:00 stdout F\n",  # an empty line, written without the space
    b"garbage\n",
    b"2026-11-27T19:00:00.000000007+00:00 stdout P no newline at the end\n",
]


def test_lines_are_joined_per_stream_with_partial_lines_continued() -> None:
    assert b"".join(stream_lines(LOG, "stdout")) == b"first line\na long line in two parts\n\n\nno newline at the end"
    assert b"".join(stream_lines(LOG, "stderr")) == b"an error: with  two spaces\n10%\r50%\r100%\n"


def test_a_log_file_is_read_in_chunks_that_add_up_to_the_stream(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(b"".join(LOG * 1000))
    chunks = list(read_stream(path, "stdout", chunk=4096))
    assert len(chunks) > 1 and b"".join(chunks) == b"".join(stream_lines(LOG * 1000, "stdout"))


def test_a_growing_log_is_followed_line_by_line_until_stopped(tmp_path: Path) -> None:
    """Written in pieces that end mid-line: only complete lines come out, each once, and what
    was written before the stop is still read."""
    path = tmp_path / "ctr.log"
    path.write_bytes(b"")
    data = b"".join(LOG * 200)
    stop = threading.Event()

    def writer() -> None:
        with path.open("ab") as fh:
            for start in range(0, len(data), 777):
                fh.write(data[start:start + 777])
                fh.flush()
                time.sleep(0.002)
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    got = b"".join(follow(path, "stdout", stop.is_set, interval=0.01))
    thread.join()
    assert got == b"".join(stream_lines(LOG * 200, "stdout"))
    assert b"".join(follow(path, "stderr", lambda: True)) == b"".join(read_stream(path, "stderr"))


def test_a_followed_file_that_turns_out_not_to_be_k8s_format_is_refused(tmp_path: Path) -> None:
    """Empty when first looked at (so taken), then Docker's json-file lines arrive."""
    path = tmp_path / "json.log"
    path.write_bytes(b'{"log":"hi\\n","stream":"stdout","time":"2026-11-27T19:00:00.1Z"}\n')
    with pytest.raises(NotK8sLog):
        list(follow(path, "stdout", lambda: True))


def test_only_a_readable_log_file_in_k8s_format_is_used(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(b"".join(LOG))
    attrs = {"LogPath": str(path), "HostConfig": {"LogConfig": {"Type": "json-file"}}}  # what Podman says
    assert log_file(attrs) == path
    docker_json = tmp_path / "json.log"
    docker_json.write_bytes(b'{"log":"hi\\n","stream":"stdout","time":"2026-11-27T19:00:00.1Z"}\n')
    assert log_file({"LogPath": str(docker_json)}) is None  # Docker's json-file: through the API
    assert log_file({"LogPath": str(tmp_path / "gone.log")}) is None
    assert log_file({}) is None
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    assert log_file({"LogPath": str(empty)}) == empty  # nothing written yet: nothing to read either way


def test_the_log_file_of_a_real_container_says_what_the_engine_api_says(settings: Settings, busybox_id: str) -> None:
    """On this stack (Podman, k8s-file) the file is found, and reading it gives the API's bytes."""
    engine = DockerEngine(settings.docker_host)
    script = "seq 1 20000; printf 'no newline'; printf 'oops\\n' >&2; head -c 20000 /dev/zero | tr '\\0' x"
    cid = engine.client.api.create_container(BUSYBOX, ["sh", "-c", script])["Id"]
    try:
        container = engine.client.containers.get(cid)
        container.start()
        container.wait(timeout=60)
        container.reload()
        path = log_file(container.attrs)
        assert path is not None, container.attrs.get("LogPath")
        for stream in ("stdout", "stderr"):
            api = container.logs(stdout=stream == "stdout", stderr=stream == "stderr")
            assert b"".join(read_stream(path, stream)) == api
        assert api == b"oops\n"
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            engine.client.api.remove_container(cid, force=True)
