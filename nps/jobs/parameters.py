"""How a job's parameters reach its container. Pure functions: no store, no engine.

Every job sees its parameters twice, whoever runs it (``nps run``, a worker running an
``nps submit`` job, an analysis or a processor's job):

- as environment variables named as given (``-p threshold=0.5`` -> ``threshold=0.5``), for each
  parameter whose name can be one (``[A-Za-z_][A-Za-z0-9_]*``; ``nps.processor`` cannot);
  strings as they are, other values as JSON (``true``, ``0.5``, ``null``);
- all of them, typed, in the read-only file ``/nps/parameters.json``.

A name given both as a parameter and as an environment variable (``-e``) is refused when the
spec is built; in a spec made elsewhere with both, the environment variable's value is the one
in the environment (the parameter is still in the file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from schemas.job import JobSpec, Scalar

PARAMETERS_DIR = "/nps"
PARAMETERS_FILE = "parameters.json"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_value(value: Scalar) -> str:
    """A parameter's value as an environment variable: strings as given, others as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def parameter_env(parameters: Mapping[str, Scalar]) -> dict[str, str]:
    """The environment variables a job's parameters become (those whose names can be one)."""
    return {name: env_value(value) for name, value in parameters.items() if _ENV_NAME.fullmatch(name)}


def container_env(spec: JobSpec) -> dict[str, str]:
    """The whole environment of a job's container: its parameters, then its ``env`` (which wins)."""
    return {**parameter_env(spec.parameters), **spec.env}


def parameters_json(parameters: Mapping[str, Scalar]) -> bytes:
    """The content of ``/nps/parameters.json``: every parameter with its JSON type, keys sorted."""
    return (json.dumps(dict(parameters), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def clashing_names(env: Iterable[str], parameters: Iterable[str]) -> list[str]:
    """Names that would be set both by an environment variable and by a parameter."""
    return sorted(set(env) & set(parameter_env(dict.fromkeys(parameters))))


def reserved_mounts(mounts: Iterable[str]) -> list[str]:
    """Input mount paths at or below ``/nps``, where NPS puts the parameters file."""
    return sorted(m for m in mounts if m == PARAMETERS_DIR or m.startswith(PARAMETERS_DIR + "/"))
