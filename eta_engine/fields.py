"""Time-to-destination fields: one Dijkstra per destination, then every ping is a lookup.

For a destination node ``d`` a :class:`StaticField` holds, for every node ``v``:

* ``seconds[v]``: the free-flow time from ``v`` to ``d`` (the graph's ``edge_time_s``), and
* ``next_edge[v]``: the first edge of that fastest path (``-1`` at ``d`` and where ``d`` is
  unreachable), i.e. the shortest-path *tree* towards ``d``.

It is computed once, by Dijkstra from ``d`` over the reversed graph (scipy.sparse.csgraph),
and then read by every ping of every van heading there.

Live times keep the route and re-price it
    Drivers keep to the routes they know (and Andorra's valleys rarely offer another), so
    congestion changes how long the free-flow route takes, not which route it is. A
    :class:`Leg` is the tree's path from an origin, with the free-flow time left at each of
    its nodes (its *profile*); :func:`live_suffix` prices it with live edge times in one
    vectorised pass. A van's remaining live time is then its free-flow remaining time (one
    field lookup) times the live/free-flow ratio of the rest of its leg (one binary search in
    the profile): no search and no field recomputation per ping or per speed update.

Caching
    Fields and legs are cached (least recently used first out, bounded); an evicted one is
    recomputed on demand. Results depend only on the graph and the destination (and origin),
    never on what happens to be cached, so caching cannot change outputs.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from eta_engine.roads import RoadGraph

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Float32Array = npt.NDArray[np.float32]
Int32Array = npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class StaticField:
    """The free-flow field and shortest-path tree towards ``dst`` (read-only arrays)."""

    dst: int
    seconds: Float32Array
    """Free-flow seconds from each node to ``dst`` (``inf`` if unreachable)."""
    next_edge: Int32Array
    """First edge of the fastest path from each node (``-1`` at ``dst`` / unreachable)."""


@dataclass(frozen=True, slots=True)
class Leg:
    """The free-flow route from ``origin`` to ``dst``."""

    origin: int
    dst: int
    edges: IntArray
    """The route's edges in driving order (empty if ``origin == dst`` or unreachable)."""
    profile: FloatArray
    """Free-flow seconds left to ``dst`` at each node of the route (``len(edges) + 1``
    values, decreasing to 0); ``[inf]`` if ``dst`` is unreachable."""
    static_s: float = field(init=False)
    """Free-flow seconds of the whole leg (``profile[0]``; read for every queued stop of
    every evaluation, so kept as a Python float)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "static_s", float(self.profile[0]))


def path_suffix(edges: IntArray, edge_time_s: FloatArray) -> FloatArray:
    """Seconds left at each node of a path of ``edges`` priced with ``edge_time_s``."""
    times = edge_time_s[edges]
    out = np.zeros(len(times) + 1)
    out[:-1] = np.cumsum(times[::-1])[::-1]
    return out


def live_suffix(leg: Leg, edge_time_s: FloatArray) -> FloatArray:
    """Live seconds left to ``dst`` at each node of the leg (like ``leg.profile``)."""
    if not np.isfinite(leg.profile[0]):
        return np.array([np.inf])
    return path_suffix(leg.edges, edge_time_s)


def live_remaining(leg: Leg, suffix: FloatArray, static_s: float) -> float:
    """Live seconds from a point ``static_s`` free-flow seconds from ``dst``, on or near the leg.

    The rest of the route is found by its free-flow time left (a binary search in the
    profile) and priced at the live/free-flow ratio from there on; a point farther out than
    the leg's origin (a detour) gets the whole leg's ratio.
    """
    profile = leg.profile
    if not np.isfinite(static_s) or not np.isfinite(profile[0]):
        return math.inf
    # profile decreases; find the last node with at least static_s left.
    j = int(np.searchsorted(-profile, -static_s, side="right")) - 1
    j = min(max(j, 0), len(profile) - 1)
    while j > 0 and profile[j] <= 0.0:
        j -= 1
    if profile[j] <= 0.0:
        return static_s
    return static_s * float(suffix[j] / profile[j])


class FieldStore:
    """Static fields per destination and free-flow legs, computed on demand and cached."""

    def __init__(
        self,
        graph: RoadGraph,
        *,
        max_fields: int = 2048,
        max_legs: int = 65_536,
    ) -> None:
        self.graph = graph
        self.max_fields = max_fields
        self.max_legs = max_legs
        self.base_time_s: FloatArray = np.asarray(graph.edge_time_s, dtype=np.float64)
        order = np.lexsort((graph.edge_src, graph.edge_dst))
        n = graph.n_nodes
        indptr = np.searchsorted(graph.edge_dst[order], np.arange(n + 1))
        # Rows are edge heads: Dijkstra from d on this matrix walks the roads backwards, so
        # its distances are times *to* d and its predecessors are next hops towards d.
        self._reverse = csr_matrix(
            (self.base_time_s[order], graph.edge_src[order], indptr), shape=(n, n)
        )
        # Each node's out-edges are a run of edge indices sorted by head (the graph's edge
        # order): the first edge of a node's run and the heads of its runs, padded with n, one
        # row per place in the run, so that the edge to a head is found by counting.
        first = np.searchsorted(graph.edge_src, np.arange(n + 1))
        degree = np.diff(first)
        self._first_out: Int32Array = first[:-1].astype(np.int32)
        heads = np.full((max(int(degree.max(initial=0)), 1), n), n, dtype=np.int32)
        for k in range(heads.shape[0]):
            has = degree > k
            heads[k, has] = graph.edge_dst[first[:-1][has] + k]
        self._heads_out: Int32Array = heads
        self._static: OrderedDict[int, StaticField] = OrderedDict()
        self._legs: OrderedDict[tuple[int, int], Leg] = OrderedDict()

    def static(self, dst: int) -> StaticField:
        """The static field to ``dst`` (computed on first use, then cached)."""
        found = self._static.get(dst)
        if found is not None:
            self._static.move_to_end(dst)
            return found
        computed = self._compute_static(dst)
        self._static[dst] = computed
        while len(self._static) > self.max_fields:
            self._static.popitem(last=False)
        return computed

    def adopt(self, fields: Sequence[StaticField]) -> None:
        """Take fields computed elsewhere (see :class:`streams.prefetch.FieldPrefetch`) into
        the cache, as if computed here: a field depends only on the graph and its
        destination."""
        for found in fields:
            if found.dst not in self._static:
                self._static[found.dst] = found
        while len(self._static) > self.max_fields:
            self._static.popitem(last=False)

    def _compute_static(self, dst: int) -> StaticField:
        graph = self.graph
        if not 0 <= dst < graph.n_nodes:
            raise IndexError(f"node {dst} out of range 0..{graph.n_nodes - 1}")
        dist, pred = dijkstra(self._reverse, directed=True, indices=dst, return_predecessors=True)
        # pred[v] is the next hop from v: the edge v -> pred[v] is v's out-edge at the place
        # of pred[v] among its heads (they are sorted), i.e. after those smaller than it.
        heads = self._heads_out
        place = (heads[0] < pred).astype(np.int32)
        for k in range(1, len(heads)):
            place += heads[k] < pred
        next_edge = np.where(pred >= 0, self._first_out + place, -1).astype(np.int32)
        seconds = np.asarray(dist, dtype=np.float64).astype(np.float32)
        seconds.setflags(write=False)
        next_edge.setflags(write=False)
        return StaticField(dst, seconds, next_edge)

    def leg(self, origin: int, dst: int) -> Leg:
        """The free-flow route ``origin -> dst`` along the tree to ``dst`` (cached)."""
        key = (origin, dst)
        found = self._legs.get(key)
        if found is not None:
            self._legs.move_to_end(key)
            return found
        static = self.static(dst)
        if not np.isfinite(static.seconds[origin]):
            leg = Leg(origin, dst, np.zeros(0, dtype=np.int64), np.array([np.inf]))
        else:
            edges: list[int] = []
            node = origin
            # Read through memoryviews: an element is a Python int at once.
            next_edge = static.next_edge.data
            heads = self.graph.edge_dst.data
            # A walk down the tree: once per leg (at assignment or departure), never per ping.
            for _ in range(self.graph.n_nodes):
                if node == dst:
                    break
                e = next_edge[node]
                edges.append(e)
                node = heads[e]
            path = np.asarray(edges, dtype=np.int64)
            leg = Leg(origin, dst, path, path_suffix(path, self.base_time_s))
        self._legs[key] = leg
        while len(self._legs) > self.max_legs:
            self._legs.popitem(last=False)
        return leg
