"""The errors the contract itself raises: the root of NPS's error tree and the two format errors.

They live here, not in ``nps.errors``, so that ``schemas`` depends on nothing of NPS (a
producer in another process or language reads the contract alone). ``nps.errors`` re-exports
them beside every other NPS error; import them from there in NPS code.
"""


class NPSError(Exception):
    """Root of all NPS errors; the CLI prints these as one clear line, without a traceback."""


class InvalidDatasetId(NPSError, ValueError):
    """Raised when a dataset id is not 40 lowercase hex characters."""


class InvalidPath(NPSError, ValueError):
    """Raised when a path inside a dataset is unsafe (absolute, '..', NUL, control characters)."""
