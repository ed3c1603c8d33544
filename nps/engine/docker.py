"""The Docker API adapter (Docker, or Podman's compatible socket), via the ``docker`` SDK.

Every container runs with all capabilities dropped, no privilege escalation, a non-root
user, memory (no swap), cpu and pids limits, no network unless asked, and is killed at its
walltime. Its stdout and stderr are streamed to files as it runs, each capped in size.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import docker
import docker.errors
import requests
from docker.types import Mount as DockerMount

from nps.engine import k8slog
from nps.engine.base import ContainerEngine, HeldImage, RunRequest, RunResult, valid_reference
from nps.errors import EngineUnavailable, ImageNotFound

POLL_FAST_S, POLL_SLOW_S, FAST_FOR_S = 0.01, 0.1, 2.0  # short jobs are noticed at once
STATS_EVERY_S = 1.0
TRUNCATION_NOTE = b"\n[nps: log truncated at %d bytes]\n"
OWNER = f"{socket.gethostname()}:{os.getpid()}"  # lets a later worker reap our containers if we die


class DockerEngine(ContainerEngine):
    """Runs job containers through the Docker API."""

    def __init__(self, base_url: str | None = None) -> None:
        try:
            if base_url:
                self.client = docker.DockerClient(base_url=base_url, timeout=60)
            else:
                self.client = docker.from_env(timeout=60)
        except docker.errors.DockerException as exc:
            raise EngineUnavailable(f"no container engine reachable ({exc}); run `make up`") from exc

    @contextlib.contextmanager
    def _api(self, what: str) -> Iterator[None]:
        try:
            yield
        except docker.errors.ImageNotFound as exc:
            raise ImageNotFound(f"{what}: image not found in the container engine") from exc
        except (docker.errors.APIError, docker.errors.DockerException, requests.RequestException) as exc:
            raise EngineUnavailable(f"{what}: container engine error: {exc}") from exc

    def resolve_image(self, reference: str) -> str:
        if not valid_reference(reference):
            raise ImageNotFound(f"invalid image reference {reference[:80]!r}: "
                                "expected NAME[:TAG][@DIGEST] or an image ID")
        with self._api(f"image {reference!r}"):
            return str(self.client.images.get(reference).id)

    def images(self, references: Sequence[str] = ()) -> list[HeldImage]:
        if not references:
            with self._api("listing images"):
                found = self.client.api.images()
        else:
            found = [self._inspect(reference) for reference in references]
        return [held for held in map(_held, found) if held.tags or held.digests]

    def _inspect(self, reference: str) -> dict[str, Any]:
        if not valid_reference(reference):
            raise ImageNotFound(f"invalid image reference {reference[:80]!r}")
        with self._api(f"image {reference!r}"):
            return dict(self.client.images.get(reference).attrs)

    def run(self, request: RunRequest, cancel: threading.Event | None = None) -> RunResult:
        with self._api(f"running {request.image[:19]}"):
            container = self.client.containers.create(**_create_args(request, OWNER))
        try:
            return self._supervise(container, request, cancel or threading.Event())
        finally:
            with contextlib.suppress(docker.errors.DockerException, requests.RequestException):
                container.remove(force=True)

    def reap_orphans(self) -> list[str]:
        """Remove job containers left by dead processes of this host (e.g. a SIGKILLed worker)."""
        removed = []
        with self._api("listing job containers"):
            # The plain listing: the SDK's would inspect each container, and one that another
            # worker removes meanwhile fails the whole listing (Podman answers 500, not 404).
            for container in self.client.api.containers(all=True, filters={"label": "nps=job"}):
                host, _, pid = str((container.get("Labels") or {}).get("nps.owner", "")).rpartition(":")
                if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
                    with contextlib.suppress(docker.errors.NotFound):
                        self.client.api.remove_container(container["Id"], force=True)
                    removed.append(str(container["Id"])[:12])
        return removed

    def _supervise(self, container: Any, request: RunRequest, cancel: threading.Event) -> RunResult:
        started = time.monotonic()
        with self._api("starting container"):
            container.start()
        followers = [_Follower(container, path, kind, request.log_limit_bytes)
                     for path, kind in ((request.stdout, "stdout"), (request.stderr, "stderr"))]
        for t in followers:
            t.start()
        try:
            timed_out = cancelled = False
            peak = 0.0
            next_stats = started + STATS_EVERY_S
            with self._api("supervising container"):
                while True:
                    container.reload()
                    if container.status in ("exited", "dead", "stopped"):
                        break
                    now = time.monotonic()
                    if now - started > request.walltime_s or cancel.is_set():
                        timed_out, cancelled = not cancel.is_set(), cancel.is_set()
                        container.kill()
                        container.wait(timeout=30)
                        break
                    if now >= next_stats:
                        peak = max(peak, _memory_mb(container))
                        next_stats = now + STATS_EVERY_S
                    time.sleep(POLL_FAST_S if now - started < FAST_FOR_S else POLL_SLOW_S)
                container.reload()
        except BaseException:
            for follower in followers:
                follower.stop()  # no reads of a container being abandoned
            raise
        with self._api("reading the container's logs"):
            for follower in followers:
                follower.finish()
        state = container.attrs.get("State", {})
        return RunResult(
            exit_code=None if (timed_out or cancelled) else int(state.get("ExitCode", -1)),
            # Podman on cgroup v1 does not always set OOMKilled. We only ever SIGKILL a container
            # for its walltime or a cancel, both tracked: any other SIGKILL (exit 137) is the
            # kernel's OOM killer enforcing the memory limit.
            oom_killed=bool(state.get("OOMKilled")) or (not timed_out and not cancelled
                                                         and state.get("ExitCode") == 137),
            timed_out=timed_out,
            cancelled=cancelled,
            duration_s=time.monotonic() - started,
            peak_memory_mb=peak or None,
        )


def _held(image: dict[str, Any]) -> HeldImage:
    """An image as the Docker API lists or inspects it (Docker writes ``<none>`` for no name)."""
    created = image.get("Created")
    when = (datetime.fromtimestamp(created, UTC) if isinstance(created, int | float)
            else datetime.fromisoformat(created) if isinstance(created, str) and created else None)
    named = [n for n in (*(image.get("RepoTags") or ()), *(image.get("RepoDigests") or ())) if "<none>" not in n]
    return HeldImage(id=str(image["Id"]) if str(image["Id"]).startswith("sha256:") else f"sha256:{image['Id']}",
                     tags=tuple(n for n in named if "@" not in n), digests=tuple(n for n in named if "@" in n),
                     size=image.get("Size"), created=when)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_args(request: RunRequest, owner: str) -> dict[str, Any]:
    return {
        "image": request.image,
        "command": list(request.command),
        "user": request.user,
        "environment": request.env,
        # A list, not the SDK's dict keyed by host path: one dataset may be mounted twice.
        "mounts": [DockerMount(target=m.target, source=str(m.source), type="bind", read_only=m.read_only)
                   for m in request.mounts],
        "network_mode": "bridge" if request.network else "none",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": f"{request.memory_mb}m",
        "memswap_limit": f"{request.memory_mb}m",
        "nano_cpus": int(request.cpu * 1e9),
        "pids_limit": request.pids,
        "labels": {"nps": "job", "nps.owner": owner, **request.labels},
        "working_dir": "/output",
        "detach": True,
    }


def _memory_mb(container: Any) -> float:
    try:
        usage = container.stats(stream=False, one_shot=True).get("memory_stats", {}).get("usage") or 0
    except (docker.errors.DockerException, requests.RequestException):
        return 0.0
    return float(usage) / (1024 * 1024)


class _Follower(threading.Thread):
    """Copies one output stream of a running container to ``path``, keeping at most ``limit``
    bytes, so that logs can be followed while the job runs.

    While it runs, the engine's log file is tailed when it keeps one here in k8s-file format
    (``k8slog.follow``), else the API's followed stream is copied. Once the container has
    exited, ``finish`` rewrites ``path`` from one plain read of the whole log, and the follower
    writes nothing more. Two reasons: Podman ends a followed stream only about 250 ms after
    the container exits (it polls the log file), which every job would wait for; and a
    followed stream of a fast writer has been seen to lose and garble lines (k8s-file logs:
    13,788 of 100,000 lines), while the plain read returns every line.
    """

    def __init__(self, container: Any, path: Path, kind: str, limit: int) -> None:
        super().__init__(daemon=True, name=f"logs-{kind}")
        self.container, self.path, self.kind, self.limit = container, path, kind, limit
        self._lock = threading.Lock()
        self._abandoned = False
        # Opened here, not in the thread: a follower that starts late must not truncate the
        # file ``finish`` wrote; once that has replaced ``path``, its writes go nowhere.
        self._out = path.open("wb")

    def run(self) -> None:
        # Tailing the log file (when the engine keeps one here) costs next to nothing and is
        # exact; the API's followed stream costs the worker ~2.4 s of CPU per MiB of log.
        log = k8slog.log_file(self.container.attrs)
        chunks = (k8slog.follow(log, self.kind, lambda: self._abandoned) if log is not None
                  else self._api_chunks(follow=True))
        with self._out, contextlib.suppress(OSError):  # the file vanished: ``finish`` reads what is left
            try:
                self._copy(chunks, self._out, self._lock)
            except k8slog.NotK8sLog:  # it was empty when looked at, then not k8s-file: nothing copied yet
                self._copy(self._api_chunks(follow=True), self._out, self._lock)

    def stop(self) -> None:
        """Read no more (the run is being abandoned); what was kept stays."""
        with self._lock:
            self._abandoned = True

    def finish(self) -> None:
        """The container has exited: put its whole (capped) log at ``path``, read from the log
        file when the engine keeps one here that we can read (``k8slog``: ~20x faster than
        the API for a long log), else through the API. If that read fails, what was followed
        stays."""
        self.stop()  # every write of the follower is flushed under its lock: none is pending
        whole = self.path.with_name(self.path.name + ".whole")
        complete = False
        if (log := k8slog.log_file(self.container.attrs)) is not None:
            with contextlib.suppress(OSError), whole.open("wb") as out:
                complete = self._copy(k8slog.read_stream(log, self.kind), out, None)
        if not complete:
            with whole.open("wb") as out:
                complete = self._copy(self._api_chunks(follow=False), out, None)
        if complete:
            os.replace(whole, self.path)
        else:
            whole.unlink(missing_ok=True)

    def _api_chunks(self, follow: bool) -> Iterator[bytes]:
        """The log through the engine's API (asked for at the first chunk: inside ``_copy``)."""
        kind = self.kind
        yield from self.container.logs(stream=True, follow=follow, stdout=kind == "stdout", stderr=kind == "stderr")

    def _copy(self, chunks: Iterator[bytes], out: BinaryIO, lock: threading.Lock | None) -> bool:
        """Copy ``chunks`` to ``out`` up to the limit; False if the engine failed on the way
        (a log file that cannot be read raises OSError)."""
        written = 0
        try:
            for chunk in chunks:
                with lock or contextlib.nullcontext():
                    if lock is not None and self._abandoned:
                        return True
                    part = chunk[: self.limit - written]
                    out.write(part)
                    out.flush()
                    written += len(part)
                    if written >= self.limit:
                        out.write(TRUNCATION_NOTE % self.limit)
                        out.flush()
                        return True  # nothing more will be kept: stop reading
        except (docker.errors.DockerException, requests.RequestException):
            with lock or contextlib.nullcontext():
                if lock is None or not self._abandoned:
                    out.write(b"\n[nps: log stream interrupted]\n")
                    out.flush()
            return False
        return True
