"""The streets the map page draws: the road graph as a compact JSON document.

The graph's directed edges are folded into undirected segments and chained into polylines
(a chain runs through nodes of degree two whose two segments have the same road class), so
the page draws a few thousand lines instead of tens of thousands of edges. Coordinates are
integers of 1e-5 degree (about a metre), each polyline stored as its first point followed by
deltas, which keeps the document small before it is even compressed.

Document::

    {"region": "andorra", "attribution": "Map data © OpenStreetMap contributors, ODbL",
     "bbox": [min_lat, min_lon, max_lat, max_lon], "scale": 100000,
     "classes": ["motorway", "trunk", ...],
     "lines": [[class_index, lat0, lon0, dlat1, dlon1, dlat2, dlon2, ...], ...]}
"""

from __future__ import annotations

import gzip
import itertools
from typing import Any

import numpy as np
import orjson

from eta_engine.roads import RoadGraph

SCALE = 100_000


def road_geometry(graph: RoadGraph) -> dict[str, Any]:
    """The document above, for ``graph``."""
    lat = np.round(graph.node_lat * SCALE).astype(np.int64)
    lon = np.round(graph.node_lon * SCALE).astype(np.int64)
    src = graph.edge_src
    dst = graph.edge_dst
    lo = np.minimum(src, dst)
    hi = np.maximum(src, dst)
    pairs, first = np.unique(np.stack([lo, hi], axis=1), axis=0, return_index=True)
    classes = graph.edge_class[first]
    neighbours: dict[int, list[tuple[int, int, int]]] = {}
    for i, ((a, b), cls) in enumerate(zip(pairs.tolist(), classes.tolist(), strict=True)):
        neighbours.setdefault(a, []).append((b, cls, i))
        neighbours.setdefault(b, []).append((a, cls, i))

    def through(node: int) -> bool:
        """A node a chain passes through (rather than ends at)."""
        links = neighbours[node]
        return len(links) == 2 and links[0][1] == links[1][1]

    used = np.zeros(len(pairs), dtype=bool)
    lines: list[list[int]] = []

    def walk(start: int, link: tuple[int, int, int]) -> None:
        node, cls, seg = link
        used[seg] = True
        chain = [start, node]
        while through(node) and node != start:
            nxt = next((n for n in neighbours[node] if not used[n[2]]), None)
            if nxt is None:
                break
            used[nxt[2]] = True
            node = nxt[0]
            chain.append(node)
        row = [cls, int(lat[chain[0]]), int(lon[chain[0]])]
        for prev, cur in itertools.pairwise(chain):
            row.append(int(lat[cur] - lat[prev]))
            row.append(int(lon[cur] - lon[prev]))
        lines.append(row)

    for node in sorted(neighbours):
        if through(node):
            continue
        for link in neighbours[node]:
            if not used[link[2]]:
                walk(node, link)
    for node in sorted(neighbours):  # what is left are loops of through-nodes
        for link in neighbours[node]:
            if not used[link[2]]:
                walk(node, link)
    min_lat, min_lon, max_lat, max_lon = graph.bbox
    return {
        "region": graph.region,
        "attribution": graph.attribution,
        "bbox": [min_lat, min_lon, max_lat, max_lon],
        "scale": SCALE,
        "classes": list(graph.class_names),
        "lines": lines,
    }


def road_blobs(graph: RoadGraph) -> tuple[bytes, bytes]:
    """The document as JSON bytes, plain and gzip-compressed (built once at start)."""
    raw = orjson.dumps(road_geometry(graph))
    return raw, gzip.compress(raw, compresslevel=6, mtime=0)
