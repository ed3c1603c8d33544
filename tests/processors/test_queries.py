"""A processor whose query Elasticsearch refuses stops nothing else: it is reported when the
files are loaded (validate, the worker, status), and when Elasticsearch starts refusing it
later the worker disables that processor alone and keeps processing new data."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from nps.config import Settings
from nps.errors import NPSError
from nps.hashing import series_dataset_id
from nps.index import DatasetIndex
from nps.processors import load_dir
from nps.processors.catalog import query_problem
from nps.processors.queries import check_queries
from tests.conftest import service_missing
from tests.ingest.conftest import send
from tests.jobs.conftest import run_nps
from tests.processors.conftest import Stack
from tests.processors.helpers import queue_counts, status, synthetic, topology_of, wait_status

GOOD = """\
name: good
version: 1
level: series
where: 'modality:MR'
inputs:
  dicom: {mount: /input}
image: localhost/nps/busybox:1
command: [sh, -c, 'ls /input > /output/files.txt']
"""
# Valid; refused once the index's max_regex_length is lowered below the regex's length.
REGEX = GOOD.replace("name: good", "name: regex").replace("'modality:MR'", "'modality:/M[A-Z]+/'")
BAD = GOOD.replace("name: good", "name: bad").replace("'modality:MR'", "'modality:(MR'")
USER_OF_BAD = """\
name: after-bad
version: 1
level: series
inputs:
  first: {from: bad, mount: /input}
image: localhost/nps/busybox:1
command: [ls, /input]
"""
BAD_MATCH = GOOD.replace("name: good", "name: bad-match").replace(
    "  dicom: {mount: /input}", "  dicom:\n    match: 'series_description:t1 AND'\n    mount: /input")


@pytest.fixture
def index(settings: Settings) -> Iterator[DatasetIndex]:
    """A private, empty datasets index on the real Elasticsearch."""
    found = DatasetIndex(settings.es_url, f"t{uuid.uuid4().hex[:10]}")
    try:
        found.ensure()
    except NPSError as exc:
        service_missing(f"Elasticsearch unusable: {exc}")
    yield found
    found.drop()


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_a_refused_query_is_reported_with_file_line_and_name_and_skips_only_its_processor_and_users(
        index: DatasetIndex, tmp_path: Path) -> None:
    folder = write(tmp_path, {"good.yaml": GOOD, "bad.yaml": BAD, "after-bad.yaml": USER_OF_BAD,
                              "bad-match.yaml": BAD_MATCH})
    checked = check_queries(load_dir(folder), partial(query_problem, index))
    assert list(checked.processors) == ["good"]
    errors = sorted(checked.errors)
    assert errors[0].startswith(f"{folder / 'after-bad.yaml'}: it takes results of 'bad', which is not usable")
    assert errors[1].startswith(f"{folder / 'bad-match.yaml'}:7: inputs.dicom.match: Elasticsearch refuses the "
                                "query 'series_description:t1 AND': ")
    assert errors[2].startswith(f"{folder / 'bad.yaml'}:4: where: Elasticsearch refuses the query 'modality:(MR': "
                                "Failed to parse query")
    assert errors[2].endswith("(processor 'bad' skipped)") and "\n" not in errors[2]


def test_validate_names_the_refused_query_and_exits_1(index: DatasetIndex, tmp_path: Path) -> None:
    folder = write(tmp_path / "p", {"good.yaml": GOOD, "bad.yaml": BAD})
    env = {**os.environ, "NPS_QUEUE_PREFIX": index.name.removesuffix("-datasets")}
    checked = run_nps("processors", "validate", "--dir", str(folder), env=env, ok=False)
    assert checked.returncode == 1
    assert checked.stdout.split("\t")[0] == "good@1"
    assert f"error: {folder / 'bad.yaml'}:4: where: Elasticsearch refuses the query 'modality:(MR': Failed to " \
           "parse query [modality:(MR]" in checked.stderr
    assert "(processor 'bad' skipped)" in checked.stderr
    offline = run_nps("processors", "validate", "--offline", "--dir", str(folder), env=env)
    assert offline.stdout.count("@1") == 2  # the files alone are fine


def test_a_query_refused_at_run_time_disables_its_processor_alone_and_new_data_is_still_processed(
        stack: Callable[..., Stack], tmp_path: Path) -> None:
    running = stack({"good.yaml": GOOD, "regex.yaml": REGEX, "bad.yaml": BAD})
    settings, env, folder = running.settings, running.env, running.folder
    es = DatasetIndex(settings.es_url, settings.queue_prefix)
    assert status(env, folder)[("bad", "-")]["state"] == "INVALID"  # refused at load: never used
    # The worker loaded `regex` while Elasticsearch took its query; now it refuses it.
    es.es.indices.put_settings(index=es.name, settings={"index.max_regex_length": 3})

    series = series_dataset_id(synthetic(tmp_path / "s"))
    assert send(settings.dicom_port, sorted((tmp_path / "s").iterdir())) == [0] * 8
    assert wait_status(env, folder, ("good", f"series:{series}"), {"COMPLETE", "FAILED"})["state"] == "COMPLETE"

    log = next(tmp_path.glob("worker-processors-*.log")).read_text()
    disabled = [line for line in log.splitlines() if "' disabled: " in line]
    assert len(disabled) == 1, log
    assert f"processor 'regex' disabled: {folder / 'regex.yaml'}:4: where: Elasticsearch refuses the query " \
           "'modality:/M[A-Z]+/': " in disabled[0] and "max_regex_length" in disabled[0]
    assert queue_counts(settings, topology_of(settings).processors_dlq) == (0, 0)  # no event dead-lettered

    # Elasticsearch takes the query again, but the worker still skips `regex`: status says so.
    es.es.indices.put_settings(index=es.name, settings={"index.max_regex_length": 1000})
    rows = status(env, folder)
    assert rows[("regex", "-")]["state"] == "INVALID"
    assert "disabled by the processor worker" in rows[("regex", "-")]["reason"]
    assert ("regex", f"series:{series}") not in rows
    assert rows[("bad", "-")]["reason"].startswith(f"{folder / 'bad.yaml'}:4: where: Elasticsearch refuses")
