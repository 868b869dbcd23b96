"""Time-of-day congestion by area, random incidents, and driving a path through them.

Travel time on edge ``e`` entered at time ``t`` is ``free_s[e] * factor(e, t)`` with::

    factor(e, t) = (1 + w[e] * (base + amplitude * rush(t))) * incidents(e, t)

``w[e]`` is the edge's congestion weight (:attr:`simulator.world.World.edge_congestion`: 1 in
the Andorra la Vella/Escaldes valley, less elsewhere), ``rush(t)`` is a sum of Gaussian peaks
over local time (:data:`RUSH_PEAKS`) and ``incidents(e, t)`` multiplies the factors of the
incidents active on ``e`` at ``t``. Factors are never below 1, so nobody drives faster than
the free-flow speed of a road (which is at most the posted limit).

Drivers take the free-flow fastest path and do not re-route: in Andorra's valleys there is
rarely an alternative, and it keeps a leg's path independent of the moment it is driven (one
Dijkstra per leg, reusable by the planner). Congestion and incidents change how long a path
takes, not which path it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator.scenarios import HOUR_MS, MINUTE_MS, Scenario
from simulator.world import FloatArray, IntArray, World

RUSH_PEAKS: tuple[tuple[float, float], ...] = ((8.25, 1.0), (13.25, 0.35), (17.75, 1.0))
"""(local hour of the peak, relative height): morning and evening commutes, a lunch bump."""


@dataclass(frozen=True, slots=True)
class Incident:
    """A slowdown of the roads near ``edge`` during ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    edge: int
    edges: IntArray
    factor: float
    lat: float
    lon: float


def rush(local_hour: FloatArray, width_h: float) -> FloatArray:
    """The rush-hour profile (0 at night, about 1 at a commute peak)."""
    out = np.zeros_like(local_hour)
    for centre, height in RUSH_PEAKS:
        out += height * np.exp(-0.5 * ((local_hour - centre) / width_h) ** 2)
    return out


class Traffic:
    """The day's traffic: deterministic given the scenario and the incident draws."""

    def __init__(
        self,
        world: World,
        scenario: Scenario,
        midnight_ms: int,
        span_ms: tuple[int, int],
        rng: np.random.Generator,
    ) -> None:
        """Draw the day's incidents over ``span_ms`` (a Poisson process) with ``rng``."""
        self.world = world
        self.scenario = scenario
        self.midnight_ms = midnight_ms
        self.width_h = scenario.rush_width_min / 60.0
        start, end = span_ms
        hours = (end - start) / HOUR_MS
        count = int(rng.poisson(scenario.incident_rate_per_hour * hours))
        # Incidents happen on busy roads: major roads weigh three times their length.
        weight = world.edge_length_m * np.where(world.edge_major, 3.0, 1.0)
        weight = weight / weight.sum()
        incidents = []
        for _ in range(count):
            at = int(rng.integers(start, end))
            duration = scenario.incident_duration_min * math.exp(0.5 * rng.standard_normal())
            edge = int(rng.choice(len(weight), p=weight))
            factor = float(rng.uniform(*scenario.incident_slowdown))
            node = int(world.edge_src[edge])
            incidents.append(
                Incident(
                    start_ms=at,
                    end_ms=at + round(duration * MINUTE_MS),
                    edge=edge,
                    edges=world.edges_near(edge, scenario.incident_radius_m),
                    factor=factor,
                    lat=float(world.lat[node]),
                    lon=float(world.lon[node]),
                )
            )
        incidents.sort(key=lambda i: (i.start_ms, i.edge))
        self.incidents: tuple[Incident, ...] = tuple(incidents)
        self._starts = np.array([i.start_ms for i in incidents], dtype=np.int64)
        self._ends = np.array([i.end_ms for i in incidents], dtype=np.int64)

    def _congestion(self, edges: IntArray, at_ms: FloatArray) -> FloatArray:
        hours = (at_ms - self.midnight_ms) / HOUR_MS
        level = self.scenario.congestion_base + self.scenario.congestion_amplitude * rush(
            hours, self.width_h
        )
        out: FloatArray = 1.0 + self.world.edge_congestion[edges] * level
        return out

    def drive(self, edges: IntArray, depart_ms: int) -> tuple[FloatArray, FloatArray]:
        """Drive ``edges`` in order from ``depart_ms``: ``(entry offsets s, durations s)``.

        Each edge's factor is taken at the moment it is entered. Entry times depend on the
        factors, so they are found by one fixed-point step from the departure-time factors;
        congestion changes over tens of minutes, so the step error is negligible.
        """
        free = self.world.edge_time_s[edges]
        if len(edges) == 0:
            return free.copy(), free.copy()
        dur = free * self._congestion(edges, np.full(len(edges), float(depart_ms)))
        entry_ms = depart_ms + (np.cumsum(dur) - dur) * 1000.0
        factor = self._congestion(edges, entry_ms)
        if len(self.incidents):
            horizon = depart_ms + float(dur.sum()) * 3000.0 + HOUR_MS
            active = np.flatnonzero((self._starts < horizon) & (self._ends > depart_ms))
            for i in active:
                incident = self.incidents[int(i)]
                hit = np.isin(edges, incident.edges)
                if hit.any():
                    hit &= (entry_ms >= incident.start_ms) & (entry_ms < incident.end_ms)
                    factor = np.where(hit, factor * incident.factor, factor)
        dur = free * factor
        return np.cumsum(dur) - dur, dur
