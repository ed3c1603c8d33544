"""Per-invocation state: the settings and the store selected with ``--store``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import typer

from nps.config import Settings
from nps.store import DatasetStore, open_store


@dataclass
class CliState:
    """What the top-level callback resolved."""

    settings: Settings
    store_kind: Literal["local", "minio"]
    explicit_store: Literal["local", "minio"] | None = None


def state_from(ctx: typer.Context) -> CliState:
    """What the top-level callback resolved."""
    state: CliState = ctx.find_root().obj
    return state


def store_from(ctx: typer.Context, default: Literal["local", "minio"] | None = None) -> DatasetStore:
    """The store chosen with --store, else ``default``, else $NPS_STORE."""
    state = state_from(ctx)
    return open_store(state.settings, state.explicit_store or default or state.store_kind)
