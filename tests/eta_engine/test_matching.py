"""Map-matching: fixes on known edges snap back to them, headings pick the direction, and the
time to a destination read at a matched position agrees with the field."""

from __future__ import annotations

import numpy as np
import pytest

from eta_engine.fields import FieldStore
from eta_engine.matching import MatchConfig, edge_bearings, match, remaining
from eta_engine.roads import RoadGraph


def _points_on(graph: RoadGraph, edges: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, ...]:
    u, v = graph.edge_src[edges], graph.edge_dst[edges]
    lat = graph.node_lat[u] + frac * (graph.node_lat[v] - graph.node_lat[u])
    lon = graph.node_lon[u] + frac * (graph.node_lon[v] - graph.node_lon[u])
    return lat, lon


@pytest.fixture(scope="module")
def bearings(graph: RoadGraph) -> np.ndarray:
    return edge_bearings(graph)


def _long_edges(graph: RoadGraph, n: int, seed: int = 3) -> np.ndarray:
    """Edges long enough that a point in their middle has no other road within metres."""
    rng = np.random.default_rng(seed)
    long = np.flatnonzero(graph.edge_length_m > 60.0)
    return np.asarray(rng.choice(long, n, replace=False), dtype=np.int64)


def test_points_on_edges_match_those_edges(graph: RoadGraph, bearings: np.ndarray) -> None:
    edges = _long_edges(graph, 150)
    frac = np.full(len(edges), 0.5)
    lat, lon = _points_on(graph, edges, frac)
    nan = np.full(len(edges), np.nan)
    m = match(graph, bearings, lat, lon, heading_deg=nan, speed_mps=nan)
    twin = graph.edge_reverse[edges]
    same_road = (m.edge == edges) | (m.edge == twin)
    assert same_road.mean() > 0.97
    assert np.all(m.dist_m[same_road] < 1.0)
    np.testing.assert_allclose(m.frac[same_road], 0.5, atol=0.02)
    # Without a heading a two-way road keeps both directions open.
    two_way = same_road & (twin >= 0)
    assert np.all(m.alt_edge[two_way] >= 0)


def test_heading_picks_the_direction_of_travel(graph: RoadGraph, bearings: np.ndarray) -> None:
    edges = _long_edges(graph, 300)
    edges = edges[graph.edge_reverse[edges] >= 0][:100]
    frac = np.full(len(edges), 0.3)
    lat, lon = _points_on(graph, edges, frac)
    speed = np.full(len(edges), 12.0)
    forward = match(graph, bearings, lat, lon, heading_deg=bearings[edges], speed_mps=speed)
    backward_heading = (bearings[edges] + 180.0) % 360.0
    backward = match(graph, bearings, lat, lon, heading_deg=backward_heading, speed_mps=speed)
    ok = (forward.edge == edges) | (forward.edge == graph.edge_reverse[edges])
    assert ok.mean() > 0.97
    assert np.all(forward.edge[ok] == edges[ok])
    assert np.all(backward.edge[ok] == graph.edge_reverse[edges[ok]])
    np.testing.assert_allclose(backward.frac[ok], 0.7, atol=0.02)
    assert np.all(forward.alt_edge == -1)
    # At walking pace the heading is not trusted: both directions stay open.
    slow = match(
        graph, bearings, lat, lon, heading_deg=bearings[edges], speed_mps=np.full(len(edges), 0.5)
    )
    assert np.all(slow.alt_edge[ok] >= 0)


def test_remaining_time_agrees_with_the_field(graph: RoadGraph, bearings: np.ndarray) -> None:
    store = FieldStore(graph)
    dst = graph.nearest_node(42.5078, 1.5211)[0]
    field = store.static(dst).seconds
    edges = _long_edges(graph, 80, seed=9)
    lat, lon = _points_on(graph, edges, np.full(len(edges), 0.9))
    nan = np.full(len(edges), np.nan)
    m = match(graph, bearings, lat, lon, heading_deg=nan, speed_mps=nan)
    rest = remaining(graph, m, field, store.base_time_s)
    t = store.base_time_s
    twin = graph.edge_reverse[edges]
    same = (m.edge == edges) | (m.edge == twin)
    assert same.mean() > 0.9
    forward = 0.1 * t[edges] + field[graph.edge_dst[edges]]
    backward = np.where(
        twin >= 0, 0.9 * t[np.maximum(twin, 0)] + field[graph.edge_src[edges]], np.inf
    )
    expected = np.minimum(forward, backward)
    np.testing.assert_allclose(rest[same], expected[same], rtol=1e-4, atol=0.05)


def test_off_road_distance_costs_time(graph: RoadGraph, bearings: np.ndarray) -> None:
    store = FieldStore(graph)
    dst = graph.nearest_node(42.5078, 1.5211)[0]
    field = store.static(dst).seconds
    edge = _long_edges(graph, 1)
    lat, lon = _points_on(graph, edge, np.array([0.5]))
    config = MatchConfig(snap_m=25.0, offroad_speed_mps=4.0)
    nan = np.array([np.nan])
    on = match(graph, bearings, lat, lon, heading_deg=nan, speed_mps=nan, config=config)
    # 200 m north of the road: further away, and at least (200 - 25) / 4 s more.
    off = match(
        graph, bearings, lat + 200 / 111_195, lon, heading_deg=nan, speed_mps=nan, config=config
    )
    t_on = remaining(graph, on, field, store.base_time_s, config)[0]
    t_off = remaining(graph, off, field, store.base_time_s, config)[0]
    if off.edge[0] in (on.edge[0], graph.edge_reverse[on.edge[0]]):
        assert t_off - t_on == pytest.approx((off.dist_m[0] - 25.0) / 4.0, rel=0.05, abs=2.0)
    assert off.dist_m[0] > on.dist_m[0]
