"""The Python client against a real API server: every kind of answer, streamed downloads, and
how it finds its configuration."""

from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from nps.client import ApiUnavailable, Client, NotAuthenticated, NotFound, resolve
from nps.client.config import read_file, write_file
from nps.errors import ConfigError, DatasetNotFound, InvalidQuery, JobNotFound
from tests.client.conftest import api, busybox_id, served  # noqa: F401 (fixtures)


def test_reads_datasets_ranges_archives_and_searches_only_its_projects(
        served: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    alpha, beta = served["data"]["alpha"], served["data"]["beta"]
    with Client(served["url"], served["tokens"]["alice"]) as nps_api:
        assert nps_api.health() and nps_api.me() == {"name": "alice", "role": "member", "projects": ["alpha"]}
        assert nps_api.dataset(alpha)["record"]["project"] == "alpha"
        assert {"notes.txt", "sub/x.bin"} <= {f["path"] for f in nps_api.files(alpha)}
        assert b"".join(nps_api.read(alpha, "notes.txt")) == b"alpha data\n" * 1000
        assert b"".join(nps_api.read(alpha, "sub/x.bin", 1, 4)) == bytes([1, 2, 3])
        assert b"".join(nps_api.read(alpha, "notes.txt", 5000)) == (b"alpha data\n" * 1000)[5000:]
        ticks: list[int] = []
        nps_api.download(alpha, "sub/x.bin", tmp_path / "x.bin", ticks.append)
        assert (tmp_path / "x.bin").read_bytes() == bytes(range(256)) * 4 and sum(ticks) == 1024
        nps_api.download_archive(alpha, tmp_path / "a.tar")
        with tarfile.open(tmp_path / "a.tar") as tar:
            member = tar.extractfile(f"{alpha}/notes.txt")
            assert member is not None and member.read() == b"alpha data\n" * 1000
        got = nps_api.download_dataset(alpha, tmp_path / "copy")
        assert (tmp_path / "copy" / "sub" / "x.bin").read_bytes() == bytes(range(256)) * 4 and got
        assert [h["id"] for h in nps_api.search("*")["hits"]] == [alpha]
        assert [h["id"] for h in nps_api.iter_search("*", page_size=1)] == [alpha]
        with pytest.raises(DatasetNotFound):
            nps_api.dataset(beta)  # another project's dataset is not found
        with pytest.raises(DatasetNotFound):
            b"".join(nps_api.read(beta, "notes.txt"))
        with pytest.raises(InvalidQuery):
            nps_api.search("id:*abc")  # leading wildcard
        with pytest.raises(InvalidQuery):
            b"".join(nps_api.read(alpha, "notes.txt", 10**9))  # outside the file: 416
        with pytest.raises(JobNotFound):
            nps_api.job("0" * 40)
        with pytest.raises(NotFound):
            nps_api.group("g-000000000000")
        layer = nps_api.add_metadata(alpha, {"quality": "good", "score": 3}, note="checked")
        assert layer["seq"] == 1 and nps_api.metadata(alpha)["merged"] == {"quality": "good", "score": 3}
        assert nps_api.provenance(alpha)["datasets"] == []
    with Client(served["url"], served["tokens"]["bob"]) as nps_api:
        assert [h["id"] for h in nps_api.search("*")["hits"]] == [beta]


def test_groups_page_through_every_member(served: dict[str, Any]) -> None:  # noqa: F811
    alpha = served["data"]["alpha"]
    with Client(served["url"], served["tokens"]["alice"]) as nps_api:
        group = nps_api.create_group("one", ids=[alpha], project="alpha")
        assert group["size"] == 1 and group["project"] == "alpha"
        assert [g["id"] for g in nps_api.groups()] == [group["id"]]
        assert [m["id"] for m in nps_api.iter_group(group["id"], page_size=1)] == [alpha]
        assert [m["id"] for m in nps_api.iter_group(group["id"], q="files:>100")] == []
        with pytest.raises(ConfigError):
            nps_api.create_group("neither")


def test_a_bad_token_and_an_unreachable_api_are_clear_errors(served: dict[str, Any]) -> None:  # noqa: F811
    with Client(served["url"], "nps_wrong") as nps_api, pytest.raises(NotAuthenticated, match="nps login"):
        nps_api.me()
    with socket_closed() as url, Client(url, "nps_x", timeout=5) as nps_api, pytest.raises(ApiUnavailable,
                                                                                     match="unreachable"):
        nps_api.me()
    assert "nps_" not in repr(Client(served["url"], served["tokens"]["alice"]))


class socket_closed:
    """A loopback URL nothing listens on."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        return None


def test_configuration_environment_first_and_a_saved_token_stays_with_its_url(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("NPS_API_URL", raising=False)
    monkeypatch.delenv("NPS_API_TOKEN", raising=False)
    assert resolve() is None
    path = write_file("http://127.0.0.1:8080", 'nps_se"cret')
    assert path == tmp_path / "cfg" / "nps" / "client.toml"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_file() == {"url": "http://127.0.0.1:8080", "token": 'nps_se"cret'}
    config = resolve()
    assert config is not None and config.token == 'nps_se"cret' and "se" not in repr(config)
    monkeypatch.setenv("NPS_API_TOKEN", "nps_env")
    config = resolve()
    assert config is not None and (config.url, config.token) == ("http://127.0.0.1:8080", "nps_env")
    monkeypatch.delenv("NPS_API_TOKEN")
    monkeypatch.setenv("NPS_API_URL", "http://127.0.0.1:8080/")
    config = resolve()
    assert config is not None and config.token == 'nps_se"cret'  # same server: the saved token
    monkeypatch.setenv("NPS_API_URL", "http://elsewhere.example:8080")
    with pytest.raises(ConfigError, match="NPS_API_TOKEN"):
        resolve()  # another server never gets the saved token
    monkeypatch.setenv("NPS_API_URL", "ftp://nope")
    with pytest.raises(ConfigError):
        resolve()
    (tmp_path / "cfg" / "nps" / "client.toml").write_text("url = [oops")
    monkeypatch.delenv("NPS_API_URL")
    with pytest.raises(ConfigError, match="TOML"):
        resolve()
