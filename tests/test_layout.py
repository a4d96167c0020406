"""The rooms keep to their imports and sizes (ARCHITECTURE.md): adapters never touch storage,
the dialogue and storage never import the bot, and no module or class grows past what one
reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def modules(folder: str) -> list[Path]:
    return [p for p in (ROOT / folder).rglob("*.py") if "migrations" not in p.parts]


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


@pytest.mark.parametrize("folder, forbidden", [
    ("bot/adapters", "storage"), ("dialogs", "bot"), ("dialogs", "storage"), ("storage", "bot"),
])
def test_rooms_do_not_import_what_they_must_not(folder, forbidden):
    offenders = {str(p.relative_to(ROOT)): sorted(n for n in imported(p) if n.split(".")[0] == forbidden)
                 for p in modules(folder)}
    assert {p: n for p, n in offenders.items() if n} == {}


def test_no_module_over_500_lines_and_no_class_over_300():
    too_long = []
    for folder in ("bot", "dialogs", "storage"):
        for path in modules(folder):
            source = path.read_text("utf-8")
            if len(source.splitlines()) > 500:
                too_long.append(str(path.relative_to(ROOT)))
            too_long += [f"{path.relative_to(ROOT)}:{node.name}" for node in ast.walk(ast.parse(source))
                         if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 300]
    assert too_long == []
