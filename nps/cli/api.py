"""``nps api serve`` and the admin commands for users, projects and tokens."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated, Any

import typer

from nps.cli.context import state_from
from nps.cli.output import emit_json, err

api_app = typer.Typer(help="The REST API (/api/v1).", no_args_is_help=True)
users_app = typer.Typer(help="API users and their projects.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens (shown once, stored hashed).", no_args_is_help=True)


def _auth(ctx: typer.Context) -> Any:
    from nps.api.auth import Auth
    from nps.blobs import MinioBlobs
    from nps.store.minio import MinioStore

    return Auth(MinioBlobs(MinioStore(state_from(ctx).settings)))


@api_app.command("serve")
def serve(ctx: typer.Context,
          host: Annotated[str, typer.Option(help="Address (loopback by default).")] = "127.0.0.1",
          port: Annotated[int | None, typer.Option(min=1, max=65535, help="Default: $NPS_API_PORT (8080), where "
                                                   "the stack's nginx (NPS_WEB_URL) forwards.")] = None) -> None:
    """Serve the REST API until SIGTERM (OpenAPI at /api/v1/openapi.json, docs at /api/v1/docs)."""
    import uvicorn

    from nps.api.app import create_app
    from nps.process_logging import setup_logging

    setup_logging()
    settings = state_from(ctx).settings
    uvicorn.run(create_app(settings), host=host, port=port or settings.api_port, log_level="info",
                proxy_headers=False, server_header=False)


@users_app.command("add")
def user_add(ctx: typer.Context, name: Annotated[str, typer.Argument(show_default=False)],
             role: Annotated[str, typer.Option(help="admin, member or viewer.")] = "member",
             projects: Annotated[list[str] | None, typer.Option("--project", "-p", help="Repeatable.")] = None) -> None:
    """Create (or update) a user."""
    from nps.api.auth import Role

    if role not in {r.value for r in Role}:
        raise typer.BadParameter("admin, member or viewer", param_hint="--role")
    user = _auth(ctx).add_user(name, Role(role), tuple(projects or ()))
    err.print(f"user {user.name}: {user.role.value}, projects {', '.join(user.projects) or 'none'}")


@users_app.command("ls")
def user_ls(ctx: typer.Context) -> None:
    """Every user."""
    emit_json([u.model_dump(mode="json") for u in _auth(ctx).users()])


@users_app.command("grant")
def user_grant(ctx: typer.Context, name: Annotated[str, typer.Argument(show_default=False)],
               project: Annotated[str, typer.Argument(show_default=False)]) -> None:
    """Give a user access to a project."""
    user = _auth(ctx).grant(name, project)
    err.print(f"user {user.name}: projects {', '.join(user.projects)}")


@tokens_app.command("create")
def token_create(ctx: typer.Context, user: Annotated[str, typer.Argument(show_default=False)],
                 days: Annotated[int | None, typer.Option(min=1, max=3650, help="Expires after.")] = None) -> None:
    """Create a token; it is printed once (stdout) and only its hash is kept."""
    secret, record = _auth(ctx).create_token(user, timedelta(days=days) if days else None)
    err.print(f"token {record.id} for {user}" + (f", expires {record.expires_at:%Y-%m-%d}" if record.expires_at
                                                 else ", no expiry") + "; store it now, it cannot be shown again")
    sys.stdout.write(secret + "\n")


@tokens_app.command("ls")
def token_ls(ctx: typer.Context) -> None:
    """Token ids, owners, expiry and revocation (never the secrets)."""
    emit_json([t.model_dump(mode="json", exclude={"sha256"}) for t in _auth(ctx).tokens()])


@tokens_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument(show_default=False)]) -> None:
    """Revoke a token by its id (a running API stops accepting it within NPS_API_AUTH_CACHE_SECONDS)."""
    _auth(ctx).revoke(token_id)
    err.print(f"revoked {token_id}")


def register(app: typer.Typer, admin_app: typer.Typer) -> None:
    """Add ``nps api`` and ``nps admin user|token``."""
    app.add_typer(api_app, name="api")
    admin_app.add_typer(users_app, name="user")
    admin_app.add_typer(tokens_app, name="token")
