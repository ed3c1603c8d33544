"""Every error NPS raises on purpose: one root, a shallow tree, one line each.

The root and the two format errors the contract raises (``NPSError``, ``InvalidDatasetId``,
``InvalidPath``) are defined in ``schemas.errors``, since ``schemas`` depends on nothing of
NPS; they are re-exported here, so NPS code imports every error from this module.
"""

# Re-exported (the ``as`` form marks them public for type checkers).
from schemas.errors import InvalidDatasetId as InvalidDatasetId
from schemas.errors import InvalidPath as InvalidPath
from schemas.errors import NPSError as NPSError


class ConfigError(NPSError):
    """Raised when settings are missing or invalid (e.g. no credentials for a service)."""


class InvalidSource(NPSError):
    """Raised when a directory cannot become a dataset (escaping symlink, special file, bad name)."""


class DatasetNotFound(NPSError):
    """Raised when a dataset (or a file in it) does not exist in the store."""


class CorruptDataset(NPSError):
    """Raised when stored bytes do not match the manifest (size or checksum), or metadata is unreadable."""


class StoreBusy(NPSError):
    """Raised when another writer holds a dataset being written for longer than we may wait."""


class StoreUnavailable(NPSError):
    """Raised when the object store cannot be reached or answers with an unexpected error."""


class TransferDamaged(StoreUnavailable):
    """Raised when the object store refused bytes that did not match the checksum sent with them."""


class PreconditionFailed(NPSError):
    """Raised when a conditional write finds an object not as required (already there, or changed since read)."""


class PermissionDenied(NPSError):
    """Raised when the caller's role does not allow an operation (e.g. deleting a dataset)."""


class ImageNotFound(NPSError):
    """Raised when a job names an image that neither the container engine nor the image catalog knows."""


class EngineUnavailable(NPSError):
    """Raised when the container engine cannot be reached or fails to start a container."""


class InvalidJob(NPSError, ValueError):
    """Raised when a job cannot be submitted as given (bad spec, missing input, bad argument)."""


class BrokerUnavailable(NPSError):
    """Raised when RabbitMQ cannot be reached or does not confirm a publish."""


class JobNotFound(NPSError):
    """Raised when no job with that id was ever submitted or run."""


class IndexUnavailable(NPSError):
    """Raised when Elasticsearch cannot be reached or fails."""


class InvalidQuery(NPSError, ValueError):
    """Raised when a search query is malformed or too expensive (e.g. a leading wildcard)."""
