"""How API answers become NPS errors: the same classes the local commands raise."""

from __future__ import annotations

from nps.errors import (
    CorruptDataset,
    DatasetNotFound,
    InvalidQuery,
    JobNotFound,
    NPSError,
    PermissionDenied,
)


class NotAuthenticated(NPSError):
    """The API refused the token (missing, wrong, revoked or expired)."""


class ApiUnavailable(NPSError):
    """The API cannot be reached, or a service behind it is down (HTTP 503)."""


class NotFound(DatasetNotFound):
    """No such group or analysis (or not in your projects)."""


class ApiError(NPSError):
    """An answer the client did not expect (a 5xx other than 503, or a malformed body)."""


def error_for(status: int, detail: str, url: str, path: str) -> NPSError:
    """The NPS error for an API error answer."""
    if status == 401:
        return NotAuthenticated(f"the API at {url} refused the token (invalid, revoked or expired): "
                                f"run `nps login {url}`")
    if status == 403:
        return PermissionDenied(detail)
    if status == 404:
        if path.startswith("/api/v1/jobs"):
            return JobNotFound(detail)
        if path.startswith(("/api/v1/groups", "/api/v1/analyses")):
            return NotFound(detail)
        return DatasetNotFound(detail)
    if status in (400, 413, 416, 422):
        return InvalidQuery(detail)
    if status == 409:
        return CorruptDataset(detail)
    if status in (502, 503, 504):
        return ApiUnavailable(f"the API at {url} is unavailable: {detail}")
    return ApiError(f"the API at {url} answered {status}: {detail}")
