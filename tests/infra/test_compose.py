"""The compose file for Docker users parses and matches the local stack."""

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
COMPOSE = INFRA / "compose.yaml"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"  # installed by infra/stack.sh


def load() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_file_parses_and_has_the_servers_and_the_apis_front() -> None:
    assert set(load()["services"]) == {"rabbitmq", "elasticsearch", "minio", "nginx"}


def test_every_compose_service_has_a_health_check() -> None:
    for name, service in load()["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert check.get("retries", 0) > 0, f"{name} health check never retries"


def test_compose_binds_only_to_loopback_on_the_stack_ports() -> None:
    services = load()["services"]
    published = {name: [p.rsplit(":", 1)[0] for p in svc.get("ports", [])] for name, svc in services.items()}
    assert published == {
        "rabbitmq": ["127.0.0.1:5682", "127.0.0.1:15682"],
        "elasticsearch": ["127.0.0.1:9210"],
        "minio": ["127.0.0.1:9100", "127.0.0.1:9101"],
        "nginx": [],  # on the host's network, listening where its environment says
    }
    assert services["nginx"]["network_mode"] == "host"
    assert services["nginx"]["environment"]["NPS_BIND"] == "127.0.0.1"


def test_compose_nginx_renders_the_stacks_config_and_nginx_accepts_it(tmp_path: Path) -> None:
    """The compose service's command, run here with this machine's nginx (the same renderer
    infra/stack.sh uses): the config it writes is the stack's, and `nginx -t` accepts it."""
    service = load()["services"]["nginx"]
    env = {k: str(v) for k, v in service["environment"].items()} | {"NPS_API_ACCEL_SECRET": "s3cretABC123"}
    command = service["command"][0].replace("/opt/nps-nginx", str(INFRA / "nginx")).replace(
        "/tmp/nps-nginx", str(tmp_path)).replace("exec nginx", f"exec {NGINX} -t -q")
    result = subprocess.run(["sh", "-c", command], env=env | {"PATH": os.environ["PATH"]}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    conf = (tmp_path / "nps.conf").read_text()
    assert "listen 127.0.0.1:8088;" in conf and "server 127.0.0.1:8080" in conf and "127.0.0.1:9100" in conf
    assert 'X-NPS-Accel "s3cretABC123"' in conf and not re.search(r"@[A-Z_]+@", conf)


def test_the_nginx_renderer_refuses_what_would_break_its_config(tmp_path: Path) -> None:
    for bad in ({"NPS_API_ACCEL_SECRET": "a|b"}, {"NPS_API_ACCEL_SECRET": "ok1", "NPS_WEB_PORT": "80;x"},
                {"NPS_API_ACCEL_SECRET": "ok1", "NPS_BIND": "0.0.0.0 evil"}, {}):
        result = subprocess.run(["sh", str(INFRA / "nginx" / "render.sh"), str(tmp_path / "c"), "d", "l"],
                                env={"PATH": os.environ["PATH"], **bad}, capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and result.stderr, bad
        assert not (tmp_path / "c").exists()
    for folder in ("/tmp/a&b", "/tmp/a|b", "/tmp/a\\b"):  # would change sed's replacement text
        result = subprocess.run(["sh", str(INFRA / "nginx" / "render.sh"), str(tmp_path / "c"), folder, "l"],
                                env={"PATH": os.environ["PATH"], "NPS_API_ACCEL_SECRET": "ok1"},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "unusable path" in result.stderr, folder
    assert not list(tmp_path.iterdir())  # no configuration, and no temporary file left


def test_compose_has_no_default_secrets() -> None:
    text = COMPOSE.read_text()
    assert "guest" not in text
    assert "minioadmin" not in text
    assert "${NPS_MINIO_SECRET_KEY:?" in text and "${NPS_RABBITMQ_PASSWORD:?" in text
    assert "${NPS_API_ACCEL_SECRET:?" in text
