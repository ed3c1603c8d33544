"""Talking to the REST API: which mode a command runs in, and ``nps login|logout|whoami``.

A command that can work both ways goes through the API when one is configured (``nps login``
or NPS_API_URL/NPS_API_TOKEN) and the user did not choose a store with ``--store``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from nps.cli.context import state_from
from nps.cli.output import emit_json, err
from nps.client.config import config_path, normalize_url, remove_file, resolve, write_file
from nps.errors import ConfigError

if TYPE_CHECKING:  # httpx is imported only by commands that talk to the API
    from nps.client import Client

NO_API = "no API configured: configure the API with `nps login URL` (or set NPS_API_URL and NPS_API_TOKEN)"


def client_for(ctx: typer.Context) -> Client | None:
    """The API client when this command should go through the API, else None (local/MinIO)."""
    if state_from(ctx).explicit_store is not None:
        return None
    config = resolve()
    if config is None:
        return None
    from nps.client import Client

    return Client(config.url, config.token)


def require_client() -> Client:
    """The API client, for commands that only exist through the API."""
    config = resolve()
    if config is None:
        raise ConfigError(NO_API)
    from nps.client import Client

    return Client(config.url, config.token)


def login(
    url: Annotated[str, typer.Argument(help="The API, e.g. https://nps.example.org", show_default=False)],
    token: Annotated[str | None, typer.Option(help="API token (asked for, hidden, if not given).")] = None,
) -> None:
    """Save the API's URL and your token (checked first) in ~/.config/nps/client.toml (mode 0600)."""
    from nps.client import Client

    url = normalize_url(url)
    if token is None:
        token = typer.prompt("API token", hide_input=True, err=True)
    token = token.strip()
    if not token:
        raise typer.BadParameter("the token is empty", param_hint="--token")
    with Client(url, token) as api:
        me = api.me()
    path = write_file(url, token)
    err.print(f"logged in to {url} as {me['name']} ({me['role']}; projects: {', '.join(me['projects']) or 'none'});"
              f" saved in {path}", highlight=False)


def logout() -> None:
    """Forget the saved API URL and token (NPS_API_URL/NPS_API_TOKEN are not touched)."""
    if remove_file():
        err.print(f"removed {config_path()}", highlight=False)
    else:
        err.print("not logged in (no saved token)")


def whoami(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False) -> None:
    """Who the configured token belongs to, on which API."""
    config = resolve()
    with require_client() as api:
        me = api.me()
    assert config is not None
    if as_json:
        emit_json(me | {"url": config.url})
        return
    sys.stdout.write(f"{me['name']}\n")
    err.print(f"{me['role']} at {config.url}; projects: {', '.join(me['projects']) or 'none'}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add login, logout, whoami."""
    for fn in (login, logout, whoami):
        app.command()(fn)
