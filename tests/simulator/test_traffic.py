"""Congestion by time of day and area, and incidents."""

from __future__ import annotations

import dataclasses

import numpy as np

from eta_engine.roads import RoadGraph
from simulator.scenarios import HOUR_MS, SCENARIOS, Scenario, SimParams
from simulator.traffic import Traffic
from simulator.world import PARISHES, IntArray, World


def _traffic(graph: RoadGraph, scenario: Scenario, seed: int = 0) -> tuple[World, Traffic, int]:
    world = World.for_graph(graph)
    params = SimParams(scenario=scenario)
    span = (params.log_start_ms, params.shift_end_ms)
    rng = np.random.Generator(np.random.PCG64(seed))
    return world, Traffic(world, scenario, params.midnight_ms, span, rng), params.midnight_ms


def _factor(traffic: Traffic, edges: IntArray, at: int) -> float:
    _, dur = traffic.drive(edges, at)
    return float(dur.sum() / traffic.world.edge_time_s[edges].sum())


def _edges_in(world: World, parish: str) -> IntArray:
    found: IntArray = np.flatnonzero(world.node_parish[world.edge_src] == PARISHES.index(parish))
    return found[:50]


def test_rush_hour_slows_the_valley_more_than_ordino_and_more_than_at_night(
    graph: RoadGraph,
) -> None:
    calm = dataclasses.replace(SCENARIOS["rush-hour"], incident_rate_per_hour=0.0)
    world, traffic, midnight = _traffic(graph, calm)
    valley, ordino = _edges_in(world, "Andorra la Vella"), _edges_in(world, "Ordino")
    peak, night = midnight + round(8.25 * HOUR_MS), midnight + 3 * HOUR_MS
    assert _factor(traffic, valley, peak) > 2.5
    assert _factor(traffic, valley, peak) > _factor(traffic, ordino, peak)
    assert _factor(traffic, valley, night) < 1.5
    entry, dur = traffic.drive(valley, peak)
    assert np.all(dur >= world.edge_time_s[valley])
    assert np.allclose(entry[1:], np.cumsum(dur)[:-1])


def test_normal_traffic_is_milder_than_rush_hour(graph: RoadGraph) -> None:
    normal = dataclasses.replace(SCENARIOS["normal"], incident_rate_per_hour=0.0)
    rush = dataclasses.replace(SCENARIOS["rush-hour"], incident_rate_per_hour=0.0)
    world, mild, midnight = _traffic(graph, normal)
    _, heavy, _ = _traffic(graph, rush)
    valley = _edges_in(world, "Escaldes-Engordany")
    peak = midnight + round(8.25 * HOUR_MS)
    assert 1.0 < _factor(mild, valley, peak) < _factor(heavy, valley, peak)


def test_incidents_slow_their_roads_only_while_they_last(graph: RoadGraph) -> None:
    _, traffic, _ = _traffic(graph, SCENARIOS["incidents"], seed=3)
    assert traffic.incidents
    alone = [
        i
        for i in traffic.incidents
        if not any(np.isin(i.edges, o.edges).any() for o in traffic.incidents if o is not i)
    ]
    incident = alone[0]
    edge = incident.edges[:1]
    during = (incident.start_ms + incident.end_ms) // 2
    after = incident.end_ms + 1
    assert np.isin(incident.edge, incident.edges)
    ratio = _factor(traffic, edge, during) / _factor(traffic, edge, after)
    assert ratio > incident.factor * 0.7
