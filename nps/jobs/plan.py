"""Turning command-line words into a job spec. Pure functions: no store, no engine."""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from nps.errors import InvalidJob
from nps.jobs.parameters import PARAMETERS_DIR, clashing_names, reserved_mounts
from schemas.job import JobInput, JobSpec, Resources

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd]?)$")


def parse_input(arg: str) -> tuple[str, str]:
    """``HASH:/mount`` -> (hash, mount). The mount defaults to ``/input/<first 8 of hash>``."""
    dataset, sep, mount = arg.partition(":")
    if not re.fullmatch(r"[0-9a-f]{40}", dataset):
        raise InvalidJob(f"-d {arg!r}: expected HASH:/mount/path with a 40-hex dataset id")
    return dataset, (mount if sep else f"/input/{dataset[:8]}")


def parse_assignment(arg: str, what: str) -> tuple[str, str]:
    """``KEY=VALUE`` -> (key, value)."""
    key, sep, value = arg.partition("=")
    if not sep or not key:
        raise InvalidJob(f"{what} {arg!r}: expected KEY=VALUE")
    return key, value


def parse_parameter(value: str) -> str | int | float | bool | None:
    """Parameters are JSON scalars when they parse as one (``0.5``, ``true``), else strings."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, str | int | float | bool) or parsed is None else value


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    m = _DURATION.match(text.strip())
    if not m:
        raise InvalidJob(f"walltime {text!r}: use seconds or a number with s, m, h or d")
    return int(float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)])


def build_spec(image_id: str, command: list[str], inputs: list[tuple[str, int, str]],
               env: list[tuple[str, str]], params: list[tuple[str, str]]) -> JobSpec:
    """A validated JobSpec; every problem becomes one InvalidJob listing what is wrong."""
    seen_env = {k for k, _ in env}
    if len(seen_env) != len(env):
        raise InvalidJob("the same environment variable is given twice")
    if len({k for k, _ in params}) != len(params):
        raise InvalidJob("the same parameter is given twice")
    if clash := clashing_names(seen_env, (k for k, _ in params)):
        raise InvalidJob(f"{', '.join(clash)}: given both as an environment variable and as a parameter "
                         "(parameters are environment variables in the container too): give each name once")
    if reserved := reserved_mounts(m for _, _, m in inputs):
        raise InvalidJob(f"input mount {reserved[0]!r}: {PARAMETERS_DIR} is where NPS puts the job's parameters")
    try:
        return JobSpec(
            image=image_id,
            command=tuple(command),
            inputs=tuple(JobInput(dataset=d, revision=r, mount=m) for d, r, m in inputs),
            env=dict(env),
            parameters={k: parse_parameter(v) for k, v in params},
        )
    except ValidationError as exc:
        raise InvalidJob("invalid job:\n" + explain(exc)) from None


def build_resources(cpu: float, memory: str, walltime: str, gpu: int, network: bool, retries: int) -> Resources:
    """Validated Resources from command-line strings."""
    if gpu:
        raise InvalidJob("GPU jobs are not supported yet: this engine adapter does not pass devices through")
    try:
        return Resources.model_validate({"cpu": cpu, "memory": memory, "walltime_s": parse_duration(walltime),
                                         "gpu": gpu, "network": network, "retries": retries})
    except ValidationError as exc:
        raise InvalidJob("invalid resources:\n" + explain(exc)) from None


def explain(exc: ValidationError) -> str:
    """One indented line per validation error: where, and what is wrong."""
    return "\n".join(f"  {'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())
