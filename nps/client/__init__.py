"""Python client of the NPS REST API (``Client``), configured like the ``nps`` command."""

from nps.client.config import ClientConfig, config_path, resolve
from nps.client.errors import ApiError, ApiUnavailable, NotAuthenticated, NotFound
from nps.client.http import TERMINAL, Client

__all__ = ["TERMINAL", "ApiError", "ApiUnavailable", "Client", "ClientConfig", "NotAuthenticated", "NotFound",
           "config_path", "resolve"]
