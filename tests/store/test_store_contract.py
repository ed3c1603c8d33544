"""What every dataset store must do, run against the local filesystem and the real MinIO."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import blake3
import pytest

from nps.errors import CorruptDataset, DatasetNotFound, InvalidDatasetId, InvalidPath, InvalidSource
from nps.store import DatasetStore
from tests.store.helpers import make_tree, overwrite_stored, put_dir, record, remove_stored

FILES = {
    "t1.nii.gz": os.urandom(300_000),
    "sub/dir/notes.txt": b"hello\n",
    "empty": b"",
    "unicod\u00e9 name.json": json.dumps({"a": 1}).encode(),
}


@pytest.fixture
def dataset(store: DatasetStore, tmp_path: Path) -> str:
    return put_dir(store, make_tree(tmp_path / "src", FILES))


def test_a_put_dataset_lists_every_file_with_size_and_checksum(store: DatasetStore, dataset: str) -> None:
    manifest = store.manifest(dataset)
    listed = {f.path: (f.size, f.blake3) for f in manifest.files}
    for path, data in FILES.items():
        assert listed[path] == (len(data), blake3.blake3(data).hexdigest())
    assert ".nps/dataset.json" in listed
    assert store.exists(dataset)
    assert dataset in list(store.ids())


def test_get_reproduces_the_tree_byte_for_byte(store: DatasetStore, dataset: str, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    store.get(dataset, dest)
    for path, data in FILES.items():
        assert (dest / path).read_bytes() == data
    assert (dest / ".nps/manifest.json").is_file()
    assert not list(dest.rglob("*.part"))


def test_read_returns_whole_files_and_byte_ranges(store: DatasetStore, dataset: str) -> None:
    data = FILES["t1.nii.gz"]
    assert b"".join(store.read(dataset, "t1.nii.gz")) == data
    assert b"".join(store.read(dataset, "t1.nii.gz", 1000, 5000)) == data[1000:5000]
    assert b"".join(store.read(dataset, "t1.nii.gz", 299_990)) == data[299_990:]
    assert b"".join(store.read(dataset, "empty")) == b""
    with pytest.raises(ValueError):
        list(store.read(dataset, "t1.nii.gz", 5000, 1000))


def test_the_record_says_where_the_dataset_came_from(store: DatasetStore, dataset: str) -> None:
    rec = store.record(dataset)
    assert rec.id == dataset and rec.kind == "upload"


def test_putting_the_same_id_again_stores_nothing_new(store: DatasetStore, dataset: str, tmp_path: Path) -> None:
    before = store.manifest(dataset)
    other = make_tree(tmp_path / "other", {"x": b"different"})
    again = store.put(dataset, other, record(dataset, other))
    assert again == before
    assert store.manifest(dataset).created_at == before.created_at


def test_missing_datasets_and_files_are_reported_as_not_found(store: DatasetStore, dataset: str) -> None:
    absent = "0" * 40
    assert not store.exists(absent)
    with pytest.raises(DatasetNotFound):
        store.manifest(absent)
    with pytest.raises(DatasetNotFound):
        list(store.read(dataset, "no/such/file"))
    with pytest.raises(InvalidDatasetId):
        store.manifest("../../etc")


@pytest.mark.parametrize("path", ["../t1.nii.gz", "/etc/passwd", "sub/../../x", "sub\x00x", "sub//dir/notes.txt"])
def test_reading_a_path_that_escapes_the_dataset_is_refused(store: DatasetStore, dataset: str, path: str) -> None:
    with pytest.raises(InvalidPath):
        list(store.read(dataset, path))


def test_delete_removes_the_dataset_and_all_its_objects(store: DatasetStore, dataset: str) -> None:
    from tests.store.helpers import stored_keys

    store.delete(dataset)
    assert not store.exists(dataset)
    assert dataset not in list(store.ids())
    assert stored_keys(store, dataset) == []
    with pytest.raises(DatasetNotFound):
        store.delete(dataset)


# ---- corruption ------------------------------------------------------------------------------

def test_a_modified_object_is_detected_on_read_and_get(store: DatasetStore, dataset: str, tmp_path: Path) -> None:
    tampered = bytearray(FILES["t1.nii.gz"])
    tampered[12345] ^= 0xFF
    overwrite_stored(store, dataset, "t1.nii.gz", bytes(tampered))
    with pytest.raises(CorruptDataset, match="checksum mismatch"):
        list(store.read(dataset, "t1.nii.gz"))
    with pytest.raises(CorruptDataset, match=r"t1\.nii\.gz"):
        store.get(dataset, tmp_path / "out")
    assert not (tmp_path / "out" / "t1.nii.gz").exists()
    with pytest.raises(CorruptDataset):
        store.verify(dataset)


def test_large_files_fetched_as_parallel_ranges_arrive_whole_and_verified(
        store: DatasetStore, dataset: str, tmp_path: Path) -> None:
    store.ranged_parts, store.ranged_min_bytes = 4, 1000  # t1.nii.gz (300,000 bytes) goes in 4 ranges
    store.get(dataset, tmp_path / "copy")
    assert (tmp_path / "copy" / "t1.nii.gz").read_bytes() == FILES["t1.nii.gz"]
    tampered = bytearray(FILES["t1.nii.gz"])
    tampered[299_999] ^= 1  # in the last range
    overwrite_stored(store, dataset, "t1.nii.gz", bytes(tampered))
    with pytest.raises(CorruptDataset, match="checksum mismatch"):
        store.get(dataset, tmp_path / "bad")
    assert not (tmp_path / "bad" / "t1.nii.gz").exists()
    overwrite_stored(store, dataset, "t1.nii.gz", FILES["t1.nii.gz"][:200_000])
    with pytest.raises(CorruptDataset):
        store.get(dataset, tmp_path / "short")
    assert not list((tmp_path / "short").rglob("*.nii.gz"))


def test_a_truncated_or_missing_object_is_detected(store: DatasetStore, dataset: str) -> None:
    overwrite_stored(store, dataset, "t1.nii.gz", FILES["t1.nii.gz"][:1000])
    with pytest.raises(CorruptDataset):
        list(store.read(dataset, "t1.nii.gz"))
    remove_stored(store, dataset, "sub/dir/notes.txt")
    with pytest.raises(CorruptDataset, match="missing"):
        list(store.read(dataset, "sub/dir/notes.txt"))


def test_files_too_large_for_one_read_stream_whole_and_verified(store: DatasetStore, tmp_path: Path) -> None:
    """A file above the size read in one request (1 MiB in MinIO) arrives streamed; damage is
    still caught: changed bytes, a shorter object, a vanished one."""
    big = os.urandom(3 * 1024 * 1024 + 17)
    dataset = put_dir(store, make_tree(tmp_path / "src", {"big.bin": big, "small.txt": b"x"}))
    store.get(dataset, tmp_path / "copy")
    assert (tmp_path / "copy" / "big.bin").read_bytes() == big
    assert b"".join(store.read(dataset, "big.bin", 1_500_000, 2_600_000)) == big[1_500_000:2_600_000]
    overwrite_stored(store, dataset, "big.bin", big[:-1] + bytes([big[-1] ^ 1]))
    with pytest.raises(CorruptDataset, match="checksum mismatch"):
        store.get(dataset, tmp_path / "bad")
    overwrite_stored(store, dataset, "big.bin", big[:2_000_000])
    with pytest.raises(CorruptDataset, match=r"returned 2000000|shorter"):
        list(store.read(dataset, "big.bin"))
    with pytest.raises(CorruptDataset, match=r"shorter|returned"):
        list(store.read(dataset, "big.bin", 2_500_000))
    with pytest.raises(CorruptDataset, match=r"returned 2000000"):  # get reads into a reused buffer
        store.get(dataset, tmp_path / "short")
    assert not list((tmp_path / "short").rglob("big.bin"))
    remove_stored(store, dataset, "big.bin")
    with pytest.raises(CorruptDataset, match="missing"):
        list(store.read(dataset, "big.bin"))
    with pytest.raises(CorruptDataset, match="missing"):
        store.get(dataset, tmp_path / "gone")


def test_a_garbled_manifest_is_reported_as_corruption(store: DatasetStore, dataset: str) -> None:
    overwrite_stored(store, dataset, ".nps/manifest.json", b'{"schema": "nps.manifest", "files": [')
    with pytest.raises(CorruptDataset, match="manifest is unreadable"):
        store.manifest(dataset)


def test_datasets_with_version_1_manifests_sha256_are_still_read_and_verified(
        store: DatasetStore, dataset: str, tmp_path: Path) -> None:
    manifest = json.loads(b"".join(store._read_raw(dataset, ".nps/manifest.json", 0, None)))
    stored = {f: FILES[f] for f in FILES}
    for entry in manifest["files"]:
        data = stored.get(entry["path"]) or b"".join(store._read_raw(dataset, entry["path"], 0, None))
        entry.pop("blake3")
        entry["sha256"] = hashlib.sha256(data).hexdigest()
    manifest["version"] = 1
    overwrite_stored(store, dataset, ".nps/manifest.json", json.dumps(manifest).encode())
    assert store.manifest(dataset).version == 1
    store.verify(dataset)
    store.get(dataset, tmp_path / "copy")
    assert (tmp_path / "copy" / "t1.nii.gz").read_bytes() == FILES["t1.nii.gz"]
    overwrite_stored(store, dataset, "sub/dir/notes.txt", b"jello\n")
    with pytest.raises(CorruptDataset, match="checksum mismatch"):
        list(store.read(dataset, "sub/dir/notes.txt"))


def test_a_tampered_record_is_detected(store: DatasetStore, dataset: str) -> None:
    overwrite_stored(store, dataset, ".nps/dataset.json", b'{"id": "x"}')
    with pytest.raises(CorruptDataset):
        store.record(dataset)


# ---- what may not become a dataset ----------------------------------------------------------------

def test_a_symlink_pointing_outside_the_source_is_refused(store: DatasetStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"1"})
    (tmp_path / "secret").write_text("password")
    (src / "leak").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidSource, match="leak: symlink points outside"):
        put_dir(store, src)
    assert list(store.ids()) == []


def test_a_symlink_inside_the_source_is_stored_as_a_copy(store: DatasetStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"data/a.txt": b"abc"})
    (src / "alias.txt").symlink_to("data/a.txt")
    dataset = put_dir(store, src)
    assert b"".join(store.read(dataset, "alias.txt")) == b"abc"


def test_special_files_and_directory_symlinks_are_refused(store: DatasetStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"1"})
    os.mkfifo(src / "pipe")
    (src / "loop").symlink_to(src)
    with pytest.raises(InvalidSource) as info:
        put_dir(store, src)
    assert "pipe: named pipe" in str(info.value)
    assert "loop: symlink to a directory" in str(info.value)


def test_names_reserved_for_metadata_are_refused(store: DatasetStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {".nps/manifest.json": b"{}", ".nps/metadata.json": b"{}"})
    with pytest.raises(InvalidSource, match=r"\.nps/manifest\.json: reserved"):
        put_dir(store, src)


def test_a_file_name_that_is_not_utf8_is_refused(store: DatasetStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": b"1"})
    with open(os.path.join(os.fsencode(src), b"bad\xffname"), "wb") as fh:
        fh.write(b"x")
    with pytest.raises(InvalidSource, match="UTF-8"):
        put_dir(store, src)


def test_a_missing_or_non_directory_source_is_refused(store: DatasetStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidSource, match="no such directory"):
        put_dir(store, tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidSource, match="not a directory"):
        put_dir(store, tmp_path / "file")


def test_get_handles_names_that_look_like_temporary_files(store: DatasetStore, tmp_path: Path) -> None:
    dataset = put_dir(store, make_tree(tmp_path / "src", {"a": b"1", ".a.part": b"2", "d/.x.part": b"3"}))
    store.get(dataset, tmp_path / "out")
    assert (tmp_path / "out" / "a").read_bytes() == b"1"
    assert (tmp_path / "out" / ".a.part").read_bytes() == b"2"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".a.part", ".nps", "a", "d"]
