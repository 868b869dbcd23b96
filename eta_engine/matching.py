"""Map-matching GPS fixes to directed road edges, and reading fields at a matched position.

:func:`match` snaps a whole array of fixes at once with :meth:`RoadGraph.nearest_edges` (a
KD-tree over edge pieces, exact). The graph returns the lower-numbered edge of a two-way road;
the direction of travel is then resolved from the fix's heading when it has one and the
vehicle moves (a heading at walking pace is noise), otherwise both directions are kept and
the caller takes the faster one (:func:`time_to`), which is what a driver would do.

A matched position is ``(edge, frac)``: the fraction along the edge from its tail. The time to
a destination from there is ``(1 - frac) * t[edge] + field[head(edge)]``; a fix far from any
road (a car park, a private drive) adds the off-road distance at a slow speed. The field
values are passed in already gathered, so every fix of a batch can head somewhere else and
still be computed in one vectorised pass.

Everything is vectorised over the fixes; nothing here keeps state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from eta_engine.roads import RoadGraph

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """Map-matching thresholds (see :class:`eta_engine.engine.EtaConfig` for the defaults)."""

    min_heading_speed_mps: float = 2.0
    """Below this speed a reported heading is not trusted (GPS headings wander when slow)."""
    snap_m: float = 25.0
    """Off-road distance tolerated as GPS error; beyond it the rest is driven off-road."""
    offroad_speed_mps: float = 4.0
    """Speed over the off-road part (car parks, yards, private drives)."""


@dataclass(frozen=True, slots=True)
class Matched:
    """Fixes snapped to the road graph (arrays, one entry per fix)."""

    edge: IntArray
    """The directed edge the vehicle is on (heading-resolved when possible)."""
    frac: FloatArray
    """Position along ``edge`` from its tail (0) to its head (1)."""
    alt_edge: IntArray
    """The opposite direction of a two-way road when the heading could not decide, else -1."""
    dist_m: FloatArray
    """Distance from the fix to the road, metres."""
    x: FloatArray
    y: FloatArray
    """The fix in the graph's local projection (metres)."""

    def __len__(self) -> int:
        return len(self.edge)


def edge_bearings(graph: RoadGraph) -> FloatArray:
    """Compass bearing of each edge, degrees clockwise from north, in the local projection."""
    x, y = graph.project(graph.node_lat, graph.node_lon)
    dx = x[graph.edge_dst] - x[graph.edge_src]
    dy = y[graph.edge_dst] - y[graph.edge_src]
    out: FloatArray = np.degrees(np.arctan2(dx, dy)) % 360.0
    return out


def match(
    graph: RoadGraph,
    bearings: FloatArray,
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    *,
    heading_deg: npt.ArrayLike,
    speed_mps: npt.ArrayLike,
    config: MatchConfig = MatchConfig(),
) -> Matched:
    """Snap fixes to directed edges.

    ``heading_deg`` and ``speed_mps`` are arrays like ``lat`` with NaN where the fix has no
    value. A heading is used when the speed is unknown or at least
    ``min_heading_speed_mps``: the edge whose bearing is within 90 degrees of it is chosen
    (its reverse twin otherwise, if the road is two-way). Undecided fixes keep the twin in
    ``alt_edge``. Deterministic: ties go to the lowest edge index (see ``nearest_edges``).
    """
    lat_a = np.atleast_1d(np.asarray(lat, dtype=np.float64))
    lon_a = np.atleast_1d(np.asarray(lon, dtype=np.float64))
    heading = np.atleast_1d(np.asarray(heading_deg, dtype=np.float64))
    speed = np.atleast_1d(np.asarray(speed_mps, dtype=np.float64))
    x, y = graph.project(lat_a, lon_a)
    if len(lat_a) == 0:
        empty_i = np.zeros(0, dtype=np.int64)
        empty_f = np.zeros(0, dtype=np.float64)
        return Matched(empty_i, empty_f, empty_i, empty_f, empty_f, empty_f)
    edge, dist, frac = graph.nearest_edges(lat_a, lon_a)
    twin = graph.edge_reverse[edge]
    usable = np.isfinite(heading) & ~(speed < config.min_heading_speed_mps)
    delta = np.abs((heading - bearings[edge] + 180.0) % 360.0 - 180.0)
    backwards = usable & (delta > 90.0) & (twin >= 0)
    chosen = np.where(backwards, twin, edge)
    frac = np.where(backwards, 1.0 - frac, frac)
    alt = np.where(usable, -1, twin)
    return Matched(
        chosen.astype(np.int64), frac, alt.astype(np.int64), dist, np.asarray(x), np.asarray(y)
    )


def time_to(
    graph: RoadGraph,
    matched: Matched,
    at_head: FloatArray,
    at_alt_head: FloatArray,
    edge_time_s: FloatArray,
    config: MatchConfig = MatchConfig(),
) -> tuple[FloatArray, IntArray]:
    """Seconds from each matched position to a destination, and the node ahead on the way.

    ``at_head``/``at_alt_head`` are the destination's field at the head of each fix's edge and
    of its twin (any value where there is no twin): each fix may have its own destination.
    ``edge_time_s`` prices the partial edge under the vehicle. Where the twin direction is
    open the faster of the two is taken; a fix off the road adds the off-road part.
    """
    e, alt, frac = matched.edge, matched.alt_edge, matched.frac
    alt0 = np.maximum(alt, 0)
    forward = (1.0 - frac) * edge_time_s[e] + at_head
    backward = np.where(alt >= 0, frac * edge_time_s[alt0] + at_alt_head, np.inf)
    use_alt = backward < forward
    off = np.maximum(matched.dist_m - config.snap_m, 0.0) / config.offroad_speed_mps
    seconds: FloatArray = np.minimum(forward, backward) + off
    ahead: IntArray = np.where(use_alt, graph.edge_dst[alt0], graph.edge_dst[e])
    return seconds, ahead


def remaining(
    graph: RoadGraph,
    matched: Matched,
    field: npt.NDArray[np.floating],
    edge_time_s: FloatArray,
    config: MatchConfig = MatchConfig(),
) -> FloatArray:
    """Seconds from each matched position to the destination of ``field`` (one field shared by
    every fix, shape ``(n_nodes,)``); see :func:`time_to`."""
    heads = graph.edge_dst
    at_head = np.asarray(field[heads[matched.edge]], dtype=np.float64)
    at_alt = np.asarray(field[heads[np.maximum(matched.alt_edge, 0)]], dtype=np.float64)
    return time_to(graph, matched, at_head, at_alt, edge_time_s, config)[0]


def distance_m(
    graph: RoadGraph, x: FloatArray, y: FloatArray, lat: float, lon: float
) -> FloatArray:
    """Straight-line metres from projected points to one ``(lat, lon)`` (same projection)."""
    px, py = graph.project(lat, lon)
    out: FloatArray = np.hypot(x - px, y - py)
    return out
