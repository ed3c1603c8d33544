"""Job parameters sent as JSON through the API keep their JSON types."""

from __future__ import annotations

from typing import Any

from tests.api.test_api import BUSYBOX, h


def test_typed_parameters_sent_through_the_api_keep_their_types(api: dict[str, Any], busybox_id: str) -> None:
    c, t, d = api["client"], api["tokens"], api["data"]
    parameters = {"flag": True, "threshold": 0.5, "count": 3, "label": "left", "nothing": None}
    job = {"image": BUSYBOX, "command": ["true"], "inputs": [{"dataset": d["alpha"], "mount": "/input"}],
           "parameters": parameters}
    accepted = c.post("/api/v1/jobs", json=job, headers=h(t["alice"]))
    assert accepted.status_code == 202, accepted.text
    got = c.get(f"/api/v1/jobs/{accepted.json()['job_id']}", headers=h(t["alice"])).json()
    assert got["request"]["spec"]["parameters"] == parameters
