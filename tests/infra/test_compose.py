"""The compose file for Docker users parses and matches the local stack."""

from pathlib import Path
from typing import Any

import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "compose.yaml"


def load() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_file_parses_and_has_the_three_servers() -> None:
    assert set(load()["services"]) == {"rabbitmq", "elasticsearch", "minio"}


def test_every_compose_service_has_a_health_check() -> None:
    for name, service in load()["services"].items():
        check = service.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert check.get("retries", 0) > 0, f"{name} health check never retries"


def test_compose_binds_only_to_loopback_on_the_stack_ports() -> None:
    published = {name: [p.rsplit(":", 1)[0] for p in svc.get("ports", [])] for name, svc in load()["services"].items()}
    assert published == {
        "rabbitmq": ["127.0.0.1:5682", "127.0.0.1:15682"],
        "elasticsearch": ["127.0.0.1:9210"],
        "minio": ["127.0.0.1:9100", "127.0.0.1:9101"],
    }


def test_compose_has_no_default_secrets() -> None:
    text = COMPOSE.read_text()
    assert "guest" not in text
    assert "minioadmin" not in text
    assert "${NPS_MINIO_SECRET_KEY:?" in text and "${NPS_RABBITMQ_PASSWORD:?" in text
