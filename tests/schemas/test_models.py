"""Schema validation: what a careless or hostile producer could send is refused clearly."""

import json

import pytest
from pydantic import ValidationError

from nps.hashing import series_dataset_id
from schemas import (
    DatasetCreated,
    DatasetRecord,
    JobRequested,
    JobSpec,
    JobStatus,
    Manifest,
    Resources,
    SeriesOrigin,
    decode_message,
)
from schemas.messages import MalformedMessage, encode_message

IMAGE = "sha256:" + "a" * 64
DS = "9e107d9d372bb6826bd81d3542a419d6e277d4d0"


def spec(**kw: object) -> JobSpec:
    return JobSpec.model_validate({"image": IMAGE, "command": ["true"], **kw})


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ([{"dataset": DS, "revision": 1, "mount": "input"}], "absolute"),
        ([{"dataset": DS, "revision": 1, "mount": "/input/../etc"}], ".."),
        ([{"dataset": DS, "revision": 1, "mount": "/output"}], "overlaps the output"),
        ([{"dataset": DS, "revision": 1, "mount": "/output/x"}], "overlaps the output"),
        ([{"dataset": DS, "revision": 1, "mount": "/"}], "below '/'"),
        ([{"dataset": DS, "revision": 1, "mount": "/in//x"}], "normalised"),
        ([{"dataset": DS, "revision": 1, "mount": "/in"}, {"dataset": DS, "revision": 1, "mount": "/in/a"}], "overlap"),
        ([{"dataset": "XYZ", "revision": 1, "mount": "/in"}], "pattern"),
        ([{"dataset": DS, "revision": 0, "mount": "/in"}], "greater than or equal"),
    ],
)
def test_invalid_job_inputs_are_refused_with_a_reason(inputs: list[dict[str, object]], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(inputs=inputs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("image", ["ubuntu:latest", "sha256:abc", "busybox@sha256:" + "a" * 64, ""])
def test_job_images_must_be_pinned_by_immutable_id(image: str) -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"image": image, "command": ["true"]})


def test_job_spec_rejects_empty_command_unknown_fields_and_nan() -> None:
    with pytest.raises(ValidationError):
        JobSpec.model_validate({"image": IMAGE, "command": []})
    with pytest.raises(ValidationError, match="Extra inputs"):
        JobSpec.model_validate({"image": IMAGE, "command": ["x"], "memory": 4})
    with pytest.raises(ValidationError, match="finite"):
        spec(parameters={"x": float("nan")})


def test_resources_ride_beside_the_spec_and_accept_human_memory() -> None:
    assert Resources.model_validate({"memory": "4GiB"}).memory_mb == 4096
    assert Resources.model_validate({"memory": "512M"}).memory_mb == 512
    with pytest.raises(ValidationError):
        Resources.model_validate({"memory": "lots"})
    with pytest.raises(ValidationError):
        Resources.model_validate({"cpu": 0})


def test_messages_round_trip_through_bytes() -> None:
    s = spec()
    for msg in (
        JobRequested(job_id=s.job_id, spec=s, resources=Resources(memory_mb=512)),
        DatasetCreated(dataset_id=DS, kind="series"),
        JobStatus(job_id=DS, state="FAILED", reason="out of memory"),
    ):
        assert decode_message(encode_message(msg)) == msg


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"not json", "Invalid JSON"),
        (b"{}", "type"),
        (json.dumps({"type": "rm -rf", "version": 1}).encode(), "type"),
        (json.dumps({"type": "dataset.created", "version": 2, "dataset_id": DS, "kind": "series"}).encode(), "version"),
        (json.dumps({"type": "dataset.created", "version": 1, "dataset_id": "../x", "kind": "series"}).encode(),
         "dataset_id"),
        (json.dumps({"type": "job.status", "version": 1, "job_id": DS, "state": "FAILED"}).encode(), "reason"),
        (b"[" * 100_000, "Invalid JSON"),
        (b" " * (2 * 1024 * 1024), "exceeds"),
    ],
)
def test_malformed_messages_raise_one_well_defined_error(raw: bytes, fragment: str) -> None:
    with pytest.raises(MalformedMessage) as info:
        decode_message(raw)
    assert fragment in str(info.value)


def test_job_request_whose_id_is_not_the_spec_hash_is_refused() -> None:
    s = spec()
    with pytest.raises(ValidationError, match="not the hash of its spec"):
        JobRequested(job_id=DS, spec=s)


def test_dataset_record_id_must_match_its_origin() -> None:
    uid = "1.2.3.4"
    record = DatasetRecord(id=series_dataset_id(uid), origin=SeriesOrigin(series_instance_uid=uid))
    assert record.kind == "series"
    with pytest.raises(ValidationError, match="does not match its origin"):
        DatasetRecord(id=DS, origin=SeriesOrigin(series_instance_uid=uid))


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../x", "a//b", "a\x00b", "a\\b", "./a", "a/."])
def test_manifest_refuses_paths_that_escape_the_dataset(path: str) -> None:
    with pytest.raises(ValidationError):
        Manifest(dataset_id=DS, files=({"path": path, "size": 1, "sha256": "0" * 64},))  # type: ignore[arg-type]


def test_a_manifest_file_needs_a_checksum_and_is_written_without_empty_ones() -> None:
    with pytest.raises(ValidationError, match="needs a checksum"):
        Manifest(dataset_id=DS, files=({"path": "a", "size": 1},))  # type: ignore[arg-type]
    m = Manifest(dataset_id=DS, files=({"path": "a", "size": 1, "blake3": "1" * 64},))  # type: ignore[arg-type]
    written = m.model_dump_json(by_alias=True)
    assert '"sha256"' not in written and m.version == 2 and m.files[0].checksum == ("blake3", "1" * 64)
    old = Manifest.model_validate({"schema": "nps.manifest", "version": 1, "dataset_id": DS,
                                   "files": [{"path": "a", "size": 1, "sha256": "2" * 64}]})
    assert old.files[0].checksum == ("sha256", "2" * 64)


def test_manifest_refuses_duplicates_and_sorts_files() -> None:
    f = {"size": 1, "sha256": "0" * 64}
    m = Manifest(dataset_id=DS, files=({"path": "b", **f}, {"path": "a", **f}))  # type: ignore[arg-type]
    assert [x.path for x in m.files] == ["a", "b"]
    with pytest.raises(ValidationError, match="duplicate"):
        Manifest(dataset_id=DS, files=({"path": "a", **f}, {"path": "a", **f}))  # type: ignore[arg-type]


def test_message_ids_are_unique() -> None:
    assert DatasetCreated(dataset_id=DS, kind="series").id != DatasetCreated(dataset_id=DS, kind="series").id
