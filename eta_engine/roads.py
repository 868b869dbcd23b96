"""The drivable road graph: map-matching (KD-trees) and shortest travel times (Dijkstra).

A :class:`RoadGraph` is loaded from the ``.npz`` that :mod:`eta_engine.osm_build` writes (see
that module for the format and how ways become edges). It is pure: apart from reading its own
data file it does no I/O, reads no clock and keeps no global state; the KD-trees and sparse
matrices it needs are built lazily once and cached on the instance. All arrays it exposes are
read-only.

Coordinates and distances
    Map-matching works in a local equirectangular projection centred on the graph's bounding
    box (x east, y north, metres). Over a region of a few tens of kilometres, such as Andorra,
    its scale error is well under 0.5 %, which does not change which road is nearest; all
    distances these methods return are in that projection (:meth:`RoadGraph.project`).
    Edge lengths (``edge_length_m``) are haversine metres from the build.

Times
    An edge's free-flow time is ``length / speed`` (``edge_time_s``). Routing methods accept
    either per-edge multiplicative ``speed_factors`` (1 = free flow, 2 = twice as slow,
    ``inf`` = closed) or absolute per-edge times ``edge_time_s``, both indexed like the edges.

Edges are sorted by ``(src, dst)`` with each directed node pair at most once, so edge ``i`` is
entry ``i`` of the CSR adjacency matrix and per-edge weights need no permutation.
"""

import json
import math
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from importlib import resources
from typing import IO, Any, TypeVar

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Version of the ``.npz`` layout this module reads (and ``osm_build`` writes).
FORMAT_VERSION = 1
ATTRIBUTION = "Map data © OpenStreetMap contributors, ODbL"
DEFAULT_DATA = "data/andorra.npz"
EARTH_RADIUS_M = 6_371_008.8

#: Free-flow edge times are at least this long. Two OSM nodes can share a coordinate; a zero
#: weight would be an "explicit zero" that scipy's sparse graph code may treat as no edge.
MIN_EDGE_TIME_S = 1e-3
#: Edges are cut into pieces no longer than this for the map-matching index (see
#: :meth:`RoadGraph.nearest_edges`). Shorter pieces mean fewer fallback searches, more memory.
INDEX_PIECE_M = 40.0
#: Nearest index pieces examined per point before the exactness check.
INDEX_K = 24

_REQUIRED = (
    "node_lat",
    "node_lon",
    "node_osm_id",
    "edge_src",
    "edge_dst",
    "edge_length_m",
    "edge_speed_kph",
    "edge_class",
    "edge_way_id",
    "class_names",
)
_METADATA = ("region", "source_file", "source_sha256", "source_timestamp", "build_params")


_Scalar = TypeVar("_Scalar", bound=np.generic)


def _readonly(array: npt.NDArray[_Scalar]) -> npt.NDArray[_Scalar]:
    """Freeze an array the graph owns, so cached trees and matrices cannot go stale."""
    array.setflags(write=False)
    return array


class RoadGraph:
    """A directed drivable road graph with map-matching and travel-time queries.

    Invariants (checked by the constructor, ``ValueError`` otherwise): edge arrays have one
    entry per edge, endpoints are valid node indices, ``(src, dst)`` pairs are strictly
    increasing (sorted, no duplicates), there are no self-loops, lengths are finite and
    non-negative, speeds finite and positive. The graph is expected (not checked) to be
    strongly connected, as ``osm_build`` makes it; if a query's target is unreachable the
    result is ``inf``, never an exception.

    Node and edge arguments are indices (``0 <= i < n_nodes``), ``IndexError`` otherwise.
    """

    def __init__(
        self,
        *,
        node_lat: npt.ArrayLike,
        node_lon: npt.ArrayLike,
        node_osm_id: npt.ArrayLike,
        edge_src: npt.ArrayLike,
        edge_dst: npt.ArrayLike,
        edge_length_m: npt.ArrayLike,
        edge_speed_kph: npt.ArrayLike,
        edge_class: npt.ArrayLike,
        edge_way_id: npt.ArrayLike,
        class_names: Sequence[str],
        region: str = "",
        attribution: str = ATTRIBUTION,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Build from arrays (copied, then made read-only); see the class invariants."""
        self.node_lat: FloatArray = _readonly(np.array(node_lat, dtype=np.float64))
        self.node_lon: FloatArray = _readonly(np.array(node_lon, dtype=np.float64))
        self.node_osm_id: IntArray = _readonly(np.array(node_osm_id, dtype=np.int64))
        self.edge_src: IntArray = _readonly(np.array(edge_src, dtype=np.int64))
        self.edge_dst: IntArray = _readonly(np.array(edge_dst, dtype=np.int64))
        self.edge_length_m: FloatArray = _readonly(np.array(edge_length_m, dtype=np.float64))
        self.edge_speed_kph: FloatArray = _readonly(np.array(edge_speed_kph, dtype=np.float64))
        self.edge_class: IntArray = _readonly(np.array(edge_class, dtype=np.int64))
        self.edge_way_id: IntArray = _readonly(np.array(edge_way_id, dtype=np.int64))
        self.class_names: tuple[str, ...] = tuple(str(c) for c in class_names)
        self.region = region
        self.attribution = attribution
        self.metadata: dict[str, str] = dict(metadata or {})
        self._validate()

    def _validate(self) -> None:
        n, m = len(self.node_lat), len(self.edge_src)
        if n == 0 or m == 0:
            raise ValueError("a road graph needs at least one node and one edge")
        if len(self.node_lon) != n or len(self.node_osm_id) != n:
            raise ValueError("node arrays differ in length")
        edge_arrays = (
            self.edge_dst,
            self.edge_length_m,
            self.edge_speed_kph,
            self.edge_class,
            self.edge_way_id,
        )
        if any(a.shape != (m,) for a in (self.edge_src, *edge_arrays)):
            raise ValueError("edge arrays differ in length")
        if not (np.isfinite(self.node_lat).all() and np.isfinite(self.node_lon).all()):
            raise ValueError("node coordinates must be finite")
        if (
            min(self.edge_src.min(), self.edge_dst.min()) < 0
            or max(self.edge_src.max(), self.edge_dst.max()) >= n
        ):
            raise ValueError("edge endpoint out of range")
        if np.any(self.edge_src == self.edge_dst):
            raise ValueError("self-loop edge")
        if np.any(np.diff(self._edge_keys) <= 0):
            raise ValueError("edges must be sorted by (src, dst) without duplicates")
        if not (np.isfinite(self.edge_length_m).all() and (self.edge_length_m >= 0).all()):
            raise ValueError("edge lengths must be finite and >= 0")
        if not (np.isfinite(self.edge_speed_kph).all() and (self.edge_speed_kph > 0).all()):
            raise ValueError("edge speeds must be finite and > 0")
        if self.edge_class.min() < 0 or self.edge_class.max() >= len(self.class_names):
            raise ValueError("edge class out of range of class_names")

    # ----------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | os.PathLike[str] | IO[bytes]) -> "RoadGraph":
        """Load a graph written by :func:`eta_engine.osm_build.build_graph`.

        Raises ``ValueError`` if the file lacks an array or has another format version.
        """
        with np.load(path, allow_pickle=False) as npz:
            missing = [name for name in _REQUIRED if name not in npz.files]
            if missing:
                raise ValueError(f"road graph file lacks arrays: {', '.join(missing)}")
            version = int(npz["format_version"]) if "format_version" in npz.files else -1
            if version != FORMAT_VERSION:
                raise ValueError(f"road graph format {version}, expected {FORMAT_VERSION}")
            arrays = {name: npz[name] for name in _REQUIRED}
            metadata = {name: str(npz[name]) for name in _METADATA if name in npz.files}
            attribution = str(npz["attribution"]) if "attribution" in npz.files else ATTRIBUTION
        return cls(
            node_lat=arrays["node_lat"],
            node_lon=arrays["node_lon"],
            node_osm_id=arrays["node_osm_id"],
            edge_src=arrays["edge_src"],
            edge_dst=arrays["edge_dst"],
            edge_length_m=arrays["edge_length_m"],
            edge_speed_kph=arrays["edge_speed_kph"],
            edge_class=arrays["edge_class"],
            edge_way_id=arrays["edge_way_id"],
            class_names=[str(c) for c in arrays["class_names"]],
            region=metadata.get("region", ""),
            attribution=attribution,
            metadata=metadata,
        )

    @classmethod
    def default(cls) -> "RoadGraph":
        """Load the committed default region (Andorra, ``eta_engine/data/andorra.npz``).

        Each call loads a fresh instance (no module-level cache); callers share one.
        """
        resource = resources.files("eta_engine").joinpath(DEFAULT_DATA)
        with resource.open("rb") as stream:
            return cls.load(stream)

    # -------------------------------------------------------------------------- properties

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return len(self.node_lat)

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return len(self.edge_src)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """``(min_lat, min_lon, max_lat, max_lon)`` of the nodes, degrees."""
        return (
            float(self.node_lat.min()),
            float(self.node_lon.min()),
            float(self.node_lat.max()),
            float(self.node_lon.max()),
        )

    @property
    def build_params(self) -> dict[str, Any]:
        """The build rules recorded in the file (empty if it recorded none)."""
        raw = self.metadata.get("build_params", "")
        return dict(json.loads(raw)) if raw else {}

    @cached_property
    def edge_time_s(self) -> FloatArray:
        """Free-flow time of each edge in seconds, at least :data:`MIN_EDGE_TIME_S`."""
        seconds = self.edge_length_m / (self.edge_speed_kph / 3.6)
        return _readonly(np.maximum(seconds, MIN_EDGE_TIME_S))

    @cached_property
    def edge_reverse(self) -> IntArray:
        """For each edge ``u->v`` the index of edge ``v->u``, or -1 on a one-way road.

        Map-matching returns one of the two directed edges of a two-way road (the lower
        index); this lets a caller switch to the twin, e.g. by the vehicle's heading.
        """
        keys = self._edge_keys
        wanted = self.edge_dst * self.n_nodes + self.edge_src
        pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        return _readonly(np.where(keys[pos] == wanted, pos, -1).astype(np.int64))

    @cached_property
    def _edge_keys(self) -> IntArray:
        # One int64 per edge that sorts like (src, dst): lets a node pair find its edge by
        # binary search. n_nodes**2 fits int64 for any graph below 3e9 nodes.
        return _readonly(self.edge_src * len(self.node_lat) + self.edge_dst)

    # -------------------------------------------------------------------------- projection

    @cached_property
    def _projection(self) -> tuple[float, float, float, float]:
        """``(lat0, lon0, metres per degree east, metres per degree north)``."""
        min_lat, min_lon, max_lat, max_lon = self.bbox
        lat0, lon0 = (min_lat + max_lat) / 2.0, (min_lon + max_lon) / 2.0
        per_degree = EARTH_RADIUS_M * math.pi / 180.0
        return lat0, lon0, per_degree * math.cos(math.radians(lat0)), per_degree

    def project(self, lats: npt.ArrayLike, lons: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Project degrees to local ``(x, y)`` metres (the frame of every returned distance)."""
        lat0, lon0, kx, ky = self._projection
        lat = np.asarray(lats, dtype=np.float64)
        lon = np.asarray(lons, dtype=np.float64)
        return (lon - lon0) * kx, (lat - lat0) * ky

    @cached_property
    def _node_xy(self) -> FloatArray:
        x, y = self.project(self.node_lat, self.node_lon)
        return _readonly(np.column_stack([x, y]))

    # ---------------------------------------------------------------------- map-matching

    @cached_property
    def _node_tree(self) -> cKDTree:
        return cKDTree(self._node_xy)

    def nearest_nodes(
        self, lats: npt.ArrayLike, lons: npt.ArrayLike
    ) -> tuple[IntArray, FloatArray]:
        """Nearest node of each point: ``(node indices, distances in metres)``.

        Inputs are equal-length 1-D arrays (or scalars, treated as length 1). When two nodes
        are equally near, either may be returned.
        """
        x, y = self.project(np.atleast_1d(lats), np.atleast_1d(lons))
        dist, idx = self._node_tree.query(np.column_stack([x, y]), k=1)
        return np.asarray(idx, dtype=np.int64), np.asarray(dist, dtype=np.float64)

    def nearest_node(self, lat: float, lon: float) -> tuple[int, float]:
        """Nearest node to one point: ``(node index, distance in metres)``."""
        idx, dist = self.nearest_nodes(np.array([lat]), np.array([lon]))
        return int(idx[0]), float(dist[0])

    @cached_property
    def _piece_index(self) -> tuple[cKDTree, IntArray, float]:
        """KD-tree over the midpoints of edge pieces: ``(tree, edge of each piece, half of
        the longest piece)``.

        Every edge is cut into ``ceil(length / INDEX_PIECE_M)`` equal pieces (at least one),
        so any point on an edge is within half a piece of some indexed midpoint.
        """
        xy = self._node_xy
        a, b = xy[self.edge_src], xy[self.edge_dst]
        length = np.hypot(*(b - a).T)
        pieces = np.maximum(1, np.ceil(length / INDEX_PIECE_M)).astype(np.int64)
        edge_of_piece = np.repeat(np.arange(self.n_edges, dtype=np.int64), pieces)
        starts = np.cumsum(pieces) - pieces
        rank = np.arange(len(edge_of_piece)) - np.repeat(starts, pieces)
        frac = (rank + 0.5) / pieces[edge_of_piece]
        mid = a[edge_of_piece] + frac[:, None] * (b - a)[edge_of_piece]
        half = float(np.max(length / pieces)) / 2.0
        return cKDTree(mid), _readonly(edge_of_piece), half

    def _edge_distance(
        self, px: FloatArray, py: FloatArray, edges: IntArray
    ) -> tuple[FloatArray, FloatArray]:
        """Exact point-to-segment distance and fraction along each edge (broadcasting).

        The segment is always evaluated from its lower-numbered node, so an edge and its
        reverse twin get bit-identical distances and ties break by edge index reliably.
        """
        src, dst = self.edge_src[edges], self.edge_dst[edges]
        lo, hi = np.minimum(src, dst), np.maximum(src, dst)
        xy = self._node_xy
        ax, ay, bx, by = xy[lo, 0], xy[lo, 1], xy[hi, 0], xy[hi, 1]
        dx, dy = bx - ax, by - ay
        norm2 = dx * dx + dy * dy
        safe = np.where(norm2 > 0.0, norm2, 1.0)
        t = np.where(norm2 > 0.0, ((px - ax) * dx + (py - ay) * dy) / safe, 0.0)
        t = np.clip(t, 0.0, 1.0)
        dist = np.hypot(px - (ax + t * dx), py - (ay + t * dy))
        return dist, np.where(src == lo, t, 1.0 - t)

    def nearest_edges(
        self, lats: npt.ArrayLike, lons: npt.ArrayLike
    ) -> tuple[IntArray, FloatArray, FloatArray]:
        """Nearest edge of each point: ``(edge indices, distances in metres, fractions)``.

        The fraction is the position of the closest point along the edge from its ``src``
        (0) to its ``dst`` (1). Among equally near edges the lowest index wins, so on a
        two-way road the result is deterministic (see :attr:`edge_reverse` for the twin).

        Exact, also for long edges: the ``INDEX_K`` nearest piece midpoints give candidate
        edges and a best distance ``d``. Any edge at distance ``<= d`` has a piece midpoint
        within ``d + h`` (``h`` = half the longest piece), so if the K-th midpoint is farther
        than that, no unseen edge can be nearer; otherwise (rare: dense junctions, points far
        off the network) all midpoints within ``d + h`` are fetched and checked.
        """
        x, y = self.project(np.atleast_1d(lats), np.atleast_1d(lons))
        tree, edge_of_piece, half = self._piece_index
        k = min(INDEX_K, len(edge_of_piece))
        mid_dist, piece = tree.query(np.column_stack([x, y]), k=k)
        mid_dist = np.asarray(mid_dist, dtype=np.float64).reshape(len(x), k)
        cand = edge_of_piece[np.asarray(piece).reshape(len(x), k)]
        dist, frac = self._edge_distance(x[:, None], y[:, None], cand)
        best_edge, best_dist, best_frac = _pick(cand, dist, frac)

        # Slack covers rounding in the midpoint and distance arithmetic.
        need = best_dist + half + 1e-6 * (1.0 + best_dist)
        unsure = np.flatnonzero((k < len(edge_of_piece)) & (mid_dist[:, -1] <= need))
        for i in unsure:
            pieces = tree.query_ball_point([x[i], y[i]], r=need[i])
            edges = np.unique(edge_of_piece[np.asarray(pieces, dtype=np.int64)])
            d_i, f_i = self._edge_distance(x[i : i + 1], y[i : i + 1], edges)
            e, d, f = _pick(edges[None, :], d_i[None, :], f_i[None, :])
            best_edge[i], best_dist[i], best_frac[i] = e[0], d[0], f[0]
        return best_edge, best_dist, best_frac

    def nearest_edge(self, lat: float, lon: float) -> tuple[int, float, float]:
        """Nearest edge to one point: ``(edge index, distance in metres, fraction)``."""
        edge, dist, frac = self.nearest_edges(np.array([lat]), np.array([lon]))
        return int(edge[0]), float(dist[0]), float(frac[0])

    # --------------------------------------------------------------------------- routing

    @cached_property
    def _indptr(self) -> IntArray:
        # Edges are sorted by src, so row u of the CSR matrix is edges[indptr[u]:indptr[u+1]].
        return np.searchsorted(self.edge_src, np.arange(self.n_nodes + 1)).astype(np.int64)

    @cached_property
    def _transpose(self) -> tuple[IntArray, IntArray, IntArray]:
        """``(edge order, column indices, row pointer)`` of the reversed graph's CSR matrix."""
        order = np.lexsort((self.edge_src, self.edge_dst)).astype(np.int64)
        indptr = np.searchsorted(self.edge_dst[order], np.arange(self.n_nodes + 1))
        return order, self.edge_src[order], indptr.astype(np.int64)

    def _times(
        self, edge_time_s: npt.ArrayLike | None = None, speed_factors: npt.ArrayLike | None = None
    ) -> FloatArray:
        """Per-edge weights in seconds; validates caller-supplied arrays."""
        times = self.edge_time_s
        for name, given in (("edge_time_s", edge_time_s), ("speed_factors", speed_factors)):
            if given is None:
                continue
            values = np.asarray(given, dtype=np.float64)
            if values.shape != (self.n_edges,):
                raise ValueError(f"{name} must have shape ({self.n_edges},)")
            # Zero would vanish from the sparse matrix and NaN poisons Dijkstra; inf = closed.
            if np.isnan(values).any() or (values <= 0).any():
                raise ValueError(f"{name} must be > 0 (inf for a closed road), no NaN")
            times = values if name == "edge_time_s" else times * values
        return times

    def _graph(self, times: FloatArray) -> csr_matrix:
        return csr_matrix((times, self.edge_dst, self._indptr), shape=(self.n_nodes,) * 2)

    def _reverse_graph(self, times: FloatArray) -> csr_matrix:
        order, indices, indptr = self._transpose
        return csr_matrix((times[order], indices, indptr), shape=(self.n_nodes,) * 2)

    def _check_nodes(self, *nodes: int) -> None:
        for node in nodes:
            if not 0 <= node < self.n_nodes:
                raise IndexError(f"node {node} out of range 0..{self.n_nodes - 1}")

    def shortest_path(
        self, src_node: int, dst_node: int, speed_factors: npt.ArrayLike | None = None
    ) -> tuple[list[int], float]:
        """Fastest path ``src_node -> dst_node``: ``(node indices incl. both ends, seconds)``.

        Edge weight is ``edge_time_s * speed_factors``. Returns ``([], inf)`` when the target
        is unreachable (only possible with ``inf`` factors), ``([src], 0.0)`` when equal.
        """
        self._check_nodes(src_node, dst_node)
        times = self._times(speed_factors=speed_factors)
        dist, pred = dijkstra(
            self._graph(times), directed=True, indices=src_node, return_predecessors=True
        )
        total = float(dist[dst_node])
        if math.isinf(total):
            return [], math.inf
        path = [dst_node]
        while path[-1] != src_node:
            path.append(int(pred[path[-1]]))
        path.reverse()
        return path, total

    def path_edges(self, nodes: Sequence[int] | npt.ArrayLike) -> IntArray:
        """Edge indices joining consecutive nodes of a path; ``ValueError`` if one is missing."""
        seq = np.asarray(nodes, dtype=np.int64)
        if len(seq) < 2:
            return np.zeros(0, dtype=np.int64)
        keys = self._edge_keys
        wanted = seq[:-1] * self.n_nodes + seq[1:]
        pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
        if np.any(keys[pos] != wanted):
            raise ValueError("consecutive nodes are not joined by an edge")
        return pos.astype(np.int64)

    def travel_time(
        self, src_node: int, dst_node: int, speed_factors: npt.ArrayLike | None = None
    ) -> float:
        """Seconds along the fastest path (free flow unless ``speed_factors`` given)."""
        return self.shortest_path(src_node, dst_node, speed_factors)[1]

    def distance_m(
        self, src_node: int, dst_node: int, speed_factors: npt.ArrayLike | None = None
    ) -> float:
        """Road metres along the *fastest* path (not the shortest one); ``inf`` if none."""
        nodes, seconds = self.shortest_path(src_node, dst_node, speed_factors)
        if math.isinf(seconds):
            return math.inf
        return float(np.sum(self.edge_length_m[self.path_edges(nodes)]))

    def time_fields_to(
        self, dst_nodes: Sequence[int] | npt.ArrayLike, edge_time_s: npt.ArrayLike | None = None
    ) -> FloatArray:
        """Fastest time from every node to each destination: shape ``(len(dst_nodes), n)``.

        Row ``j`` is the field of ``dst_nodes[j]``: ``field[j, v]`` is the travel time in
        seconds from node ``v`` to it (``inf`` if unreachable), so a ping's remaining time is
        one lookup. Computed by Dijkstra from each destination over the reversed graph.
        ``edge_time_s`` replaces the free-flow edge times (e.g. with live speeds).
        """
        dsts = np.atleast_1d(np.asarray(dst_nodes, dtype=np.int64))
        self._check_nodes(*(int(d) for d in dsts))
        if len(dsts) == 0:
            return np.zeros((0, self.n_nodes), dtype=np.float64)
        graph = self._reverse_graph(self._times(edge_time_s=edge_time_s))
        fields = dijkstra(graph, directed=True, indices=dsts)
        return np.asarray(fields, dtype=np.float64).reshape(len(dsts), self.n_nodes)

    def time_field_to(self, dst_node: int, edge_time_s: npt.ArrayLike | None = None) -> FloatArray:
        """Fastest time in seconds from every node to ``dst_node``, shape ``(n_nodes,)``."""
        field: FloatArray = self.time_fields_to([dst_node], edge_time_s)[0]
        return field

    def times_to(
        self,
        dst_node: int,
        src_nodes: Sequence[int] | npt.ArrayLike,
        edge_time_s: npt.ArrayLike | None = None,
        *,
        limit_s: float = math.inf,
    ) -> FloatArray:
        """Fastest time in seconds from each of ``src_nodes`` to ``dst_node``: exactly
        ``time_field_to(dst_node, edge_time_s)[src_nodes]``, for a few sources.

        ``limit_s`` is a hint, the time the farthest source is expected to be from
        ``dst_node``: Dijkstra from the destination first settles only the nodes within it,
        and searches again without a limit if a source was not reached. A bounded search
        settles each node within the bound from the same sums as the whole search does, so
        the result does not depend on the hint, only the time it takes.
        """
        srcs = np.atleast_1d(np.asarray(src_nodes, dtype=np.int64))
        self._check_nodes(dst_node, *(int(s) for s in srcs))
        if edge_time_s is None or edge_time_s is self.edge_time_s:
            graph = self._free_reverse
        else:
            graph = self._reverse_graph(self._times(edge_time_s=edge_time_s))
        found = np.zeros(len(srcs))
        for limit in (limit_s, math.inf) if math.isfinite(limit_s) else (math.inf,):
            field = dijkstra(graph, directed=True, indices=dst_node, limit=limit)
            found = np.asarray(field, dtype=np.float64)[srcs]
            if np.isfinite(found).all():
                break
        return found

    @cached_property
    def _free_reverse(self) -> csr_matrix:
        """The reversed graph's CSR matrix at free-flow times (see :meth:`times_to`)."""
        return self._reverse_graph(self._times())


def _pick(
    edges: IntArray, dist: FloatArray, frac: FloatArray
) -> tuple[IntArray, FloatArray, FloatArray]:
    """Row-wise nearest candidate, ties to the lowest edge index."""
    best = dist.min(axis=1)
    big = np.iinfo(np.int64).max
    edge = np.where(dist == best[:, None], edges, big).min(axis=1)
    col = np.argmax((edges == edge[:, None]) & (dist == best[:, None]), axis=1)
    rows = np.arange(len(edges))
    return edge.astype(np.int64), best.astype(np.float64), frac[rows, col].astype(np.float64)


def haversine_m(
    lat1: npt.NDArray[np.float64],
    lon1: npt.NDArray[np.float64],
    lat2: npt.NDArray[np.float64] | float,
    lon2: npt.NDArray[np.float64] | float,
) -> npt.NDArray[np.float64]:
    """Great-circle distance in metres between paired points given in degrees (or from
    each first point to one second point)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp = p2 - p1
    dl = np.radians(lon2) - np.radians(lon1)
    h = np.sin(dp / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2.0) ** 2
    distance = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return np.asarray(distance, dtype=np.float64)
