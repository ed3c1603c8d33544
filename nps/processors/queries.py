"""Checking processors' queries before they run. Pure: what asks Elasticsearch is passed in.

A query Elasticsearch refuses (``modality:(MR``) would fail every event it is asked on. It is
found when the processors are loaded: its processor is reported with its file, the line of the
query and Elasticsearch's reason, and skipped together with the processors taking its results;
the others run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from nps.processors.load import Loaded, line_of, upstream
from schemas.processor import Processor

#: Why the index refuses a query (None: it runs).
QueryProblem = Callable[[str], str | None]


def queries(processor: Processor) -> list[tuple[tuple[str, ...], str]]:
    """Each query of ``processor`` with where it is in the file (``("inputs", "t1", "match")``)."""
    found: list[tuple[tuple[str, ...], str]] = [(("where",), processor.where)]
    found += [(("inputs", name, "match"), inp.match) for name, inp in processor.inputs.items()]
    return found


def check_queries(loaded: Loaded, problem: QueryProblem) -> Loaded:
    """``loaded`` without the processors with a query ``problem`` refuses, nor those taking
    their results; each is reported in ``errors`` and ``rejected``. Each distinct query is
    asked once."""
    answers: dict[str, str | None] = {}
    checked = replace(loaded, processors={}, errors=list(loaded.errors), rejected=dict(loaded.rejected))
    for processor in loaded.ordered:  # upstream first: a rejected upstream is known before its users
        why = _refused(processor, problem, answers) or _unusable_upstream(processor, checked)
        if why is None:
            checked.processors[processor.name] = processor
            continue
        location, reason = why
        path = loaded.files.get(processor.name)
        line = f":{line_of(path, location)}" if path is not None and location else ""
        checked.rejected[processor.name] = f"{path or processor.name}{line}: {reason}"
        checked.errors.append(f"{checked.rejected[processor.name]} (processor {processor.name!r} skipped)")
    return checked


def _refused(processor: Processor, problem: QueryProblem,
             answers: dict[str, str | None]) -> tuple[tuple[str, ...], str] | None:
    for location, query in queries(processor):
        if query not in answers:
            answers[query] = problem(query)
        if answers[query] is not None:
            return location, f"{'.'.join(location)}: Elasticsearch refuses the query {query!r}: {answers[query]}"
    return None


def _unusable_upstream(processor: Processor, checked: Loaded) -> tuple[tuple[str, ...], str] | None:
    bad = sorted(u for u in upstream(processor) if u in checked.rejected)
    if not bad:
        return None
    return (), f"it takes results of {', '.join(map(repr, bad))}, which is not usable"
