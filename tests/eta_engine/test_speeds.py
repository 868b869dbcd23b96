"""Live speed factors: the prior when cold, learned fast where vans drive, forgotten as it
clears, area by area; published by period so fields can be re-priced reproducibly."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from eta_engine.roads import RoadGraph
from eta_engine.speeds import SpeedConfig, SpeedModel

T0 = 1_795_417_200_000
MIN = 60_000


@pytest.fixture()
def model(graph: RoadGraph) -> SpeedModel:
    return SpeedModel(graph, SpeedConfig(prior_factor=1.15, half_life_s=600.0, shrink_s=120.0))


def _valley(graph: RoadGraph) -> tuple[float, float]:
    x, y = graph.project(42.5078, 1.5211)  # Andorra la Vella
    return float(x), float(y)


def _observe(model: SpeedModel, x: float, y: float, factor: float, n: int, at: int) -> None:
    free = np.full(n, 10.0)
    model.observe(np.full(n, x), np.full(n, y), free * factor, free, np.full(n, at))


def test_cold_start_is_the_prior_everywhere(model: SpeedModel) -> None:
    model.publish(T0)
    assert np.allclose(model.edge_factors(), 1.15)
    assert model.region_factor == pytest.approx(1.15)


def test_congestion_shows_where_it_is_seen(graph: RoadGraph, model: SpeedModel) -> None:
    x, y = _valley(graph)
    _observe(model, x, y, factor=4.0, n=60, at=T0)  # ten minutes of pings in one cell
    model.publish(T0 + MIN)
    cell = model.cells_of(x, y)
    assert model.cell_factor[cell] > 3.5
    # A cell 15 km away saw nothing: it keeps the prior (nobody drove there today).
    far = model.cells_of(x + 15_000, y + 5_000)
    assert model.cell_factor[far] == pytest.approx(1.15)
    assert model.region_factor > 2.0  # the region as a whole did slow down
    edges = np.flatnonzero(model.edge_cell == cell)
    assert len(edges) and np.all(model.edge_factors()[edges] > 3.5)
    np.testing.assert_allclose(model.edge_times(), graph.edge_time_s * model.edge_factors())


def test_evidence_fades_with_its_half_life(graph: RoadGraph, model: SpeedModel) -> None:
    x, y = _valley(graph)
    _observe(model, x, y, factor=4.0, n=60, at=T0)
    model.publish(T0)
    cell = model.cells_of(x, y)
    fresh = model.cell_factor[cell]
    model.publish(T0 + 10 * MIN)  # one half-life, no new evidence
    half = model.cell_factor[cell]
    model.publish(T0 + 120 * MIN)
    cleared = model.cell_factor[cell]
    assert fresh > half > cleared
    assert cleared == pytest.approx(1.15, abs=0.15)


def test_observations_are_clipped(graph: RoadGraph, model: SpeedModel) -> None:
    x, y = _valley(graph)
    # A van "driving" 0.01 s of free flow in 30 s (parked): clipped to max_factor.
    model.observe([x], [y], [30.0], [0.01], [T0])
    model.observe([x], [y], [5.0], [0.0], [T0])  # no progress at all: ignored
    model.publish(T0)
    assert model.cell_factor.max() <= model.config.max_factor


def test_publication_is_by_period(model: SpeedModel) -> None:
    assert model.due(T0)
    model.publish(T0 + 5_000)
    assert model.published_ms == T0  # the period's start, not the watermark
    assert not model.due(T0 + 59_000)
    assert model.due(T0 + 60_000)
    version = model.version
    model.publish(T0 + 61_000)
    assert model.version == version + 1


def test_time_of_day_profile_is_tomorrows_prior(graph: RoadGraph) -> None:
    model = SpeedModel(graph, SpeedConfig(profile_shrink_s=60.0))
    x, y = _valley(graph)
    for minute in range(0, 60, 5):  # a congested 08:00 hour, local
        _observe(model, x, y, factor=3.0, n=20, at=T0 + minute * MIN)
        model.publish(T0 + minute * MIN)
    assert model.prior_at(T0) == pytest.approx(1.15)  # today is not its own prior
    model.publish(T0 + 20 * 3_600_000)  # past local midnight: today joins the profile
    next_morning = T0 + 24 * 3_600_000
    assert model.prior_at(next_morning) > 1.5  # 08:00 remembers
    assert model.prior_at(next_morning + 4 * 3_600_000) == pytest.approx(1.15)  # 12:00 doesn't


def test_snapshot_round_trip(graph: RoadGraph, model: SpeedModel) -> None:
    x, y = _valley(graph)
    _observe(model, x, y, factor=2.5, n=30, at=T0)
    model.publish(T0)
    state = orjson.loads(orjson.dumps(model.snapshot()))
    other = SpeedModel(graph, model.config)
    other.restore(state)
    np.testing.assert_array_equal(other.edge_factors(), model.edge_factors())
    _observe(model, x, y, factor=1.5, n=10, at=T0 + MIN)
    _observe(other, x, y, factor=1.5, n=10, at=T0 + MIN)
    model.publish(T0 + MIN)
    other.publish(T0 + MIN)
    np.testing.assert_array_equal(other.cell_factor, model.cell_factor)
