"""The image catalog: which images the job workers hold, so that whoever submits a job can pin
its image without a container engine.

Job workers (they have an engine) announce every tagged image they hold, at start and every
``ANNOUNCE_EVERY_S``, as one small object per name: ``images/<reference>.json`` in the store
(``nps image announce`` does the same by hand, on any host with an engine). The API resolves a
tag by reading that object: a plain lookup, no engine socket. An image ID given as such
(``sha256:<64 hex>``) is taken as it is.

When hosts disagree about a tag (one rebuilt it), the record keeps the newest build; a host
that holds an older one is left out of its ``hosts`` until it catches up. Records are rewritten
only if unchanged since read (conditional writes), so hosts announcing at once all land. Records keep fields
they do not know, so a later NPS can add some (e.g. registry digests) without breaking this one.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from urllib.parse import quote, unquote

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nps.blobs import Blobs
from nps.config import Settings
from nps.engine.base import HeldImage, valid_reference
from nps.errors import ImageNotFound, NPSError
from schemas.common import utcnow

log = logging.getLogger("nps.jobs.images")
PREFIX = "images"
ANNOUNCE_EVERY_S = 300.0
WRITE_ATTEMPTS = 5  # a record rewritten under us this often in a row waits for the next round
FORGET_HOST_AFTER = timedelta(days=1)  # a host silent this long (12 rounds missed) no longer holds it
DEFAULT_REGISTRY = "docker.io"

_IMAGE_ID = re.compile(r"(?:sha256:)?([0-9a-f]{64})")
_SHORT_ID = re.compile(r"(?:sha256:)?[0-9a-f]{12,63}")


class ImageRecord(BaseModel):
    """What the catalog knows about one image name (``images/<reference>.json``)."""

    model_config = ConfigDict(extra="allow")  # fields of a later NPS survive a rewrite
    version: int = 1
    reference: str = Field(description="the name, fully qualified: registry/path:tag or registry/path@digest")
    id: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="the immutable image ID jobs are pinned to")
    tags: list[str] = Field(default_factory=list, description="every tag of the image, as the engine names them")
    repo_digests: list[str] = Field(default_factory=list)
    size: int | None = None
    created: datetime | None = None
    hosts: dict[str, datetime] = Field(default_factory=dict, description="worker host -> when it last held it")
    seen_at: datetime = Field(default_factory=utcnow)


def image_id(reference: str) -> str | None:
    """``sha256:<hex>`` when ``reference`` is a full image ID (with or without the prefix), else None."""
    match = _IMAGE_ID.fullmatch(reference)
    return f"sha256:{match.group(1)}" if match else None


def _split(reference: str) -> tuple[str, str | None, str | None]:
    """(name, tag, digest) of a valid name reference."""
    rest, _, digest = reference.partition("@")
    head, slash, last = rest.rpartition("/")
    name, _, tag = last.partition(":")
    return f"{head}{slash}{name}", tag or None, digest or None


def _has_registry(name: str) -> bool:
    first, slash, _ = name.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def canonical(reference: str) -> str:
    """The fully qualified form of a name reference, as the catalog files it: a registry
    (``docker.io`` when none, with ``library/`` for one-part names), ``:latest`` when neither a
    tag nor a digest is given, and only the digest when both are (the digest decides)."""
    name, tag, digest = _split(reference)
    if not _has_registry(name):
        name = f"{DEFAULT_REGISTRY}/{name}" if "/" in name else f"{DEFAULT_REGISTRY}/library/{name}"
    if digest:
        return f"{name}@{digest}"
    return f"{name}:{tag or 'latest'}"


def lookup_names(reference: str) -> list[str]:
    """The catalog names a reference may be filed under, in the order engines look them up: its
    canonical form, then (for a name without registry) ``localhost/<name>``, where Podman keeps
    images built or loaded locally."""
    names = [canonical(reference)]
    name, _, _ = _split(reference)
    if not _has_registry(name):
        names.append(canonical(f"localhost/{reference}"))
    return names


def catalog_key(reference: str) -> str:
    """The object key of a name's record (one flat folder: ``/`` is escaped)."""
    return f"{PREFIX}/{quote(canonical(reference), safe=':@')}.json"


def names_of(held: HeldImage) -> list[str]:
    """Every name an image can be looked up by: its tags and its repository digests."""
    names = {canonical(n) for n in (*held.tags, *held.digests) if valid_reference(n) and not image_id(n)}
    return sorted(names)


def _newer(held: HeldImage, record: ImageRecord) -> bool:
    floor = datetime.min.replace(tzinfo=record.seen_at.tzinfo)
    return (held.created or floor, held.id) > (record.created or floor, record.id)


def merged(current: ImageRecord | None, held: HeldImage, name: str, host: str,
           now: datetime) -> ImageRecord | None:
    """The record of ``name`` after ``host`` said it holds ``held`` at ``now``; None when the
    current record stays as it is. A host holding an older build of the name than the recorded
    one, which other hosts still hold, does not change the image the name resolves to."""
    live = {h: t for h, t in (current.hosts if current else {}).items() if now - t < FORGET_HOST_AFTER}
    if current is not None and current.id != held.id:
        others = {h: t for h, t in live.items() if h != host}
        if others and not _newer(held, current):
            # ``host`` no longer holds the recorded build: it leaves the record's hosts
            return current.model_copy(update={"hosts": others}) if host in live else None
        live, current = {}, None  # a newer build (or nobody else holds the recorded one)
    extra = dict(current.model_extra or {}) if current is not None else {}
    return ImageRecord(reference=name, id=held.id, tags=sorted(held.tags), repo_digests=sorted(held.digests),
                       size=held.size, created=held.created, hosts={**live, host: now}, seen_at=now, **extra)


class ImageCatalog:
    """The catalog in a ``Blobs`` space (the store's small objects)."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def resolve(self, reference: str) -> str:
        """The image ID jobs are pinned to: an ID as given, or a name a worker announced.
        ImageNotFound (saying what to do) for anything else."""
        direct = image_id(reference)
        if direct is not None:
            return direct
        if not valid_reference(reference):
            raise ImageNotFound(f"invalid image reference {reference[:80]!r}: expected NAME[:TAG][@DIGEST] "
                                "or an image ID (sha256:<64 hex>)")
        if _SHORT_ID.fullmatch(reference):
            raise ImageNotFound(f"image {reference!r}: give the full image ID (sha256:<64 hex>) or a tag")
        record = self.find(reference)
        if record is None:
            raise ImageNotFound(
                f"image {reference!r} is not in the image catalog: no job worker has announced it. Start a job "
                f"worker on a host that has it (workers announce their images at start and every "
                f"{ANNOUNCE_EVERY_S / 60:g} minutes), or run `nps image announce {reference}` there; "
                "or give the image ID (sha256:...)")
        return record.id

    def find(self, reference: str) -> ImageRecord | None:
        """The record a name reference resolves to, or None."""
        for name in lookup_names(reference):
            record = self._read(catalog_key(name))
            if record is not None:
                return record
        return None

    def announce(self, images: Iterable[HeldImage], host: str, now: datetime | None = None) -> list[str]:
        """Record that ``host`` holds ``images`` (under each of their names); the names written."""
        when = now or utcnow()
        return [name for held in images for name in names_of(held) if self._announce(name, held, host, when)]

    def _announce(self, name: str, held: HeldImage, host: str, when: datetime) -> bool:
        """Merge one host's word into a name's record. Written only if the record is still the
        one read (hosts announcing at once each land), else read again."""
        key = catalog_key(name)
        for _ in range(WRITE_ATTEMPTS):
            found = self.blobs.get_versioned(key)
            record = merged(self._parse(key, found.data) if found else None, held, name, host, when)
            if record is None:
                log.info("%s holds an older build of %s than the catalog's; not announced", host, name)
                return False
            data = record.model_dump_json().encode()
            if self.blobs.create(key, data) if found is None else self.blobs.replace_if(key, data, found.etag):
                return True
        log.warning("%s: the record of %s kept changing under it; announced at the next round", host, name)
        return False

    def records(self) -> Iterator[ImageRecord]:
        """Every record, in name order."""
        for child in self.blobs.children(PREFIX):
            if child.endswith(".json"):
                record = self._read(f"{PREFIX}/{child}")
                if record is not None:
                    yield record

    def forget(self, reference: str) -> bool:
        """Remove a name from the catalog (its image stays on the hosts); False if it was not there."""
        key = catalog_key(reference)
        if self._read(key) is None:
            return False
        self.blobs.delete(key)
        return True

    def _read(self, key: str) -> ImageRecord | None:
        raw = self.blobs.get(key)
        return None if raw is None else self._parse(key, raw)

    @staticmethod
    def _parse(key: str, raw: bytes) -> ImageRecord | None:
        try:
            return ImageRecord.model_validate_json(raw)
        except ValidationError:  # a damaged record is no answer; the next announcement replaces it
            log.warning("unreadable image record %s", unquote(key))
            return None


def keep_announcing(list_images: Callable[[], list[HeldImage]], catalog: ImageCatalog, host: str,
                    stop: threading.Event, every: float = ANNOUNCE_EVERY_S) -> None:
    """Until ``stop``: announce what ``list_images`` (the engine) holds, at once and then every
    ``every`` seconds. A failed round is logged and tried again at the next one."""
    while not stop.is_set():
        try:
            names = catalog.announce(list_images(), host)
            log.debug("announced %d image name(s): %s", len(names), ", ".join(names))
        except NPSError as exc:
            log.warning("could not announce this host's images: %s; trying again in %gs", exc, every)
        stop.wait(every)


def announce_while_running(settings: Settings, stop: threading.Event, every: float = ANNOUNCE_EVERY_S) -> None:
    """A job worker's announcer (run it in a thread): until ``stop``, announce every named image
    of this host's container engine in the servers' catalog, at once and then every ``every``
    seconds, so the API can resolve their tags without an engine."""
    from nps.blobs import MinioBlobs
    from nps.engine import ContainerEngine
    from nps.engine.docker import DockerEngine
    from nps.store.minio import MinioStore

    engine: ContainerEngine | None = None

    def held() -> list[HeldImage]:
        nonlocal engine
        engine = engine or DockerEngine(settings.docker_host)  # an engine down at start is tried again
        return engine.images()

    keep_announcing(held, ImageCatalog(MinioBlobs(MinioStore(settings))), socket.gethostname(), stop, every)
