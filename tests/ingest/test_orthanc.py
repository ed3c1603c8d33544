"""A real PACS in front of NPS: dcmtk's storescu sends to Debian's Orthanc, whose auto-routing
(infra/orthanc/autoroute.lua) forwards every instance to the NPS receiver."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from nps.config import Settings
from nps.hashing import series_dataset_id
from tests.conftest import dcmtk, service_missing
from tests.dicom.factory import make_series
from tests.ingest.conftest import env_for, wait_for_echo, wait_indexed


def stack_env(settings: Settings) -> dict[str, str]:
    path = settings.cache / "stack.env"
    if not path.is_file():
        service_missing("stack.env missing: run `make up`")
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")
    return {k: v for k, v in pairs}


def orthanc_get(env: dict[str, str], path: str) -> object:
    request = urllib.request.Request(env["NPS_ORTHANC_URL"] + path)
    token = base64.b64encode(f"{env['NPS_ORTHANC_USER']}:{env['NPS_ORTHANC_PASSWORD']}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_series_stored_into_orthanc_is_routed_to_nps_and_searchable(
        pipeline: Settings, processes: Callable[..., subprocess.Popen[str]], tmp_path: Path) -> None:
    env = stack_env(pipeline)
    if "NPS_ORTHANC_URL" not in env:
        service_missing("Orthanc not installed: run `make up`")
    try:
        orthanc_get(env, "/system")
    except OSError as exc:
        service_missing(f"Orthanc is not answering: {exc}")
    port = int(env["NPS_DICOM_PORT"])  # where Orthanc's modality "nps" points
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            pytest.fail(f"port {port} (Orthanc's route to NPS) is taken by another receiver; stop it first")
    routed = pipeline.model_copy(update={"dicom_port": port})
    proc = processes("receiver", "--processes", "1", env=env_for(routed))
    wait_for_echo(port, proc)

    uid, sops = make_series(tmp_path / "s", 6, PatientName="Pacs^Routed", SeriesDescription="FLAIR_axial",
                            InversionTime=2500, RepetitionTime=9000, EchoTime=90)
    sent = subprocess.run([dcmtk("storescu"), "-aet", "MODALITY", "-aec", env["NPS_ORTHANC_AET"], "+sd", "127.0.0.1",
                           env["NPS_ORTHANC_DICOM_PORT"], str(tmp_path / "s")],
                          env=dict(os.environ, TCP_NODELAY="1"), capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr

    doc = wait_indexed(routed, series_dataset_id(uid), timeout=90)
    if doc["number_of_instances"] < 6:  # Orthanc forwards instance by instance: may amend once
        doc = wait_indexed(routed, series_dataset_id(uid), revision=doc["revision"] + 1, timeout=90)
    assert doc["number_of_instances"] == 6 and doc["classification"] == "FLAIR"
    assert doc["patient_name"] == "Pacs Routed"
    # Orthanc kept its own copy (it is the PACS): find the series by its UID.
    found = orthanc_get(env, "/series?expand")
    assert any(s["MainDicomTags"].get("SeriesInstanceUID") == uid for s in found)  # type: ignore[union-attr]
    assert len(sops) == 6
