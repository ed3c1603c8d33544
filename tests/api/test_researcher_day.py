"""A researcher's day through the API, on data that arrived as DICOM: find, freeze a group,
narrow it to the diffusion series, note a QC verdict, map a script over what passed, wait,
export the numbers beside each series' own fields, and trace a series to what was made from it.

Everything is real: `nps import` sends the files, the assembler and indexer make them
searchable series, the analyst plans the map, a job worker runs its containers, and the API
answers in-process."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from subprocess import Popen

import pytest
from fastapi.testclient import TestClient

from nps.api.app import create_app
from nps.api.auth import Auth, Role
from nps.blobs import MinioBlobs
from nps.config import Settings
from nps.hashing import series_dataset_id
from nps.store.minio import MinioStore
from tests.api.test_analyses import BUSYBOX, wait_done
from tests.api.test_groups import h
from tests.dicom.factory import make_series
from tests.ingest.conftest import env_for, wait_indexed
from tests.jobs.conftest import run_nps

COUNT_DICOM = ["sh", "-c", 'mkdir -p /output/.nps && n=$(ls /input/dicom | wc -l) && '
               'echo "{\\"instances\\": $n}" > /output/.nps/metadata.json && echo counted $n']


@pytest.fixture
def day(pipeline: Settings, processes: Callable[..., Popen[str]], busybox_id: str,
        tmp_path: Path) -> tuple[TestClient, dict[str, str], dict[str, list[str]]]:
    """Three subjects with a T1w and a DWI series each in project alpha, one in beta; imported."""
    processes("worker", "jobs", "-c", "2", env=env_for(pipeline))
    processes("worker", "analyses", env=env_for(pipeline))
    auth = Auth(MinioBlobs(MinioStore(pipeline)))
    auth.add_user("alice", Role.MEMBER, ("alpha",))
    auth.add_user("bob", Role.MEMBER, ("beta",))
    tokens = {n: auth.create_token(n)[0] for n in ("alice", "bob")}
    made: dict[str, list[str]] = {"t1": [], "dwi": [], "beta": []}
    for project, subjects in (("alpha", ("S01", "S02", "S03")), ("beta", ("X01",))):
        folder = tmp_path / project
        for subject in subjects:
            study = f"1.2.826.0.1.3680043.8.498.{len(made['t1']) + len(made['beta']) + 100}"
            t1, _ = make_series(folder / subject / "t1", 3, PatientID=subject, StudyInstanceUID=study)
            dwi, _ = make_series(folder / subject / "dwi", 4, PatientID=subject, StudyInstanceUID=study,
                                 SeriesDescription="ep2d_diff_mddw", ScanningSequence="EP", InversionTime=None,
                                 RepetitionTime=8000, EchoTime=90, DiffusionBValue=1000)
            if project == "beta":
                made["beta"] += [series_dataset_id(t1), series_dataset_id(dwi)]
            else:
                made["t1"].append(series_dataset_id(t1))
                made["dwi"].append(series_dataset_id(dwi))
        run_nps("import", "--project", project, str(folder), env=env_for(pipeline))
    for dataset_id in made["t1"] + made["dwi"] + made["beta"]:
        wait_indexed(pipeline, dataset_id)
    return TestClient(create_app(pipeline)), tokens, made


def test_a_researchers_day(day: tuple[TestClient, dict[str, str], dict[str, list[str]]]) -> None:
    c, tokens, made = day
    me = h(tokens["alice"])

    # Find: MR series in my projects, with counts by classification and subject.
    found = c.get("/api/v1/search", params={"q": "modality:MR AND kind:series", "facet": ["classification",
                                                                                        "patient_id"]},
                  headers=me).json()
    assert found["total"] == 6  # beta's series are not mine
    classes = {b["value"]: b["count"] for b in found["facets"]["classification"]}
    assert classes == {"T1w": 3, "DWI": 3}, classes
    assert {b["value"] for b in found["facets"]["patient_id"]} == {"S01", "S02", "S03"}

    # Freeze a group; new data never changes it. Narrow it to the diffusion series.
    group = c.post("/api/v1/groups", json={"name": "baseline", "project": "alpha", "query": "kind:series"},
                   headers=me).json()
    assert group["size"] == 6
    dwi = c.get(f"/api/v1/groups/{group['id']}", params={"q": "is_diffusion:true"}, headers=me).json()
    assert sorted(m["id"] for m in dwi["members"]) == sorted(made["dwi"])
    assert all(1000.0 in m["b_values"] for m in dwi["members"])

    # A QC verdict on one DWI series, kept as a metadata layer (who, when), searchable at once.
    bad = made["dwi"][1]
    assert c.post(f"/api/v1/datasets/{bad}/metadata", json={"fields": {"qc": "fail"}, "note": "motion"},
                  headers=me).status_code == 201

    # Map a script over the diffusion series that passed QC; the analyst plans and queues it.
    started = c.post("/api/v1/analyses", headers=me, json={
        "kind": "map", "name": "count instances", "group": group["id"],
        "query": "is_diffusion:true AND NOT user.qc:fail", "image": BUSYBOX, "command": COUNT_DICOM}).json()
    status = wait_done(c, tokens["alice"], started["analysis"]["id"])
    assert status["states"] == {"COMPLETE": 2}, status
    planned = c.get(f"/api/v1/analyses/{started['analysis']['id']}/jobs", headers=me).json()
    assert sorted(planned["members"]) == sorted(set(made["dwi"]) - {bad})
    job = planned["job_ids"][0]
    assert "counted 4" in c.get(f"/api/v1/jobs/{job}/logs", headers=me).text

    # Export: one row per input series, the job's numbers beside the series' own fields.
    table = c.get("/api/v1/export", headers=me, params={
        "analysis": started["analysis"]["id"], "fields": "metadata.instances",
        "input_fields": "patient_id,series_description,classification"})
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert sorted((r["input.patient_id"], r["metadata.instances"], r["input.classification"]) for r in rows) == [
        ("S01", "4", "DWI"), ("S03", "4", "DWI")]
    assert all(r["input.series_description"] == "ep2d_diff_mddw" for r in rows)

    # Provenance: from a series to what was made from it, and back.
    first = planned["members"][0]
    down = c.get(f"/api/v1/datasets/{first}/provenance", params={"direction": "descendants"}, headers=me).json()
    assert [n["id"] for n in down["datasets"]] == [planned["job_ids"][0]]
    up = c.get(f"/api/v1/datasets/{job}/provenance", headers=me).json()
    assert [n["id"] for n in up["datasets"]] == [first]

    # The result itself, as a zip, with its metadata.
    archive = c.get(f"/api/v1/datasets/{job}/archive", params={"format": "zip"}, headers=me)
    with zipfile.ZipFile(io.BytesIO(archive.content)) as z:
        assert json.loads(z.read(f"{job}/.nps/metadata.json")) == {"instances": 4}

    # Bob (project beta) sees none of it.
    theirs = h(tokens["bob"])
    assert c.get(f"/api/v1/analyses/{started['analysis']['id']}", headers=theirs).status_code == 404
    assert c.get(f"/api/v1/datasets/{job}", headers=theirs).status_code == 404
    assert c.get("/api/v1/search", params={"q": "kind:series"}, headers=theirs).json()["total"] == 2
