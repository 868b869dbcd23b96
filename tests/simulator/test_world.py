"""World tables and graph-derived facts."""

from __future__ import annotations

import math

import numpy as np

from eta_engine.roads import RoadGraph
from simulator.world import CENTRES, JOB_TYPES, PARISHES, SKILLS, TRADES, World


def test_tables_are_consistent() -> None:
    assert len(PARISHES) == 7
    names = {j.name for j in JOB_TYPES}
    for required in ("boiler_repair", "ac_service", "appliance_repair", "electrical_fault",
                     "elevator_maintenance", "telecom_install"):  # fmt: skip
        assert required in names
    for job in JOB_TYPES:
        assert job.maintenance in ("reactive", "preventive")
        assert set(job.skills) <= set(SKILLS)
        assert job.parts_kit and all(q >= 1 for _, q in job.parts_kit)
        # Every job type can be done by some trade.
        assert any(set(job.skills) <= set(t.skills) for t in TRADES), job.name
    for trade in TRADES:
        for name, _ in trade.job_mix:
            job = next(j for j in JOB_TYPES if j.name == name)
            assert set(job.skills) <= set(trade.skills), (trade.name, name)
    assert math.isclose(sum(t.share for t in TRADES), 1.0)


def test_every_parish_has_roads_and_each_centre_lies_in_its_parish(graph: RoadGraph) -> None:
    world = World.for_graph(graph)
    assert set(np.unique(world.node_parish).tolist()) == set(range(len(PARISHES)))
    for centre in CENTRES:
        node, dist = graph.nearest_node(centre.lat, centre.lon)
        assert dist < 500
        assert world.parish_of(node) == centre.parish


def test_valley_roads_weigh_more_than_mountain_parishes(graph: RoadGraph) -> None:
    world = World.for_graph(graph)
    by_parish = {
        p: float(np.mean(world.edge_congestion[world.node_parish[world.edge_src] == i]))
        for i, p in enumerate(PARISHES)
    }
    assert by_parish["Andorra la Vella"] > by_parish["Ordino"]
    assert by_parish["Escaldes-Engordany"] > by_parish["Canillo"]


def test_fastest_path_is_exact_despite_its_search_bound(graph: RoadGraph) -> None:
    world = World.for_graph(graph)
    rng = np.random.default_rng(0)
    pairs = [tuple(int(x) for x in rng.integers(graph.n_nodes, size=2)) for _ in range(15)]
    pairs.append((int(np.argmin(graph.node_lat)), int(np.argmax(graph.node_lat))))
    for src, dst in pairs:
        leg = world.fastest_path(src, dst)
        _, seconds = graph.shortest_path(src, dst)
        assert math.isclose(leg.free_s, seconds, rel_tol=1e-9, abs_tol=1e-6)
        assert leg.nodes[0] == src and leg.nodes[-1] == dst
        assert np.array_equal(leg.edges, graph.path_edges(leg.nodes.tolist()))


def test_dispatcher_estimates_are_in_the_right_range(graph: RoadGraph) -> None:
    world = World.for_graph(graph)
    rng = np.random.default_rng(1)
    ratios = []
    for _ in range(40):
        src, dst = (int(x) for x in rng.integers(graph.n_nodes, size=2))
        exact = graph.travel_time(src, dst)
        if exact > 300:
            ratios.append(world.estimate_s(src, dst) / exact)
    assert 0.7 < float(np.median(ratios)) < 1.5
