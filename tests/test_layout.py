"""The layout's rules: the shipped packages (what setup.py installs on workers and in the Flex Template image)
never import `launch/`, which is not shipped, and no module of theirs grows past 400 lines (one concern a room)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ('schemas', 'transforms', 'connectors', 'pipelines')
MAX_LINES = 400


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def test_no_shipped_module_imports_launch():
    offenders = {str(path.relative_to(REPO)): sorted(m for m in imported_modules(path) if m.split('.')[0] == 'launch')
                 for package in SHIPPED for path in (REPO / package).rglob('*.py')}
    assert {path: mods for path, mods in offenders.items() if mods} == {}


def test_setup_ships_exactly_the_shipped_packages():
    text = (REPO / 'setup.py').read_text()
    assert all(f"'{package}*'" in text for package in SHIPPED) and "'launch" not in text


def test_no_shipped_module_is_over_400_lines():
    sizes = {str(path.relative_to(REPO)): len(path.read_text().splitlines())
             for package in SHIPPED for path in (REPO / package).rglob('*.py')}
    assert {path: lines for path, lines in sizes.items() if lines > MAX_LINES} == {}
