"""llmconnect is a library on its own: it imports nothing of the bots, and nothing above it
reaches into its private names (a leading ``_``) — what they need is public (``resolve``,
``ReplyStream``, the spec rows' fields)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ABOVE = ("bots", "core", "benchmarks")


def _imports(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, module, name) for every import in ``path``; ``name`` is ``""`` for ``import m``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ""


def _private(module: str, name: str) -> bool:
    return any(part.startswith("_") for part in [*module.split("."), name] if part)


@pytest.mark.parametrize("top", ABOVE)
def test_nothing_above_imports_a_private_llmconnect_name(top: str) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {module} {name}".strip()
        for path in sorted((ROOT / top).rglob("*.py"))
        for line, module, name in _imports(path)
        if module.split(".")[0] == "llmconnect" and _private(module, name)
    ]
    assert found == []


def test_llmconnect_imports_nothing_above_it() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted((ROOT / "llmconnect").rglob("*.py"))
        for line, module, _ in _imports(path)
        if module.split(".")[0] in ABOVE
    ]
    assert found == []
