"""The client's config file (``nps login`` writes it, every command reads it): written as TOML by
a TOML writer, so whatever a URL or token holds reads back the same."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

import pytest

from nps.client.config import read_file, write_file

AWKWARD = [
    'https://nps.example.org/a"quoted"\\path',
    "https://例え.jp/データ/ünïcödé",
    "https://nps.example.org/😀/astral",  # outside the BMP: JSON would escape it as a surrogate pair
    "nps_tab\there\nnewline\x7fdel\x1fus",  # control characters, DEL included
    "nps_'single' \"double\" \\ trailing\\",
    "",
]


@pytest.mark.parametrize("value", AWKWARD)
def test_a_url_and_token_with_quotes_backslashes_and_unicode_read_back_unchanged(
        tmp_path: Path, value: str) -> None:
    path = write_file(value, value[::-1], tmp_path / "nps" / "client.toml")
    assert read_file(path) == {"url": value, "token": value[::-1]}
    assert tomllib.loads(path.read_text("utf-8")) == {"url": value, "token": value[::-1]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_writing_again_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "client.toml"
    write_file("https://one.example.org", "nps_one", path)
    write_file("https://two.example.org", "nps_two", path)
    assert read_file(path) == {"url": "https://two.example.org", "token": "nps_two"}
    assert [p.name for p in tmp_path.iterdir()] == ["client.toml"]
