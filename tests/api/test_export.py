"""Export follows provenance to the DICOM series: results of multi-step pipelines keep their
series' patient and series columns. Documents in the real Elasticsearch index, shaped as the
indexer writes them; the API answers in-process."""

from __future__ import annotations

import csv
import io
from typing import Any

from nps.api.export import MAX_HOPS, load_ancestors, source_ids
from tests.api.test_groups import h, index, series


def result(n: int, inputs: list[int], project: str = "alpha", processor: str = "stats",
           **metadata: Any) -> dict[str, Any]:
    return {"id": f"{n:040x}", "kind": "result", "project": project, "revision": 1, "files": 1, "bytes": 1,
            "inputs": [f"{i:040x}" for i in inputs], "created_at": "2026-01-01T00:00:00",
            "processor": processor, "metadata": metadata}


def upload(n: int, project: str = "alpha") -> dict[str, Any]:
    return {"id": f"{n:040x}", "kind": "upload", "project": project, "revision": 1, "files": 1, "bytes": 1,
            "inputs": [], "created_at": "2026-01-01T00:00:00"}


def export(api: dict[str, Any], user: str, q: str, fields: str = "metadata.brain_mean") -> list[dict[str, str]]:
    answer = api["client"].get("/api/v1/export", params={"q": q, "fields": fields}, headers=h(api["tokens"][user]))
    assert answer.status_code == 200, answer.text
    return list(csv.DictReader(io.StringIO(answer.text)))


def test_a_two_hop_results_rows_carry_the_fields_of_the_series_it_came_from(api: dict[str, Any]) -> None:
    # series 1 -> dcm2niix 11 -> statistics 21 (with a script, upload 9, as a second input)
    index(api).bulk([series(1, "alpha"), upload(9), result(11, [1], processor="dcm2niix"),
                     result(21, [11, 9], brain_mean=500.5)])
    rows = export(api, "alice", "processor:stats")
    assert [(r["result"], r["input"]) for r in rows] == [(f"{21:040x}", f"{1:040x}")]
    assert rows[0]["input.patient_id"] == "P001" and rows[0]["input.series_description"] == "t1_mprage"
    assert rows[0]["metadata.brain_mean"] == "500.5"


def test_a_result_of_several_series_has_a_row_per_series_and_one_without_series_keeps_its_inputs(
        api: dict[str, Any]) -> None:
    index(api).bulk([series(1, "alpha"), series(2, "alpha"), upload(9),
                     result(11, [1], processor="dcm2niix"), result(12, [2], processor="dcm2niix"),
                     result(13, [11], processor="mask"),
                     result(21, [13, 12], brain_mean=1.0),  # three hops to series 1, two to series 2
                     result(22, [9], brain_mean=2.0)])  # an upload's analysis: its input is the upload
    rows = export(api, "alice", "processor:stats")
    # One row per series, nearest first; result 22 (0x16) has no series behind it.
    assert [(r["result"][-2:], r["input"][-2:], r["input.patient_id"]) for r in rows] == [
        ("15", "02", "P002"), ("15", "01", "P001"), ("16", "09", "")]


def test_series_of_another_project_lend_no_fields(api: dict[str, Any]) -> None:
    index(api).bulk([series(3, "beta"), result(11, [3], project="alpha", processor="dcm2niix"),
                     result(21, [11], project="alpha", brain_mean=3.0)])
    rows = export(api, "alice", "processor:stats")
    assert len(rows) == 1 and rows[0]["input"] == f"{11:040x}" and rows[0]["input.patient_id"] == ""


def test_ancestors_are_looked_up_once_per_level_for_a_whole_page(api: dict[str, Any]) -> None:
    docs = [series(n, "alpha") for n in range(1, 51)]
    docs += [result(100 + n, [n], processor="dcm2niix") for n in range(1, 51)]
    docs += [result(200 + n, [100 + n], brain_mean=float(n)) for n in range(1, 51)]
    index(api).bulk(docs)
    calls: list[int] = []

    def mget(ids: list[str], wanted: list[str]) -> dict[str, dict[str, Any]]:
        calls.append(len(ids))
        return index(api).mget(ids, source=wanted)

    stats = docs[100:]
    ancestors = load_ancestors(mget, stats, ["patient_id"], lambda project: project == "alpha")
    assert calls == [50, 50]  # dcm2niix results, then their series: two lookups for fifty rows
    assert [source_ids(r, ancestors) for r in stats] == [[f"{n:040x}"] for n in range(1, 51)]
    assert ancestors[f"{7:040x}"]["patient_id"] == "P007"


def test_provenance_is_followed_at_most_max_hops_deep() -> None:
    chain = {f"{n:040x}": result(n, [n - 1], processor="step") for n in range(2, MAX_HOPS + 3)}
    chain[f"{1:040x}"] = series(1, "alpha")
    deep = result(MAX_HOPS + 3, [MAX_HOPS + 2])  # MAX_HOPS + 2 hops from series 1
    near = result(MAX_HOPS + 4, [MAX_HOPS])  # MAX_HOPS hops
    assert source_ids(near, chain) == [f"{1:040x}"]
    assert source_ids(deep, chain) == [f"{MAX_HOPS + 2:040x}"]  # too deep: its direct input
    assert source_ids(result(99, []), chain) == [None]
