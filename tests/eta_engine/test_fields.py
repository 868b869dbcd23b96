"""Time fields agree with RoadGraph.shortest_path; legs follow the tree; live pricing scales."""

from __future__ import annotations

import numpy as np
import pytest

from eta_engine.fields import FieldStore, live_remaining, live_suffix
from eta_engine.roads import RoadGraph


@pytest.fixture(scope="module")
def store(graph: RoadGraph) -> FieldStore:
    return FieldStore(graph, max_fields=8)


def _nodes(graph: RoadGraph, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.integers(0, graph.n_nodes, n)]


def test_static_field_equals_the_graphs_field(graph: RoadGraph, store: FieldStore) -> None:
    for dst in _nodes(graph, 3, seed=1):
        ours = store.static(dst).seconds
        theirs = graph.time_field_to(dst)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-3)


def test_field_times_equal_shortest_path_times(graph: RoadGraph, store: FieldStore) -> None:
    dst = _nodes(graph, 1, seed=2)[0]
    field = store.static(dst).seconds
    for src in _nodes(graph, 12, seed=3):
        _, seconds = graph.shortest_path(src, dst)
        assert float(field[src]) == pytest.approx(seconds, rel=1e-5, abs=1e-3)


def test_leg_is_the_fastest_route(graph: RoadGraph, store: FieldStore) -> None:
    dst = _nodes(graph, 1, seed=4)[0]
    for src in _nodes(graph, 6, seed=5):
        leg = store.leg(src, dst)
        nodes, seconds = graph.shortest_path(src, dst)
        assert leg.static_s == pytest.approx(seconds, rel=1e-6, abs=1e-3)
        if len(leg.edges):
            # A connected walk from src to dst...
            assert graph.edge_src[leg.edges[0]] == src
            assert graph.edge_dst[leg.edges[-1]] == dst
            assert np.all(graph.edge_dst[leg.edges[:-1]] == graph.edge_src[leg.edges[1:]])
        # ...whose profile counts down to zero.
        assert leg.profile[-1] == 0.0
        assert np.all(np.diff(leg.profile) < 0)
        assert len(leg.profile) == len(leg.edges) + 1
        del nodes


def test_live_pricing_scales_with_factors(graph: RoadGraph, store: FieldStore) -> None:
    src, dst = _nodes(graph, 2, seed=6)
    leg = store.leg(src, dst)
    base = store.base_time_s
    same = live_suffix(leg, base)
    np.testing.assert_allclose(same, leg.profile, rtol=1e-9)
    double = live_suffix(leg, base * 2.0)
    np.testing.assert_allclose(double, 2.0 * leg.profile, rtol=1e-9)
    # Anywhere along the leg, the remaining live time is the free-flow one times the ratio.
    for at in (leg.static_s, leg.static_s / 3.0, 1.0):
        assert live_remaining(leg, double, at) == pytest.approx(2.0 * at, rel=1e-9)
    # Only the rest of the route matters: slow the first half down, the second half not.
    half = len(leg.edges) // 2
    times = base.copy()
    times[leg.edges[:half]] *= 5.0
    suffix = live_suffix(leg, times)
    tail = float(leg.profile[half])
    assert live_remaining(leg, suffix, tail) == pytest.approx(tail, rel=1e-6)


def test_cache_is_bounded_and_results_do_not_depend_on_it(graph: RoadGraph) -> None:
    small = FieldStore(graph, max_fields=2)
    nodes = _nodes(graph, 4, seed=7)
    first = [small.static(d).seconds.copy() for d in nodes]
    again = [small.static(d).seconds for d in nodes]  # evicted and recomputed
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(small._static) <= 2
