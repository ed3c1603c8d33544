"""User metadata layers, zip archives and faceted search through the API, on the real MinIO
and Elasticsearch."""

from __future__ import annotations

import io
import tarfile
import threading
import zipfile
from typing import Any

from nps.blobs import MinioBlobs
from nps.index import DatasetIndex
from nps.index.sync import document_from_store
from nps.layers import Layers
from tests.api.test_groups import h, series


def index(api: dict[str, Any]) -> DatasetIndex:
    return DatasetIndex(api["settings"].es_url, api["settings"].queue_prefix)


def test_zip_and_tar_archives_hold_every_file_byte_for_byte(api: dict[str, Any]) -> None:
    c, t, d, store = api["client"], api["tokens"], api["data"], api["store"]
    wanted = {f.path: b"".join(store.read(d["alpha"], f.path)) for f in store.manifest(d["alpha"]).files}
    answer = c.get(f"/api/v1/datasets/{d['alpha']}/archive", params={"format": "zip"}, headers=h(t["alice"]))
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    assert f'{d["alpha"]}.zip' in answer.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert archive.testzip() is None  # every CRC checks
        got = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()}
    assert got == wanted
    tar = c.get(f"/api/v1/datasets/{d['alpha']}/archive", params={"format": "tar"}, headers=h(t["alice"]))
    with tarfile.open(fileobj=io.BytesIO(tar.content)) as archive:
        got = {m.name.split("/", 1)[1]: archive.extractfile(m).read() for m in archive.getmembers()}  # type: ignore[union-attr]
    assert got == wanted
    assert c.get(f"/api/v1/datasets/{d['alpha']}/archive", params={"format": "rar"},
                 headers=h(t["alice"])).status_code == 422
    assert c.get(f"/api/v1/datasets/{d['beta']}/archive", params={"format": "zip"},
                 headers=h(t["alice"])).status_code == 404


def test_metadata_layers_are_append_only_searchable_and_survive_a_reindex(api: dict[str, Any]) -> None:
    c, t, d, store = api["client"], api["tokens"], api["data"], api["store"]
    url = f"/api/v1/datasets/{d['alpha']}/metadata"
    first = c.post(url, json={"fields": {"qc": "pass", "motion_mm": 0.4}, "note": "visual QC"}, headers=h(t["alice"]))
    assert first.status_code == 201, first.text
    assert first.json()["seq"] == 1 and first.json()["author"] == "alice"
    second = c.post(url, json={"fields": {"qc": "fail", "group": ["control", "young"]}}, headers=h(t["alice"]))
    assert second.json()["seq"] == 2
    shown = c.get(url, headers=h(t["victor"])).json()  # a viewer reads them
    assert [layer["fields"] for layer in shown["layers"]] == [{"qc": "pass", "motion_mm": 0.4},
                                                             {"qc": "fail", "group": ["control", "young"]}]
    assert shown["merged"] == {"qc": "fail", "motion_mm": 0.4, "group": ["control", "young"]}

    def hits(q: str) -> list[str]:
        return [x["id"] for x in c.get("/api/v1/search", params={"q": q}, headers=h(t["alice"])).json()["hits"]]

    assert hits("user.qc:fail AND user.group:control") == [d["alpha"]]
    assert hits("user.qc:pass") == []  # the later layer wins in the merged view
    assert hits("user.motion_mm:<1") == [d["alpha"]]

    # Who may: a viewer may not add, another project's dataset is not found, bad fields are 4xx.
    assert c.post(url, json={"fields": {"qc": "x"}}, headers=h(t["victor"])).status_code == 403
    assert c.post(f"/api/v1/datasets/{d['beta']}/metadata", json={"fields": {"qc": "x"}},
                  headers=h(t["alice"])).status_code == 404
    for bad in ({"fields": {}}, {"fields": {"../x": 1}}, {"fields": {"a": {"nested": 1}}}, {"fields": {"a": 1}, "x": 1},
                {"fields": {"a": "y" * 5000}}, {"fields": {"a": [1, "b"]}}):
        answer = c.post(url, json=bad, headers=h(t["alice"]))
        assert answer.status_code in (400, 422), (bad, answer.status_code, answer.text)
    clash = c.post(url, json={"fields": {"motion_mm": "a lot"}}, headers=h(t["alice"]))  # mapped as a number
    assert clash.status_code == 400 and "motion_mm" in clash.json()["detail"]
    assert len(c.get(url, headers=h(t["alice"])).json()["layers"]) == 2  # the refused layer left nothing

    # A rebuilt index still has them: the layers, not the index, are the record.
    doc = document_from_store(store, d["alpha"], Layers(MinioBlobs(store)))
    assert doc["user"] == {"qc": "fail", "motion_mm": 0.4, "group": ["control", "young"]}


def test_concurrent_layers_all_land_with_distinct_numbers(api: dict[str, Any]) -> None:
    layers = Layers(MinioBlobs(api["store"]))
    dataset = api["data"]["alpha"]
    numbers: list[int] = []

    def add(n: int) -> None:
        numbers.append(layers.add(dataset, {"rater": f"r{n}"}, "alice").seq)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
    assert sorted(layer.fields["rater"] for layer in layers.list(dataset)) == [f"r{n}" for n in range(6)]


def test_search_filters_and_facets_count_only_what_the_caller_sees(api: dict[str, Any]) -> None:
    c, t = api["client"], api["tokens"]
    docs = [series(n, "alpha", dwi=n % 4 == 0) | {"manufacturer": "SIEMENS" if n % 2 else "GE"}
            for n in range(1, 21)] + [series(n, "beta") | {"manufacturer": "Philips"} for n in range(21, 31)]
    index(api).bulk(docs)
    answer = c.get("/api/v1/search", params={"q": "kind:series", "facet": ["manufacturer", "is_diffusion"],
                                             "size": 0}, headers=h(t["alice"])).json()
    assert answer["total"] == 20 and answer["hits"] == []
    makers = {b["value"]: b["count"] for b in answer["facets"]["manufacturer"]}
    assert makers == {"siemens": 10, "ge": 10} or makers == {"SIEMENS": 10, "GE": 10}  # never beta's Philips
    assert {b["value"]: b["count"] for b in answer["facets"]["is_diffusion"]} == {"true": 5, "false": 15}
    filtered = c.get("/api/v1/search", params={"q": "kind:series", "filter": ["is_diffusion:true"],
                                               "facet": ["manufacturer"]}, headers=h(t["alice"])).json()
    assert filtered["total"] == 5
    assert sum(b["count"] for b in filtered["facets"]["manufacturer"]) == 5
    either = c.get("/api/v1/search", params={"q": "*", "filter": ["patient_id:P001", "patient_id:P002"]},
                   headers=h(t["alice"])).json()
    assert sorted(x["patient_id"] for x in either["hits"]) == ["P001", "P002"]
    for bad in ({"filter": "nocolon"}, {"facet": "a b"}, {"facet": ["series_description.text"]}):
        got = c.get("/api/v1/search", params=bad, headers=h(t["alice"]))
        assert got.status_code in (400, 422), (bad, got.status_code, got.text)


def test_search_sorts_by_several_fields_in_turn_and_pages_stably(api: dict[str, Any]) -> None:
    c, t = api["client"], api["tokens"]
    docs = [series(n, "alpha", dwi=n % 2 == 0) | {"manufacturer": "GE" if n % 3 else "SIEMENS"} for n in range(1, 13)]
    index(api).bulk(docs)
    params = {"q": "kind:series", "sort": ["manufacturer:desc", "patient_id:asc"], "size": 5}
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        page = c.get("/api/v1/search", params=params | ({"after": after} if after else {}),
                     headers=h(t["alice"])).json()
        seen += [(x["manufacturer"], x["patient_id"]) for x in page["hits"]]
        if not (after := page["next"]):
            break
    expected = sorted(((d["manufacturer"], d["patient_id"]) for d in docs), key=lambda m: m[1])
    expected.sort(key=lambda m: m[0].lower(), reverse=True)  # manufacturer descending, then patient ascending
    assert seen == expected
    assert c.get("/api/v1/search", params={"sort": ["a:asc"] * 6}, headers=h(t["alice"])).status_code == 422
    assert c.get("/api/v1/search", params={"sort": ["patient_id:up"]}, headers=h(t["alice"])).status_code == 422
