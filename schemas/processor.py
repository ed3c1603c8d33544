"""A processor: a declarative rule for what NPS computes, for which data, automatically.

Written in YAML by a lab (see ``examples/processors/``), validated here. A processor runs at a
*level* (series, study, subject, project); each *target* at that level (one series, one study...)
gets at most one job per combination of its inputs. Inputs are series found by a query within
the target, or results of another processor for the same target (which makes pipelines).
"""

from __future__ import annotations

import itertools
import re
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, field_validator, model_validator

from schemas.common import Frozen
from schemas.job import EnvName, Resources, Scalar, check_mount

ProcessorName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,62}$")]
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # ${name}: a parameter


class Level(StrEnum):
    """What one target is."""

    SERIES = "series"
    STUDY = "study"
    SUBJECT = "subject"
    PROJECT = "project"


class Need(StrEnum):
    """How many matches an input needs before the target can run."""

    ONE = "one"
    AT_LEAST_ONE = "at_least_one"
    ALL = "all"


class Choose(StrEnum):
    """What to do with several matches."""

    LATEST = "latest"  # the most recently acquired one
    EACH = "each"  # one job per match
    ALL = "all"  # one job with every match mounted under <mount>/<n>


class ProcessorInput(Frozen):
    """Where one input comes from and where it is mounted."""

    match: Annotated[str, Field(max_length=2000)] = Field(
        default="*", description="query on series (Lucene syntax), within the target")
    from_: ProcessorName | None = Field(
        default=None, alias="from", description="use this processor's result for each matching series")
    need: Need = Need.ONE
    choose: Choose = Choose.LATEST
    mount: Annotated[str, Field(max_length=1024)]

    @field_validator("mount")
    @classmethod
    def _mount(cls, v: str) -> str:
        check_mount(v)
        if v == "/output" or v.startswith("/output/"):
            raise ValueError(f"mount {v!r} overlaps the output directory /output")
        return v


class Processor(Frozen):
    """One processor file."""

    name: ProcessorName
    version: int = Field(ge=1, le=1_000_000)
    description: Annotated[str, Field(max_length=2000)] = ""
    level: Level
    where: Annotated[str, Field(max_length=2000)] = Field(
        default="*", description="which series make targets (series level: the series themselves)")
    inputs: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")], ProcessorInput] = \
        Field(min_length=1)
    image: Annotated[str, Field(min_length=1, max_length=512)]
    command: tuple[Annotated[str, Field(max_length=65536)], ...] = Field(min_length=1)
    parameters: dict[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")], Scalar] = \
        Field(default_factory=dict)
    env: dict[EnvName, Annotated[str, Field(max_length=65536)]] = Field(default_factory=dict)
    resources: Resources = Resources()

    @model_validator(mode="after")
    def _consistent(self) -> Processor:
        mounts = sorted(i.mount for i in self.inputs.values())
        for a, b in itertools.pairwise(mounts):
            if a == b or b.startswith(a + "/"):
                raise ValueError(f"input mounts overlap: {a!r} and {b!r}")
        if self.level == Level.SERIES and any(i.choose != Choose.LATEST or i.need != Need.ONE
                                              for i in self.inputs.values() if i.from_ is None):
            raise ValueError("a series-level processor's series inputs are the target series itself: "
                             "leave need/choose at one/latest")
        names = set(self.parameters)
        for word in self.command:
            for placeholder in _PLACEHOLDER.findall(word):
                if placeholder not in names:
                    raise ValueError(f"command uses ${{{placeholder}}} but no parameter {placeholder!r} is set")
        if any(i.from_ == self.name for i in self.inputs.values()):
            raise ValueError(f"processor {self.name!r} takes its own results as input (a cycle)")
        return self

    @property
    def key(self) -> str:
        """``name@version``: what the jobs of this processor carry."""
        return f"{self.name}@{self.version}"

    def argv(self) -> list[str]:
        """The command with ``${parameter}`` placeholders filled in."""
        values = {k: "" if v is None else str(v) for k, v in self.parameters.items()}
        return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], word) for word in self.command]
