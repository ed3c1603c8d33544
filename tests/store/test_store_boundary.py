"""The object store's border, checked on the source: minio-py and urllib3 stay in ``nps/store/``,
and nothing outside it reaches into a store's private members (its raw client, its request
helpers). Everything else goes through the public interfaces (``DatasetStore``, ``ObjectStore``)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO

VENDOR = ("minio", "urllib3")
STORE = REPO / "nps" / "store"
OUTSIDE = [REPO / "nps", REPO / "consumers", REPO / "producers", REPO / "tests"]
STORE_TESTS = REPO / "tests" / "store"  # the store's own tests may look inside it


def _sources() -> Iterator[Path]:
    for root in OUTSIDE:
        for path in sorted(root.rglob("*.py")):
            if not path.is_relative_to(STORE) and not path.is_relative_to(STORE_TESTS):
                yield path


def _private_members() -> set[str]:
    """Names of the private methods and attributes of every class in nps/store."""
    names: set[str] = set()
    for path in STORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("_"):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _vendor_imports(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] in VENDOR)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in VENDOR:
            yield str(node.module)


def test_only_the_store_imports_minio_or_urllib3() -> None:
    found = [f"{path.relative_to(REPO)}: {name}" for path in _sources()
             for name in _vendor_imports(ast.parse(path.read_text()))]
    assert found == []


def test_nothing_outside_the_store_reaches_into_a_stores_private_members() -> None:
    private = _private_members()
    found = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in private
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: .{node.attr}")
    assert found == []
