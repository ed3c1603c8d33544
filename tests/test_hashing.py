"""Dataset ids: golden values computed outside Python, and invariance under formatting."""

import json

import pytest

from nps.hashing import canonical_json, json_dataset_id, series_dataset_id
from nps.store.source import upload_dataset_id
from schemas.job import JobSpec

# Golden values computed with coreutils, independently of this code, e.g.:
#   printf '%s' '1.2.840.113619.2.55.3.604688119.969.1268071029.320' | sha1sum
SERIES_GOLDEN = {
    "1.2.840.113619.2.55.3.604688119.969.1268071029.320": "053be851ba4d22449140ee36e68e18845e99d438",
    "1.3.12.2.1107.5.2.43.66012.2020010112345678901234567": "2c6658a6beb9e5824d5785c9716bf00f3d66f85d",
}

# The canonical JSON of SPEC, written by hand from the rules in DESIGN.md, and
#   printf '%s' "$SPEC_CANONICAL" | sha1sum
SPEC_CANONICAL = (
    '{"command":["bet","/input/t1/t1.nii.gz","/output/brain"],"env":{"FSLOUTPUTTYPE":"NIFTI_GZ"},'
    '"image":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",'
    '"inputs":[{"dataset":"4f3c2b1a00000000000000000000000000000000","mount":"/input/flair","revision":1},'
    '{"dataset":"9e107d9d372bb6826bd81d3542a419d6e277d4d0","mount":"/input/t1","revision":2}],'
    '"parameters":{"frac":0.5,"robust":true},"version":1}'
)
SPEC_GOLDEN = "491059dcd7160dc7393f7fcc07306c6cd173cacd"

SPEC = {
    "image": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "command": ["bet", "/input/t1/t1.nii.gz", "/output/brain"],
    # deliberately not sorted by mount: the spec sorts inputs itself
    "inputs": [
        {"mount": "/input/t1", "dataset": "9e107d9d372bb6826bd81d3542a419d6e277d4d0", "revision": 2},
        {"dataset": "4f3c2b1a00000000000000000000000000000000", "revision": 1, "mount": "/input/flair"},
    ],
    "env": {"FSLOUTPUTTYPE": "NIFTI_GZ"},
    "parameters": {"robust": True, "frac": 0.5},
}


@pytest.mark.parametrize(("uid", "expected"), SERIES_GOLDEN.items())
def test_series_id_is_sha1_of_the_uid_string(uid: str, expected: str) -> None:
    assert series_dataset_id(uid) == expected


def test_series_id_ignores_dicom_padding() -> None:
    uid = next(iter(SERIES_GOLDEN))
    assert series_dataset_id(uid + "\x00") == SERIES_GOLDEN[uid]
    assert series_dataset_id(uid + " ") == SERIES_GOLDEN[uid]


@pytest.mark.parametrize("bad", ["", "\x00", "1.2.3/../4", "1.2.abc", "1..2", "1." + "2" * 70, "1.2 .3"])
def test_series_id_refuses_malformed_uids(bad: str) -> None:
    with pytest.raises(ValueError):
        series_dataset_id(bad)


def test_job_spec_canonical_json_and_hash_match_the_golden_values() -> None:
    spec = JobSpec.model_validate(SPEC)
    assert canonical_json(spec.canonical()).decode() == SPEC_CANONICAL
    assert spec.job_id == SPEC_GOLDEN


def test_job_hash_does_not_depend_on_key_order_or_whitespace() -> None:
    reordered = dict(reversed(list(SPEC.items())))
    pretty = json.dumps(SPEC, indent=4, sort_keys=False)
    compact = json.dumps(reordered, separators=(",", ":"))
    assert JobSpec.model_validate_json(pretty).job_id == SPEC_GOLDEN
    assert JobSpec.model_validate_json(compact).job_id == SPEC_GOLDEN
    assert JobSpec.model_validate(reordered).job_id == SPEC_GOLDEN


@pytest.mark.parametrize(
    "change",
    [
        {"image": "sha256:" + "f" * 64},
        {"command": ["bet", "/input/t1/t1.nii.gz", "/output/brain", "-R"]},
        {"command": ["/output/brain", "/input/t1/t1.nii.gz", "bet"]},
        {"env": {"FSLOUTPUTTYPE": "NIFTI"}},
        {"parameters": {"robust": True, "frac": 0.4}},
        {"parameters": {"robust": False, "frac": 0.5}},
        {"inputs": [{"dataset": "9e107d9d372bb6826bd81d3542a419d6e277d4d0", "revision": 2, "mount": "/input/t1"}]},
        {"inputs": [{"dataset": "9e107d9d372bb6826bd81d3542a419d6e277d4d0", "revision": 3, "mount": "/input/t1"}]},
        {"inputs": [{"dataset": "9e107d9d372bb6826bd81d3542a419d6e277d4d0", "revision": 2, "mount": "/input/T1"}]},
    ],
)
def test_job_hash_changes_with_every_semantic_field(change: dict[str, object]) -> None:
    assert JobSpec.model_validate({**SPEC, **change}).job_id != SPEC_GOLDEN


def test_canonical_json_refuses_nan_and_infinity() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})
    with pytest.raises(ValueError):
        canonical_json({"x": float("inf")})


def test_canonical_json_is_utf8_with_sorted_keys() -> None:
    assert canonical_json({"b": "é", "a": [1, 2]}) == '{"a":[1,2],"b":"é"}'.encode()
    assert json_dataset_id({"b": 1, "a": 2}) == json_dataset_id({"a": 2, "b": 1})


def test_upload_id_is_the_hash_of_the_sorted_file_list() -> None:
    # printf '%s' '{"files":[["a.txt",6,"5891b5..."]],"kind":"upload"}' | sha1sum
    sha = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    assert upload_dataset_id([("a.txt", 6, sha)]) == "d308232d9587b28f073f0bd5bb9907fc98467702"
