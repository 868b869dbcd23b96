"""Shared fixtures for the ETA engine tests: the Andorra graph and a small synthetic day.

The day (:func:`make_day`) is hand-built, not simulated: technician T-1 works three jobs in
Andorra la Vella, Escaldes and Encamp, pinging every ``ping_s`` seconds while driving (along
the graph's free-flow route, ``slow`` times slower than free flow) and every minute on site;
T-2, with the same skills, waits at home in La Massana all day. Work-order snapshots are built
the way the aggregates stage builds them (the whole state after each change).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from eta_engine.roads import RoadGraph
from events import kinds as k
from events.base import Causation, Event

T0 = 1_795_417_200_000
"""2026-11-23T07:00:00Z: 08:00 in Andorra."""
MIN = 60_000
HOUR = 3_600_000

Stream = list[tuple[Event, Causation]]


@pytest.fixture(scope="session")
def graph() -> RoadGraph:
    return RoadGraph.default()


@dataclass
class _Order:
    id: str
    site: tuple[float, float]
    job_type: str
    window: tuple[int, int]
    status: str = "booked"
    tech: str | None = None
    position: int | None = None
    times: dict[str, int | None] = field(default_factory=dict)


@dataclass
class DayBuilder:
    """Appends events in time order and numbers their log positions."""

    graph: RoadGraph
    events: list[tuple[int, Event]] = field(default_factory=list)
    n: int = 0

    def add(self, event: Event) -> None:
        self.events.append((event.time, event))

    def next_id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}-{self.n:05d}"

    def state(self, order: _Order, at: int, status: str, trigger: str) -> None:
        previous = order.status
        order.status = status
        eid = self.next_id("ws")
        self.add(
            k.WorkOrderStateChanged(
                id=eid,
                source="test/aggregates",
                time=at,
                subject=order.id,
                causation=Causation(f"in-{eid}", "fs.status", 0, self.n),
                work_order_id=order.id,
                status=status,
                previous_status=previous,
                trigger=trigger,
                technician_id=order.tech,
                previous_technician_id=None,
                visit=1,
                customer_id="C-1",
                site_lat=order.site[0],
                site_lon=order.site[1],
                region="Andorra la Vella",
                job_type=order.job_type,
                priority="normal",
                window_start=order.window[0],
                window_end=order.window[1],
                queue_position=order.position,
                assigned_at=order.times.get("assigned"),
                en_route_at=order.times.get("en_route"),
                arrived_at=order.times.get("arrived"),
                started_at=order.times.get("started"),
                completed_at=order.times.get("completed"),
            )
        )

    def ping(self, tech: str, at: int, lat: float, lon: float, speed: float | None) -> None:
        self.add(
            k.GpsPinged(
                id=self.next_id("gps"),
                source="test/app",
                time=at,
                subject=tech,
                technician_id=tech,
                lat=lat,
                lon=lon,
                speed_mps=speed,
                heading_deg=None,
                accuracy_m=5.0,
            )
        )

    def drive(self, tech: str, src: int, dst: int, depart: int, slow: float, ping_s: int) -> int:
        """Pings along the free-flow route; returns the arrival time."""
        g = self.graph
        nodes, _ = g.shortest_path(src, dst)
        edges = g.path_edges(nodes)
        dur = g.edge_time_s[edges] * slow
        ends = np.cumsum(dur)
        total = float(ends[-1]) if len(ends) else 0.0
        t = ping_s
        while t < total:
            i = int(np.searchsorted(ends, t, side="right"))
            start = ends[i] - dur[i]
            f = (t - start) / dur[i]
            u, v = g.edge_src[edges[i]], g.edge_dst[edges[i]]
            lat = float(g.node_lat[u] + f * (g.node_lat[v] - g.node_lat[u]))
            lon = float(g.node_lon[u] + f * (g.node_lon[v] - g.node_lon[u]))
            speed = float(g.edge_length_m[edges[i]] / dur[i])
            self.ping(tech, depart + round(t * 1000), lat, lon, speed)
            t += ping_s
        return depart + round(total * 1000)

    def park(self, tech: str, node: int, start: int, end: int) -> None:
        lat, lon = float(self.graph.node_lat[node]), float(self.graph.node_lon[node])
        t = start + MIN
        while t < end:
            self.ping(tech, t, lat, lon, 0.1)
            t += MIN

    def stream(self) -> Stream:
        ordered = sorted(self.events, key=lambda item: item[0])
        out: Stream = []
        for offset, (_t, event) in enumerate(ordered):
            out.append((event, Causation(event.id, "fs.eta-in", 0, offset)))
        return out


SITES = {
    "home1": (42.5040, 1.5150),
    "home2": (42.5451, 1.5147),
    "J1": (42.5078, 1.5211),
    "J2": (42.5094, 1.5389),
    "J3": (42.5345, 1.5800),
}


def make_day(
    graph: RoadGraph,
    *,
    durations_min: tuple[float, float, float] = (50.0, 50.0, 50.0),
    windows_h: tuple[float, float, float] = (0.0, 1.5, 3.0),
    slow: float = 1.3,
    ping_s: int = 10,
    late_window: bool = False,
    planned_end_h: float = 9.0,
) -> Stream:
    """A synthetic day for T-1 (three jobs) and T-2 (idle); see the module docstring.

    ``late_window`` makes J3's window end half an hour after J1 starts, so J3 is bound to be
    late and a late alert is due while T-1 is still on J1. ``planned_end_h``: when the shifts
    are planned to end, in hours after 08:00.
    """
    b = DayBuilder(graph)
    node = {name: graph.nearest_node(*latlon)[0] for name, latlon in SITES.items()}
    for tech, home in (("T-1", "home1"), ("T-2", "home2")):
        b.add(
            k.TechnicianRegistered(
                id=b.next_id("reg"),
                source="test/dispatch",
                time=T0 - HOUR,
                subject=tech,
                technician_id=tech,
                name="Test",
                skills=("gas", "heating"),
                team="t",
                region="Andorra la Vella",
                home_lat=SITES[home][0],
                home_lon=SITES[home][1],
            )
        )
        b.add(
            k.ShiftStarted(
                id=b.next_id("shift"),
                source="test/app",
                time=T0,
                subject=tech,
                technician_id=tech,
                van_stock={"filter": 2},
                planned_end=T0 + round(planned_end_h * HOUR),
            )
        )
    orders = []
    for j, name in enumerate(("J1", "J2", "J3")):
        start = T0 + round(windows_h[j] * HOUR)
        end = start + 2 * HOUR
        if late_window and name == "J3":
            end = T0 + 45 * MIN
            start = end - 2 * HOUR
        order = _Order(f"WO-{name}", SITES[name], "boiler_service", (start, end))
        order.tech, order.position = "T-1", j
        order.times["assigned"] = T0 + MIN
        b.state(order, T0 + MIN, "assigned", "TechnicianAssigned")
        orders.append(order)

    at = T0 + 5 * MIN
    here = node["home1"]
    b.park("T-1", here, T0, at)
    b.park("T-2", node["home2"], T0, T0 + 8 * HOUR)
    for order, name, minutes in zip(orders, ("J1", "J2", "J3"), durations_min, strict=True):
        depart = max(at, order.window[0] - 10 * MIN)
        if depart > at:
            b.park("T-1", here, at, depart)
        order.times["en_route"] = depart
        b.state(order, depart, "en_route", "TechnicianEnRoute")
        arrive = b.drive("T-1", here, node[name], depart, slow, ping_s)
        order.times["arrived"] = arrive + 20_000
        b.state(order, arrive + 20_000, "arrived", "TechnicianArrived")
        order.times["started"] = arrive + 3 * MIN
        b.state(order, arrive + 3 * MIN, "in_progress", "WorkStarted")
        done = arrive + 3 * MIN + round(minutes * MIN)
        b.park("T-1", node[name], arrive, done + 4 * MIN)
        order.times["completed"] = done
        b.state(order, done, "completed_fixed", "WorkCompleted")
        here, at = node[name], done + 4 * MIN
    b.add(
        k.ShiftEnded(
            id=b.next_id("end"),
            source="test/app",
            time=at + 10 * MIN,
            subject="T-1",
            technician_id="T-1",
        )
    )
    return b.stream()


@pytest.fixture(scope="session")
def day(graph: RoadGraph) -> Stream:
    return make_day(graph)


@pytest.fixture(scope="session")
def day_factory(graph: RoadGraph) -> Callable[..., Stream]:
    def build(**kwargs: Any) -> Stream:
        return make_day(graph, **kwargs)

    return build
