"""The image catalog (nps/jobs/images.py): names filed the way engines look them up, the newest build
of a name wins, and a tag resolves with nothing but the store (real MinIO, real Podman)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from nps.blobs import MinioBlobs
from nps.config import Settings
from nps.engine import HeldImage
from nps.errors import ImageNotFound
from nps.jobs.images import ImageCatalog, canonical, catalog_key, image_id, lookup_names, merged
from nps.store.minio import MinioStore

OLD, NEW = "sha256:" + "1" * 64, "sha256:" + "2" * 64
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def held(id_: str, created: datetime, *tags: str) -> HeldImage:
    return HeldImage(id=id_, tags=tags or ("localhost/nps/tool:1",), created=created)


def test_names_are_filed_fully_qualified_as_docker_and_podman_write_them() -> None:
    assert canonical("busybox") == "docker.io/library/busybox:latest"
    assert canonical("nps/busybox:1") == "docker.io/nps/busybox:1"
    digest = "@sha256:" + "a" * 64
    assert canonical(f"localhost:5000/nps/busybox:1{digest}") == f"localhost:5000/nps/busybox{digest}"
    assert lookup_names("nps/busybox:1") == ["docker.io/nps/busybox:1", "localhost/nps/busybox:1"]
    assert lookup_names("registry.lab:5000/x:2") == ["registry.lab:5000/x:2"]
    assert catalog_key("localhost/nps/busybox:1") == "images/localhost%2Fnps%2Fbusybox:1.json"


def test_an_image_id_is_taken_as_it_is_with_or_without_its_prefix() -> None:
    assert image_id("a" * 64) == image_id("sha256:" + "a" * 64) == "sha256:" + "a" * 64
    assert image_id("nps/busybox:1") is None and image_id("a" * 12) is None


def test_the_newest_build_of_a_name_wins_and_an_older_one_does_not_take_it_back() -> None:
    first = merged(None, held(OLD, T0), "localhost/nps/tool:1", "a", T0)
    assert first is not None and first.id == OLD and set(first.hosts) == {"a"}
    rebuilt = merged(first, held(NEW, T0 + timedelta(hours=1)), "localhost/nps/tool:1", "b", T0)
    assert rebuilt is not None and rebuilt.id == NEW and set(rebuilt.hosts) == {"b"}
    assert merged(rebuilt, held(OLD, T0), "localhost/nps/tool:1", "a", T0) is None  # a still has the old build
    both = merged(rebuilt, held(NEW, T0 + timedelta(hours=1)), "localhost/nps/tool:1", "a", T0)
    assert both is not None and set(both.hosts) == {"a", "b"}


def test_a_build_nobody_announces_any_more_gives_way_to_an_older_one_still_held() -> None:
    gone = merged(None, held(NEW, T0 + timedelta(hours=1)), "localhost/nps/tool:1", "b", T0)
    later = T0 + timedelta(days=2)  # b has not announced for two days: it no longer holds it
    assert gone is not None
    back = merged(gone, held(OLD, T0), "localhost/nps/tool:1", "a", later)
    assert back is not None and back.id == OLD and set(back.hosts) == {"a"}


def test_a_host_that_went_back_to_an_older_build_leaves_the_hosts_of_the_newer_one() -> None:
    record = merged(None, held(NEW, T0 + timedelta(hours=1)), "n", "a", T0)
    record = merged(record, held(NEW, T0 + timedelta(hours=1)), "n", "b", T0)
    assert record is not None
    after = merged(record, held(OLD, T0), "n", "a", T0)
    assert after is not None and after.id == NEW and set(after.hosts) == {"b"}


def test_fields_of_a_later_nps_survive_a_rewrite() -> None:
    record = merged(None, held(OLD, T0), "n", "a", T0)
    assert record is not None
    extended = record.model_validate({**record.model_dump(mode="json"), "registry_digest": "sha256:" + "f" * 64})
    again = merged(extended, held(OLD, T0), "n", "b", T0)
    assert again is not None and again.model_extra == {"registry_digest": "sha256:" + "f" * 64}


@pytest.fixture
def catalog(minio_settings: Settings) -> ImageCatalog:
    return ImageCatalog(MinioBlobs(MinioStore(minio_settings)))


def test_a_tag_announced_by_a_host_resolves_from_the_store_alone(catalog: ImageCatalog, busybox_id: str,
                                                                  settings: Settings) -> None:
    from nps.engine import DockerEngine

    engine = DockerEngine(settings.docker_host)
    written = catalog.announce(engine.images(["localhost/nps/busybox:1"]), "worker-1")
    assert "localhost/nps/busybox:1" in written
    assert any("@sha256:" in n for n in written)  # its repository digest is a name too
    for name in ("localhost/nps/busybox:1", "nps/busybox:1"):  # Podman's short name for a local image
        assert catalog.resolve(name) == busybox_id
    assert catalog.resolve(busybox_id) == busybox_id
    [record] = [r for r in catalog.records() if r.reference == "localhost/nps/busybox:1"]
    assert set(record.hosts) == {"worker-1"} and record.size and record.created


def test_an_unknown_name_is_refused_with_what_to_do(catalog: ImageCatalog) -> None:
    with pytest.raises(ImageNotFound, match=r"nps image announce localhost/nps/never-built:1"):
        catalog.resolve("localhost/nps/never-built:1")
    with pytest.raises(ImageNotFound, match="invalid image reference"):
        catalog.resolve("Not A Name")
    with pytest.raises(ImageNotFound, match="full image ID"):
        catalog.resolve("abcdef012345")


def test_a_forgotten_name_no_longer_resolves(catalog: ImageCatalog) -> None:
    catalog.announce([held(OLD, T0, "localhost/nps/tool:1")], "a")
    assert catalog.resolve("localhost/nps/tool:1") == OLD
    assert catalog.forget("localhost/nps/tool:1") and not catalog.forget("localhost/nps/tool:1")
    with pytest.raises(ImageNotFound):
        catalog.resolve("localhost/nps/tool:1")


def test_announcing_goes_on_after_a_round_the_engine_failed(catalog: ImageCatalog) -> None:
    """A test double for the engine's listing: an engine failing exactly once cannot be arranged
    with the real one. The catalog is the real MinIO one."""
    from nps.errors import EngineUnavailable
    from nps.jobs.images import keep_announcing

    stop, rounds = threading.Event(), []

    def listing() -> list[HeldImage]:
        rounds.append(1)
        if len(rounds) == 1:
            raise EngineUnavailable("container engine error: connection refused")
        stop.set()
        return [held(OLD, T0, "localhost/nps/tool:1")]

    keep_announcing(listing, catalog, "worker-1", stop, every=0.01)
    assert len(rounds) == 2 and catalog.resolve("localhost/nps/tool:1") == OLD


def test_hosts_announcing_the_same_image_at_once_all_land_in_its_record(catalog: ImageCatalog) -> None:
    from concurrent.futures import ThreadPoolExecutor

    hosts = [f"worker-{n}" for n in range(8)]
    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(lambda host: catalog.announce([held(OLD, T0, "localhost/nps/tool:1")], host), hosts))
    record = catalog.find("localhost/nps/tool:1")
    assert record is not None and sorted(record.hosts) == hosts
