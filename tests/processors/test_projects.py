"""Results of processors belong to their inputs' project: a series filed under project alpha
gives series- and study-level results in alpha, which alpha's members read through the API and
members of the default project do not see at all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nps.api.app import create_app
from nps.api.auth import Auth, Role
from nps.blobs import MinioBlobs
from nps.config import Settings
from nps.hashing import series_dataset_id
from nps.store.minio import MinioStore
from tests.ingest.conftest import send, wait_indexed
from tests.processors.conftest import ALPHA_AE, Stack
from tests.processors.helpers import synthetic, wait_status

PER_SERIES = """\
name: list-series
version: 1
level: series
where: 'modality:MR'
inputs:
  dicom: {mount: /input}
image: localhost/nps/busybox:1
command: [sh, -c, 'ls /input > /output/files.txt']
"""
PER_STUDY = """\
name: list-study
version: 1
level: study
where: 'modality:MR'
inputs:
  series: {match: '*', need: at_least_one, choose: all, mount: /input}
image: localhost/nps/busybox:1
command: [sh, -c, 'ls -R /input > /output/files.txt']
"""


@pytest.fixture
def api(stack: Callable[..., Stack]) -> Iterator[tuple[Stack, TestClient, dict[str, str]]]:
    """The stack with both processors, the API in process, and tokens of a member of alpha
    (ann) and a member of the default project only (dan)."""
    running = stack({"list-series.yaml": PER_SERIES, "list-study.yaml": PER_STUDY})
    auth = Auth(MinioBlobs(MinioStore(running.settings)))
    auth.add_user("ann", Role.MEMBER, ("alpha",))
    auth.add_user("dan", Role.MEMBER, ("default",))
    tokens = {name: auth.create_token(name)[0] for name in ("ann", "dan")}
    with TestClient(create_app(running.settings)) as client:
        yield running, client, tokens


def read(client: TestClient, token: str, path: str) -> Any:
    answer = client.get(f"/api/v1/{path}", headers={"Authorization": f"Bearer {token}"})
    return answer.json() if answer.status_code == 200 else answer.status_code


def test_results_of_a_series_in_a_project_are_in_that_project_and_only_its_members_read_them(
        api: tuple[Stack, TestClient, dict[str, str]], tmp_path: Path) -> None:
    running, client, tokens = api
    settings: Settings = running.settings
    study = "1.2.826.0.1.3680043.8.498.77"
    series = series_dataset_id(synthetic(tmp_path / "s", "--study", study))
    assert send(settings.dicom_port, sorted((tmp_path / "s").iterdir()), calling=ALPHA_AE) == [0] * 8
    assert wait_indexed(settings, series).get("project") == "alpha"

    results = []
    for key in (("list-series", f"series:{series}"), ("list-study", f"study:{study}")):
        row = wait_status(running.env, running.folder, key, {"COMPLETE", "FAILED"})
        assert row["state"] == "COMPLETE", row
        results += row["jobs"]
    assert len(results) == 2
    for result in results:
        mine = read(client, tokens["ann"], f"datasets/{result}")
        assert isinstance(mine, dict), f"alpha's member cannot read alpha's result {result}: {mine}"
        assert mine["record"]["project"] == "alpha", mine
        assert read(client, tokens["ann"], f"jobs/{result}")["request"]["project"] == "alpha"
        assert read(client, tokens["dan"], f"datasets/{result}") == 404
        assert read(client, tokens["dan"], f"jobs/{result}") == 404
    found = read(client, tokens["ann"], "search?q=kind:result")["hits"]
    assert sorted(h["id"] for h in found) == sorted(results)
    assert read(client, tokens["dan"], "search?q=kind:result")["hits"] == []
