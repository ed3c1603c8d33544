"""Container engines: one contract (``ContainerEngine``), one adapter over the Docker API.

The Docker API is served by Docker itself or, on hosts without it, by Podman's
compatible socket (``infra/stack.sh`` starts one); ``NPS_DOCKER_HOST`` / ``DOCKER_HOST`` pick it.

Importing this package loads the contract only. The adapter, ``nps.engine.docker``, imports
the package's modules; loading it here too would make the two import each other, and would
pull the Docker SDK into every module that only needs the contract. So ``DockerEngine`` is
loaded on first use of the name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nps.engine.base import ContainerEngine, Mount, RunRequest, RunResult

if TYPE_CHECKING:
    from nps.engine.docker import DockerEngine

__all__ = ["ContainerEngine", "DockerEngine", "Mount", "RunRequest", "RunResult"]


def __getattr__(name: str) -> object:
    """Load the Docker adapter when ``nps.engine.DockerEngine`` is first asked for."""
    if name == "DockerEngine":
        from nps.engine.docker import DockerEngine

        return DockerEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
