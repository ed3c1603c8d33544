"""Container engines: one contract (``ContainerEngine``), one adapter over the Docker API.

The Docker API is served by Docker itself or, on hosts without it, by Podman's
compatible socket (``infra/stack.sh`` starts one); ``NPS_DOCKER_HOST`` / ``DOCKER_HOST`` pick it.
"""

from nps.engine.base import ContainerEngine, Mount, RunRequest, RunResult
from nps.engine.docker import DockerEngine

__all__ = ["ContainerEngine", "DockerEngine", "Mount", "RunRequest", "RunResult"]
