"""Staging inputs: a local, content-addressed cache of datasets, shared read-only by jobs.

``$NPS_CACHE/stage/<id>.r<revision>/`` holds a verified copy of one dataset revision. A job
holds a shared flock on ``<entry>.lock`` while it uses the entry; eviction (least recently used
first, down to the size limit) takes the lock exclusively without waiting, so an entry in use
is never evicted. A second job on the same inputs downloads nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from nps.errors import DatasetNotFound, NPSError
from nps.layout import MANIFEST_PATH
from nps.locks import is_free
from nps.store import DatasetStore, LocalStore
from schemas.job import JobInput
from schemas.manifest import Manifest


class InputUnavailable(NPSError):
    """Raised when a job's input dataset no longer exists or has another revision than pinned."""


class StageCache:
    """Datasets staged on local disk for jobs, with a size limit and LRU eviction."""

    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = root
        self.limit_bytes = limit_bytes

    @contextlib.contextmanager
    def staged(self, store: DatasetStore, inputs: tuple[JobInput, ...]) -> Iterator[dict[str, Path]]:
        """Mount point -> local folder for every input, held in use until the block ends."""
        with contextlib.ExitStack() as stack:
            yield {i.mount: stack.enter_context(self._use(store, i)) for i in inputs}
        with contextlib.suppress(OSError):  # housekeeping must never change how a job ended
            self.evict()

    @contextlib.contextmanager
    def _use(self, store: DatasetStore, inp: JobInput) -> Iterator[Path]:
        manifest = _pinned_manifest(store, inp)
        if isinstance(store, LocalStore):  # already on this disk, immutable: mount in place
            yield store.path(inp.dataset)
            return
        self.root.mkdir(parents=True, exist_ok=True)
        entry = self.root / f"{inp.dataset}.r{inp.revision}"
        fd = os.open(entry.with_name(entry.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not (entry / MANIFEST_PATH).is_file():
                self._fill(store, inp, entry, manifest)
            now = time.time_ns()  # explicit: file times otherwise tick at the kernel's coarse clock
            os.utime(entry, ns=(now, now))  # last used, for LRU
            yield entry
        finally:
            os.close(fd)

    def _fill(self, store: DatasetStore, inp: JobInput, entry: Path, manifest: Manifest) -> None:
        fill_fd = os.open(entry.with_name(entry.name + ".fill"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fill_fd, fcntl.LOCK_EX)  # one download per entry, others wait for it
            if (entry / MANIFEST_PATH).is_file():
                return
            tmp = self.root / f".tmp-{entry.name}-{uuid.uuid4().hex[:8]}"  # swept if we die: see sweep()
            try:
                got = store.get(inp.dataset, tmp, manifest=manifest)
                if got.revision != manifest.revision:
                    raise InputUnavailable(f"input {inp.dataset} changed while it was being staged")
                shutil.rmtree(entry, ignore_errors=True)
                os.rename(tmp, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        finally:
            os.close(fill_fd)

    def sweep(self) -> list[str]:
        """Remove partial downloads of dead processes (their entry's fill lock is free)."""
        # .tmp-<entry>-<random> belongs to whoever holds <entry>.fill while downloading
        return _sweep_tmp(self.root)

    def size(self) -> int:
        """Bytes held by complete entries."""
        return sum(_entry_size(e) for e in self._entries())

    def _entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]

    def evict(self) -> list[str]:
        """Remove least recently used entries not in use until under the limit; return their names."""
        entries = sorted(self._entries(), key=_last_used)
        total = sum(_entry_size(e) for e in entries)
        evicted = []
        for entry in entries:
            if total <= self.limit_bytes:
                break
            fd = os.open(entry.with_name(entry.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # in use by a job
            try:
                size = _entry_size(entry)
                shutil.rmtree(entry, ignore_errors=True)
                total -= size
                evicted.append(entry.name)
            finally:
                os.close(fd)
        return evicted


def _pinned_manifest(store: DatasetStore, inp: JobInput) -> Manifest:
    try:
        # An amended series keeps every revision: a job pinned to an earlier one still sees it.
        return store.manifest(inp.dataset, inp.revision)
    except DatasetNotFound as exc:
        raise InputUnavailable(
            f"input {inp.dataset} revision {inp.revision} (mounted at {inp.mount}) no longer exists: {exc}"
        ) from exc


def _sweep_tmp(root: Path) -> list[str]:
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for tmp in sorted(root.glob(".tmp-*")):
        entry_name = tmp.name[len(".tmp-"):].rsplit("-", 1)[0]
        if not is_free(root / f"{entry_name}.fill"):
            continue  # a live download
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp.name)
    return removed


def _last_used(entry: Path) -> int:
    try:
        return entry.stat().st_mtime_ns
    except FileNotFoundError:  # evicted meanwhile by another process
        return 0


def _entry_size(entry: Path) -> int:
    try:
        return Manifest.model_validate_json((entry / MANIFEST_PATH).read_bytes()).total_size
    except (OSError, ValueError):
        return 0
