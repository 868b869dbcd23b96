"""Dependencies point inwards (ARCHITECTURE.md): a scan of every import keeps it so."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"events", "aggregates", "projections", "streams", "eta_engine", "gateway", "simulator"}
ALLOWED = {
    "events": set(),
    "aggregates": {"events"},
    "eta_engine": {"events"},
    "projections": {"events"},
    "simulator": {"events", "eta_engine"},
    "streams": {"events", "aggregates", "eta_engine", "projections"},
    "gateway": {"events", "aggregates", "eta_engine", "projections", "streams", "simulator"},
}
PURE = {"events", "aggregates", "eta_engine"}
IO_MODULES = {"socket", "sqlite3", "asyncio", "aiokafka", "faust", "websockets", "psycopg"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_is_inside_it(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        wrong = (_imports(path) & PROJECT) - ALLOWED[package] - {package}
        assert not wrong, f"{path.relative_to(ROOT)} imports {sorted(wrong)}"


@pytest.mark.parametrize("package", sorted(PURE))
def test_pure_cores_do_no_io(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name == "osm_build.py":  # a build-time tool, run by `fieldstream roads build`
            continue
        wrong = _imports(path) & IO_MODULES
        assert not wrong, f"{path.relative_to(ROOT)} does I/O through {sorted(wrong)}"
