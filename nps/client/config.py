"""Where the client finds the API: ``NPS_API_URL``/``NPS_API_TOKEN``, else a config file.

The file is ``$XDG_CONFIG_HOME/nps/client.toml`` (``~/.config/nps/client.toml``), written by
``nps login`` with mode 0600::

    url = "https://nps.example.org"
    token = "nps_..."

Precedence: the environment wins. A token from the file is only sent to the URL it was saved
for, so pointing ``NPS_API_URL`` at another server never leaks it there.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from nps.errors import ConfigError

URL_ENV, TOKEN_ENV = "NPS_API_URL", "NPS_API_TOKEN"


@dataclass(frozen=True)
class ClientConfig:
    """An API URL and the token to present there (never shown in ``repr``)."""

    url: str
    token: str
    source: str

    def __repr__(self) -> str:
        return f"ClientConfig(url={self.url!r}, token=<hidden>, source={self.source!r})"


def config_path() -> Path:
    """``$XDG_CONFIG_HOME/nps/client.toml`` (``~/.config`` when unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "nps" / "client.toml"


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")) or len(url) < 10:
        raise ConfigError(f"API URL {url[:200]!r} must start with http:// or https://")
    return url


def read_file(path: Path | None = None) -> dict[str, str]:
    """The config file's url and token (empty if there is none)."""
    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}): run `nps login URL` again") from exc
    return {k: v for k, v in data.items() if k in ("url", "token") and isinstance(v, str)}


def write_file(url: str, token: str, path: Path | None = None) -> Path:
    """Save url and token, readable by the owner only (0600), replacing any earlier file."""
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, tomli_w.dumps({"url": url, "token": token}).encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def remove_file(path: Path | None = None) -> bool:
    """Forget the saved URL and token; True if there was a file."""
    path = path or config_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def resolve(path: Path | None = None) -> ClientConfig | None:
    """The configured API, or None when neither the environment nor the file names one."""
    env_url, env_token = os.environ.get(URL_ENV, "").strip(), os.environ.get(TOKEN_ENV, "").strip()
    saved = read_file(path)
    saved_url = normalize_url(saved["url"]) if saved.get("url") else None
    if env_url:
        url = normalize_url(env_url)
        token = env_token or (saved.get("token", "") if saved_url == url else "")
        if not token:
            raise ConfigError(f"{URL_ENV} is set but {TOKEN_ENV} is not (and `nps login {url}` was not run)")
        return ClientConfig(url, token, "environment")
    if saved_url is None:
        if env_token:
            raise ConfigError(f"{TOKEN_ENV} is set but no API URL: set {URL_ENV} or run `nps login URL`")
        return None
    token = env_token or saved.get("token", "")
    if not token:
        raise ConfigError(f"{path or config_path()} has no token: run `nps login {saved_url}`")
    return ClientConfig(saved_url, token, "environment" if env_token else str(path or config_path()))
