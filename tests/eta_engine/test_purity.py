"""The ETA engine is a pure core: it never imports the simulator (it must not see ground truth),
the I/O layers, a clock or an unseeded source of randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "eta_engine"
FORBIDDEN_PACKAGES = {"simulator", "streams", "gateway", "projections", "aggregates"}
FORBIDDEN_MODULES = {"time", "random", "socket", "sqlite3", "asyncio", "os", "secrets", "uuid"}
ALLOWED_ROOTS = {
    "__future__",
    "bisect",
    "collections",
    "dataclasses",
    "functools",
    "importlib",
    "json",
    "math",
    "typing",
    "numpy",
    "scipy",
    "events",
    "eta_engine",
}
# roads.py reads its own data file and osm_build.py is a build-time tool: not the engine.
NOT_ENGINE = {"roads.py", "osm_build.py"}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.glob("*.py") if p.name not in NOT_ENGINE)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_the_engine_modules_are_all_scanned() -> None:
    names = {p.name for p in _modules()}
    expected = {
        "matching.py",
        "fields.py",
        "speeds.py",
        "durations.py",
        "windows.py",
        "calibration.py",
        "alerts.py",
        "engine.py",
    }
    assert expected <= names


@pytest.mark.parametrize("path", _modules(), ids=lambda p: p.name)
def test_no_simulator_io_clock_or_unseeded_randomness(path: Path) -> None:
    imports = _imports(path)
    roots = {name.split(".")[0] for name in imports}
    assert not roots & FORBIDDEN_PACKAGES, f"{path.name} imports {roots & FORBIDDEN_PACKAGES}"
    assert not roots & FORBIDDEN_MODULES, f"{path.name} imports {roots & FORBIDDEN_MODULES}"
    assert roots <= ALLOWED_ROOTS, f"{path.name} imports {roots - ALLOWED_ROOTS}"
    assert "datetime" not in roots  # no wall clock, not even for formatting
    source = path.read_text()
    for call in ("np.random.default_rng()", "np.random.seed", "np.random.rand(", ".now("):
        assert call not in source, f"{path.name} uses {call}"
    # The one generator is seeded from the configuration.
    if "np.random.Generator" in source:
        assert "PCG64(seed)" in source


def test_no_ground_truth_is_read() -> None:
    for path in _modules():
        source = path.read_text()
        assert "truth" not in source.lower(), f"{path.name} mentions ground truth"
