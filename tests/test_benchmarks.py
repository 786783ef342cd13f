"""The benchmark scripts still fit the code they measure: every name they import from miStudio
exists, and every keyword they give a miStudio config dataclass is one of its fields. (Running
them takes minutes each; a renamed setting used to surface only when someone did.)"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def _imports(tree: ast.AST) -> dict[str, object]:
    """Local name -> object, for every ``from mistudio... import NAME`` in the script."""
    found: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mistudio"):
            module = importlib.import_module(node.module)  # type: ignore[arg-type]
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"), f"{node.module} has no {alias.name}"
                found[alias.asname or alias.name] = getattr(module, alias.name, None)
    return found


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_uses_names_and_settings_that_exist(script: Path) -> None:
    tree = ast.parse(script.read_text())
    names = _imports(tree)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        cls = names.get(node.func.id)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            continue
        fields = {f.name for f in dataclasses.fields(cls)}
        for kw in node.keywords:
            assert kw.arg is None or kw.arg in fields, (
                f"{script.name}:{node.lineno} gives {cls.__name__} an unknown setting {kw.arg!r}")
