"""Processor files as a lab writes them: valid ones load in dependency order; every mistake is
reported with file and line, and never stops the good files."""

from __future__ import annotations

from pathlib import Path

import pytest

from nps.processors import ProcessorError, load_dir, load_file

CONVERT = """\
name: convert
version: 1
level: series
where: 'modality:MR'
inputs:
  dicom:
    mount: /input
image: localhost/nps/neuro:1
command: [dcm2niix, -z, y, -o, /output, /input]
resources: {memory: 1G, walltime_s: 600}
"""

STATS = """\
name: stats
version: 2
level: series
where: 'classification:T1w'
inputs:
  nifti:
    from: convert
    mount: /input
image: localhost/nps/neuro:1
command: [python3, /code/stats.py, --threshold, '${threshold}', /input, /output]
parameters: {threshold: 500}
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_good_files_load_upstream_first_with_parameters_filled_in(tmp_path: Path) -> None:
    write(tmp_path, "b-stats.yaml", STATS)
    write(tmp_path, "a-convert.yml", CONVERT)
    loaded = load_dir(tmp_path)
    assert loaded.errors == []
    assert [p.name for p in loaded.ordered] == ["convert", "stats"]
    stats = loaded.processors["stats"]
    assert stats.key == "stats@2" and stats.inputs["nifti"].from_ == "convert"
    assert stats.argv() == ["python3", "/code/stats.py", "--threshold", "500", "/input", "/output"]
    assert loaded.processors["convert"].resources.memory_mb == 1024


@pytest.mark.parametrize(("text", "line", "words"), [
    (CONVERT.replace("level: series", "level: galaxy"), 3, "level"),
    (CONVERT.replace("    mount: /input", "    mount: input"), 7, "must be absolute"),
    (CONVERT.replace("    mount: /input", "    mount: /output/x"), 7, "overlaps the output"),
    (CONVERT.replace("version: 1", "version: one"), 2, "version"),
    (CONVERT.replace("name: convert", "name: Convert Me"), 1, "name"),
    (CONVERT + "surprise: true\n", 11, "surprise"),
    (CONVERT.replace("inputs:", "inputs: [").replace("image:", "]\nimage:"), 7, "not valid YAML"),
    ("- just\n- a list\n", 1, "must be a mapping"),
    (STATS.replace("parameters: {threshold: 500}\n", ""), 1, "no parameter 'threshold'"),
])
def test_each_mistake_names_the_file_the_line_and_what_is_wrong(
        tmp_path: Path, text: str, line: int, words: str) -> None:
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(ProcessorError) as info:
        load_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:") and words in message, message


def test_a_broken_file_is_reported_and_skipped_and_the_others_still_load(tmp_path: Path) -> None:
    write(tmp_path, "convert.yaml", CONVERT)
    write(tmp_path, "broken.yaml", "name: [unclosed\n")
    write(tmp_path, "also-convert.yaml", CONVERT)  # same name twice
    write(tmp_path, "notes.txt", "not a processor file")
    loaded = load_dir(tmp_path)
    assert list(loaded.processors) == ["convert"]
    assert len(loaded.errors) == 2
    assert any("broken.yaml:" in e for e in loaded.errors)
    assert any("already defined" in e for e in loaded.errors)


def test_cycles_and_missing_upstreams_skip_exactly_the_processors_involved(tmp_path: Path) -> None:
    write(tmp_path, "convert.yaml", CONVERT)
    write(tmp_path, "a.yaml", STATS.replace("name: stats", "name: a").replace("from: convert", "from: b"))
    write(tmp_path, "b.yaml", STATS.replace("name: stats", "name: b").replace("from: convert", "from: a"))
    write(tmp_path, "orphan.yaml", STATS.replace("name: stats", "name: orphan").replace("from: convert",
                                                                                         "from: nowhere"))
    write(tmp_path, "self.yaml", STATS.replace("name: stats", "name: me").replace("from: convert", "from: me"))
    write(tmp_path, "study.yaml", CONVERT.replace("name: convert", "name: per-study").replace("level: series",
                                                                                            "level: study"))
    write(tmp_path, "after-study.yaml", STATS.replace("name: stats", "name: later").replace("from: convert",
                                                                                          "from: per-study"))
    loaded = load_dir(tmp_path)
    assert list(loaded.processors) == ["convert", "per-study"]
    joined = "\n".join(loaded.errors)
    assert "only series-level processors" in joined
    assert "cycle: a -> b -> a" in joined and "'nowhere'" in joined and "its own results" in joined


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProcessorError, match="no such folder"):
        load_dir(tmp_path / "nope")


def test_a_processor_taking_results_of_a_skipped_one_is_reported_not_silently_dropped(tmp_path: Path) -> None:
    write(tmp_path, "orphan.yaml", STATS.replace("name: stats", "name: orphan").replace("from: convert",
                                                                                         "from: nowhere"))
    write(tmp_path, "later.yaml", STATS.replace("name: stats", "name: later").replace("from: convert",
                                                                                      "from: orphan"))
    loaded = load_dir(tmp_path)
    assert loaded.processors == {}
    assert loaded.rejected["later"] == f"{tmp_path / 'later.yaml'}: skipped: it takes results of 'orphan', " \
                                       "which is not usable"
    assert sorted(loaded.rejected) == ["later", "orphan"] and len(loaded.errors) == 2
