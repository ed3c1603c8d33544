"""Reading processor files: every error names the file, the line and what is wrong.

A broken file is reported and skipped; it never stops the others from loading. So are
processors whose ``from:`` names a processor that does not exist, and every processor on a
cycle (``a`` takes ``b``'s results and ``b`` takes ``a``'s).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from nps.errors import NPSError
from schemas.processor import Level, Processor

MAX_FILE_BYTES = 256 * 1024


class ProcessorError(NPSError):
    """A processor file that cannot be used, with where and why."""


@dataclass
class Loaded:
    """Usable processors (in dependency order: upstream first) and the problems found."""

    processors: dict[str, Processor] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)  # processor name -> its file
    rejected: dict[str, str] = field(default_factory=dict)  # name -> why it is not usable (also in errors)

    @property
    def ordered(self) -> list[Processor]:
        """Upstream processors before the ones that use their results."""
        return list(self.processors.values())


def load_file(path: Path) -> Processor:
    """One processor; ProcessorError as ``file:line: message``."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ProcessorError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProcessorError(f"{path}: cannot be read: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 1
        raise ProcessorError(f"{path}:{line}: not valid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ProcessorError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ProcessorError(f"{path}:1: a processor file must be a mapping (name:, version:, level: ...)")
    try:
        return Processor.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error["loc"])
        where = ".".join(str(p) for p in loc) or "file"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProcessorError(f"{path}:{_line(node, loc)}: {where}: {error['msg']}{more}") from exc


def line_of(path: Path, loc: tuple[str, ...]) -> int:
    """The line of ``loc`` (e.g. ``("inputs", "t1", "match")``) in a file that loaded."""
    try:
        return _line(yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader), loc)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return 1  # changed since it was loaded: the error still names the file


def _line(node: Any, loc: tuple[Any, ...]) -> int:
    """The line of the YAML node at ``loc`` (or of its nearest existing parent)."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [v for k, v in node.value if k.value == str(part) or (part == "from_" and k.value == "from")]
            if not match:
                return line
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def load_dir(folder: Path) -> Loaded:
    """Every ``*.yaml``/``*.yml`` in ``folder`` (not recursive), usable ones in dependency order."""
    if not folder.is_dir():
        raise ProcessorError(f"{folder}: no such folder of processor files")
    found: dict[str, Processor] = {}
    loaded = Loaded()
    files = sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    origin: dict[str, Path] = {}
    for path in files:
        try:
            processor = load_file(path)
        except ProcessorError as exc:
            loaded.errors.append(str(exc))
            continue
        if processor.name in found:
            loaded.errors.append(f"{path}: processor {processor.name!r} is already defined in {origin[processor.name]}"
                                 " (this file is skipped)")
            continue
        found[processor.name] = processor
        origin[processor.name] = path
    for name in _order(found, loaded, origin):
        loaded.processors[name] = found[name]
    loaded.files = {name: origin[name] for name in found}
    return loaded


def upstream(processor: Processor) -> set[str]:
    """Processors whose results this one takes."""
    return {i.from_ for i in processor.inputs.values() if i.from_}


def _order(found: dict[str, Processor], loaded: Loaded, origin: dict[str, Path]) -> Iterable[str]:
    """Topological order; processors with a missing upstream or on a cycle are reported, not returned."""
    state: dict[str, str] = {}  # visiting | done | bad
    order: list[str] = []

    def reject(name: str, why: str) -> None:
        loaded.errors.append(f"{origin[name]}: {why}")
        loaded.rejected.setdefault(name, loaded.errors[-1])

    def visit(name: str, path: list[str]) -> bool:
        if state.get(name) == "done":
            return True
        if state.get(name) == "bad":
            return False
        if state.get(name) == "visiting":
            cycle = [*path[path.index(name):], name]
            for member in cycle[:-1]:
                state[member] = "bad"
                loaded.rejected.setdefault(member, f"{origin[member]}: processors form a cycle: {' -> '.join(cycle)}")
            reject(name, f"processors form a cycle: {' -> '.join(cycle)} (all skipped)")
            return False
        state[name] = "visiting"
        ok = True
        unusable: list[str] = []
        for dep in sorted(upstream(found[name])):
            if dep not in found:
                reject(name, f"input from processor {dep!r}, which is not defined or not valid")
                ok = False
            elif found[dep].level != Level.SERIES:
                reject(name, f"input from processor {dep!r}: only series-level processors' "
                       f"results can be inputs ({dep!r} is {found[dep].level.value}-level)")
                ok = False
            elif not visit(dep, [*path, name]):
                ok = False
                unusable.append(dep)
        if state.get(name) == "bad":
            return False
        if unusable and name not in loaded.rejected:
            reject(name, f"skipped: it takes results of {', '.join(map(repr, unusable))}, which is not usable")
        state[name] = "done" if ok else "bad"
        if ok:
            order.append(name)
        return ok

    for name in sorted(found):
        visit(name, [])
    return order
