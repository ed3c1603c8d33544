"""Settings, read once from the environment and from the stack's generated ``stack.env``.

Precedence: ``NPS_*`` environment variables, then ``$NPS_CACHE/stack.env`` (written by
``infra/stack.sh up``, mode 0600), then defaults. Users never copy credentials by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from nps.errors import ConfigError


def default_cache() -> Path:
    """Where infra installs and keeps state: /var/cache/nps for root, else ~/.cache/nps."""
    if "NPS_CACHE" in os.environ:
        return Path(os.environ["NPS_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/nps")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nps"


def default_home() -> Path:
    """The local dataset store: ~/.local/share/nps unless NPS_HOME says otherwise."""
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "nps"


class Settings(BaseSettings):
    """Everything configurable. Field ``x`` is read from ``NPS_X``."""

    model_config = SettingsConfigDict(env_prefix="NPS_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=default_home, description="local store root")
    cache: Path = Field(default_factory=default_cache, description="infra install and state")
    store: Literal["local", "minio"] = Field(default="local", description="default store for dataset commands")
    minio_endpoint: str = "127.0.0.1:9100"
    minio_access_key: SecretStr | None = None
    minio_secret_key: SecretStr | None = None
    minio_bucket: str = Field(default="nps", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    minio_secure: bool = False
    amqp_url: SecretStr | None = None
    es_url: str = "http://127.0.0.1:9210"
    docker_host: str | None = None
    transfer_workers: int = Field(default=16, ge=1, le=256, description="parallel file transfers")
    part_size_mb: int = Field(default=64, ge=5, le=5120, description="multipart part size")
    ranged_parts: int = Field(default=1, ge=1, le=64, description="parallel ranges per large download")
    lease_seconds: float = Field(default=30.0, gt=0, description="a writer's claim on a dataset expires after")
    stage_limit_gb: float = Field(default=50.0, gt=0, description="size limit of the input staging cache")
    log_limit_mb: int = Field(default=10, ge=1, le=1024, description="cap on each of a job's stdout and stderr")
    job_delivery_limit: int = Field(default=5, ge=1, le=100, description="redeliveries before the DLQ")
    job_republish_after_s: float = Field(
        default=120.0, gt=0, le=86400, description="a job whose submitter died before publishing it is published after")
    series_stable_seconds: float = Field(default=60.0, ge=0, description="stable age of a series")
    series_max_open_seconds: float = Field(default=600.0, gt=0, description="commit a still-growing series after")
    archive_max_gb: float = Field(default=256.0, gt=0, description="`nps import`: an archive expands to at most")
    archive_max_ratio: float = Field(default=100.0, gt=1, description="`nps import`: ... and to at most this "
                                     "many times its own size (beyond the first 8 MiB)")
    archive_max_members: int = Field(default=100_000, ge=1, description="`nps import`: entries in one archive")
    series_prefetch: int = Field(default=5000, ge=10, le=65535, description="instances the assembler holds at most")
    dicom_bind: str = Field(default="127.0.0.1", description="address the DICOM receiver listens on")
    dicom_port: int = Field(default=11112, ge=1, le=65535, description="DICOM receiver port")
    dicom_aet: str = Field(default="NPS", pattern=r"^[\x21-\x5b\x5d-\x7e]{1,16}$", description="receiver AE title")
    project: str | None = Field(default=None, max_length=128, description="project of imported data")
    api_accel_secret: SecretStr | None = Field(
        default=None, description="shared with the stack's nginx: file downloads are handed to it (X-Accel-Redirect)")
    api_port: int = Field(default=8080, ge=1, le=65535, description="port of `nps api serve` (nginx's upstream)")
    web_url: str | None = Field(default=None, description="the stack's nginx in front of the API (infra/stack.sh)")
    api_auth_cache_seconds: float = Field(
        default=5.0, ge=0, le=300, description="how long the API trusts a checked token (revocations take this long)")
    ae_projects: dict[str, str] = Field(
        default_factory=dict, description='project by calling AE title, as JSON: {"MRI3T": "alpha"}')
    processors: Path | None = Field(default=None, description="folder of processor files (*.yaml)")
    queue_prefix: str = Field(default="nps", pattern=r"^[a-z][a-z0-9-]{0,40}$", description="RabbitMQ names prefix")

    @property
    def stage_dir(self) -> Path:
        """Where inputs are staged for jobs (content-addressed, shared read-only)."""
        return self.cache / "stage"

    @property
    def work_dir(self) -> Path:
        """Scratch space for running jobs' outputs."""
        return self.cache / "work"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, then ``$NPS_CACHE/stack.env``; ``overrides`` win over both."""
    env_file = default_cache() / "stack.env"
    try:
        readable = env_file.is_file() and os.access(env_file, os.R_OK)
        return Settings(_env_file=env_file if readable else None, **overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(f"invalid NPS settings: {exc}") from exc
