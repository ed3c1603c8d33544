"""Processors end to end on the real stack: a study sent to the DICOM receiver is converted
and measured with no manual step; a study-level job waits for its FLAIR; a broken file beside
the good ones changes nothing for them; an out-of-memory failure is rerun with more memory."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from nps.hashing import series_dataset_id
from tests.conftest import REPO
from tests.ingest.conftest import send
from tests.jobs.conftest import run_nps
from tests.processors.conftest import Stack
from tests.processors.helpers import status, synthetic, wait_status

EXAMPLES = REPO / "examples" / "processors"


def test_a_study_is_converted_and_measured_without_a_manual_step(
        stack: Callable[..., Stack], tmp_path: Path) -> None:
    files = {name: (EXAMPLES / name).read_text() for name in ("dcm2niix.yaml", "t1-stats.yaml", "t1-flair.yaml")}
    files["broken.yaml"] = "name: broken\nversion: 1\nlevel: nowhere\n"  # beside the good ones
    running = stack(files)
    settings, env, folder = running.settings, running.env, running.folder
    study = "1.2.826.0.1.3680043.8.498.1"
    t1 = series_dataset_id(synthetic(tmp_path / "t1", "--study", study))
    assert send(settings.dicom_port, sorted((tmp_path / "t1").iterdir())) == [0] * 8

    stats = wait_status(env, folder, ("t1-stats", f"series:{t1}"), {"COMPLETE", "FAILED"})
    assert stats["state"] == "COMPLETE", stats
    convert = status(env, folder)[("dcm2niix", f"series:{t1}")]
    assert convert["state"] == "COMPLETE"
    pair = status(env, folder)[("t1-flair", f"study:{study}")]
    assert pair["state"] == "NEED_INPUTS" and pair["reason"].startswith("flair: no results of 'dcm2niix'")

    found = json.loads(run_nps("find", "processor:t1-stats AND metadata.brain_mean:>0", "-f", "json",
                               env=env).stdout)["hits"]
    assert [h["id"] for h in found] == stats["jobs"]
    assert found[0]["inputs"] == convert["jobs"]  # provenance: stats <- NIfTI <- DICOM series
    nifti = json.loads(run_nps("--store", "minio", "show", convert["jobs"][0], env=env).stdout)
    assert [i["dataset"] for i in nifti["inputs"]] == [t1]

    # The FLAIR arrives: the study-level job stops waiting.
    flair = series_dataset_id(synthetic(tmp_path / "flair", "--study", study, "--flair"))
    assert send(settings.dicom_port, sorted((tmp_path / "flair").iterdir())) == [0] * 8
    done = wait_status(env, folder, ("t1-flair", f"study:{study}"), {"COMPLETE", "FAILED"})
    assert done["state"] == "COMPLETE", done
    assert status(env, folder)[("dcm2niix", f"series:{flair}")]["state"] == "COMPLETE"

    broken = run_nps("processors", "validate", "--dir", str(folder), env=env, ok=False)
    assert broken.returncode == 1 and "broken.yaml:3: level" in broken.stderr

    again = json.loads(run_nps("processors", "sweep", "--dir", str(folder), "--json", env=env).stdout)
    assert again["submitted"] == [] and again["already_known"] >= 4  # nothing done is done twice


HOG = """\
name: hog
version: 1
level: series
inputs:
  dicom: {mount: /input}
image: localhost/nps/busybox:1
command: [sh, -c, 'x=$(head -c 60000000 /dev/zero | tr "\\\\0" a); echo ${#x}']
resources: {memory: 32M, walltime_s: 120}
"""


def test_an_out_of_memory_target_reruns_with_more_memory(stack: Callable[..., Stack], tmp_path: Path) -> None:
    running = stack({"hog.yaml": HOG})
    settings, env, folder = running.settings, running.env, running.folder
    series = series_dataset_id(synthetic(tmp_path / "s"))
    assert send(settings.dicom_port, sorted((tmp_path / "s").iterdir())) == [0] * 8
    failed = wait_status(env, folder, ("hog", f"series:{series}"), {"FAILED", "COMPLETE"})
    assert failed["state"] == "FAILED" and "memory" in failed["reason"]
    rerun = run_nps("processors", "rerun", "--dir", str(folder), "--processor", "hog", "--memory", "512M", env=env)
    assert rerun.stdout.split() == failed["jobs"]
    assert wait_status(env, folder, ("hog", f"series:{series}"), {"COMPLETE", "FAILED"})["state"] == "COMPLETE"
