"""The local stack started by infra/stack.sh: up, idempotent, on loopback, with its own credentials."""

from __future__ import annotations

import base64
import json
import socket
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nps.config import Settings
from tests.conftest import REPO, service_missing

STACK = ["bash", str(REPO / "infra" / "stack.sh")]


@pytest.fixture(scope="module")
def stack_env(settings: Settings) -> dict[str, str]:
    path = settings.cache / "stack.env"
    if not path.is_file():
        service_missing(f"{path} missing: run `make up`")
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return dict(pairs)


def http_status(url: str, user: str | None = None, password: str | None = None) -> int:
    req = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_every_service_reports_up(stack_env: dict[str, str]) -> None:
    result = subprocess.run([*STACK, "status"], capture_output=True, text=True, timeout=60)
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert lines == {"rabbitmq": "up", "elasticsearch": "up", "minio": "up", "podman": "up", "orthanc": "up",
                     "nginx": "up"}, \
        result.stdout
    assert result.returncode == 0


def test_a_second_up_finds_everything_running_and_starts_nothing(stack_env: dict[str, str]) -> None:
    result = subprocess.run([*STACK, "up"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "starting" not in result.stderr and "installing" not in result.stderr and "building" not in result.stderr
    for service in ("rabbitmq", "elasticsearch", "minio", "podman", "orthanc", "nginx"):
        assert f"{service}: " in result.stderr


def test_generated_credentials_are_private_and_outside_the_repo(settings: Settings, stack_env: dict[str, str]) -> None:
    for name in ("stack.env", "secrets.env"):
        path = settings.cache / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{path} must be mode 0600"
        assert REPO not in path.resolve().parents
    assert len(stack_env["NPS_MINIO_SECRET_KEY"]) >= 24
    tracked = subprocess.run(["git", "grep", "-l", stack_env["NPS_MINIO_SECRET_KEY"]], cwd=REPO,
                             capture_output=True, text=True)
    assert tracked.stdout == "", "a generated secret is committed in the repository"


def test_rabbitmq_accepts_its_own_user_and_refuses_guest(stack_env: dict[str, str]) -> None:
    amqp = stack_env["NPS_AMQP_URL"]
    user, password = amqp.split("//", 1)[1].split("@", 1)[0].split(":", 1)
    whoami = stack_env["NPS_RABBITMQ_MGMT_URL"] + "/api/whoami"
    assert http_status(whoami, user, password) == 200
    assert http_status(whoami, "guest", "guest") == 401
    assert http_status(whoami, user, "wrong") == 401


def test_elasticsearch_is_healthy_and_bound_to_loopback(stack_env: dict[str, str]) -> None:
    with urllib.request.urlopen(stack_env["NPS_ES_URL"] + "/_cluster/health", timeout=10) as resp:
        assert json.load(resp)["status"] in ("green", "yellow")
    with urllib.request.urlopen(stack_env["NPS_ES_URL"] + "/_nodes/http", timeout=10) as resp:
        nodes = json.load(resp)["nodes"]
    for node in nodes.values():
        assert all(a.startswith("127.0.0.1:") for a in node["http"]["bound_address"])


def test_minio_refuses_anonymous_requests(stack_env: dict[str, str]) -> None:
    assert http_status(f"http://{stack_env['NPS_MINIO_ENDPOINT']}/") == 403


def test_podman_serves_the_docker_api_on_its_socket(stack_env: dict[str, str]) -> None:
    sock_path = stack_env["NPS_DOCKER_HOST"].removeprefix("unix://")
    assert Path(sock_path).is_socket()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(sock_path)
        sock.sendall(b"GET /version HTTP/1.0\r\nHost: d\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0]
    assert "Podman" in json.loads(body)["Components"][0]["Name"]


def test_services_listen_only_on_loopback(stack_env: dict[str, str]) -> None:
    ports = {int(stack_env["NPS_MINIO_ENDPOINT"].rsplit(":", 1)[1]), int(stack_env["NPS_ES_URL"].rsplit(":", 1)[1]),
             int(stack_env["NPS_AMQP_URL"].rsplit(":", 1)[1].split("/", 1)[0])}
    listening = subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout.splitlines()
    for line in listening:
        local = line.split()[3]
        host, _, port = local.rpartition(":")
        if int(port) in ports:
            assert host in ("127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"), f"port {port} bound to {host}"
