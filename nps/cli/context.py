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


def store_from(ctx: typer.Context) -> DatasetStore:
    """The store chosen for this command."""
    state: CliState = ctx.find_root().obj
    return open_store(state.settings, state.store_kind)
