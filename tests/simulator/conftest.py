"""Shared fixtures: one road graph per session, and each simulated day computed once."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import pytest

from eta_engine.roads import RoadGraph
from simulator.engine import Simulation, simulate
from simulator.scenarios import make_params


@pytest.fixture(scope="session")
def graph() -> RoadGraph:
    return RoadGraph.default()


@pytest.fixture(scope="session")
def run(graph: RoadGraph) -> Callable[..., Simulation]:
    """``run(scenario, technicians=..., seed=..., hours=..., **overrides)``, memoised."""

    @cache
    def cached(scenario: str, items: tuple[tuple[str, Any], ...]) -> Simulation:
        return simulate(make_params(scenario, **dict(items)), graph)

    def call(scenario: str = "normal", **kwargs: Any) -> Simulation:
        return cached(scenario, tuple(sorted(kwargs.items())))

    return call


@pytest.fixture(scope="session")
def day(run: Callable[..., Simulation]) -> Simulation:
    """A normal day, long and large enough to contain every kind of incident."""
    return run("normal", technicians=24, seed=11, hours=9.0)
