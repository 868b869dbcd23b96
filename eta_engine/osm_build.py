"""Build a compact, drivable, directed road graph from an OpenStreetMap extract.

This is a *build-time* tool. It is the one module in ``eta_engine`` that reads arbitrary files
and writes one: it turns an ``.osm.pbf`` (or plain ``.osm`` XML) extract into the ``.npz`` that
:class:`eta_engine.roads.RoadGraph` loads at run time. Nothing at run time imports it, and
``osmium`` (pyosmium, the ``osm`` extra) is imported lazily inside the PBF reader, so the
runtime never needs it. XML is parsed with the standard library only.

Usage::

    python -m eta_engine.osm_build --osm andorra.osm.pbf --out eta_engine/data/andorra.npz

Which ways are kept
-------------------
A way is kept when its ``highway`` value is one of the classes in the table below and

* it is not an area (``area=yes``);
* cars may use it: the most specific access tag present among ``motorcar``,
  ``motor_vehicle``, ``vehicle``, ``access`` (in that order, as OSM defines the hierarchy) is not
  one of ``no, private, agricultural, forestry, emergency``. So ``access=no`` +
  ``motor_vehicle=yes`` is kept, and ``access=yes`` + ``motor_vehicle=no`` is dropped.
  ``destination``, ``delivery``, ``customers`` are kept: a technician is exactly that traffic;
* it is not ``service=parking_aisle``, ``service=drive-through`` or
  ``service=emergency_access``. Aisles and drive-throughs are movement *inside* a car park or
  a shop lot; keeping them lets the router cut corners through car parks and makes pings from
  a parked van snap to an aisle instead of the street. Driveways and alleys are kept, because a
  job's address is often at the end of one;
* it is not ``oneway=reversible``/``alternating``: the direction depends on the time of day,
  which a static graph cannot know, so the way is not routable.

Direction
---------
``oneway=yes|true|1`` gives one edge per segment in way order; ``oneway=-1|reverse`` one edge
against way order; ``oneway=no|false|0`` both directions. Without an explicit value,
``junction=roundabout|circular`` and ``highway=motorway`` are one-way (OSM's implied default);
everything else is two-way. ``motorway_link`` is *not* assumed one-way (OSM leaves it to the tag).

Free-flow speed
---------------
``maxspeed`` is parsed as km/h (``"50"``, ``"50 km/h"``, ``"50kmh"``), ``mph`` or ``knots``;
``walk`` means :data:`WALK_SPEED_KPH`; a list such as ``"90;30"`` takes the smallest value
(conservative: never promise an arrival earlier than the slowest posted limit). ``none``,
``signals``, ``variable``, country-zone codes such as ``AD:urban`` and anything unparseable or
outside (0, 250] fall back to the class default below. The legal limit is used as is; the gap
between it and real free-flow speed is what live speed factors learn later.

=============== ====== ==========================================
class           km/h   why
=============== ====== ==========================================
motorway        110    grade-separated, limit 110-130 in Europe
trunk           90     expressway-like
primary         70     national roads, mixes towns and open road
secondary       60
tertiary        50
unclassified    40     minor rural roads
residential     30     town streets
living_street   10     shared space, walking pace to 20
service         20     access roads, driveways
motorway_link   60     ramps
trunk_link      50
primary_link    40
secondary_link  40
tertiary_link   30
road            30     class unknown to the mapper: assume minor
=============== ====== ==========================================

Geometry and pruning
--------------------
Every node of a kept way is a graph node (no chain simplification: it keeps edges straight, so
map-matching projects onto true road geometry, and Andorra is only ~16k nodes). A segment whose
node is missing from the extract (a way clipped at the extract border) is dropped; the rest of
the way is kept. Self-loops are dropped. When two ways give the same directed node pair, the
faster edge is kept, so ``(src, dst)`` is unique. Finally only the largest strongly connected
component is kept, so every node can reach every other node and routing never fails inside
the graph. Edge length is the haversine distance (mean Earth radius).

Output
------
One compressed ``.npz`` (written by :func:`write_npz`; readable with ``numpy.load(...,
allow_pickle=False)``), nodes sorted by OSM id and edges sorted by ``(src, dst)``:

=================== ======= =====================================================
array               dtype   meaning
=================== ======= =====================================================
node_lat, node_lon  float64 degrees (OSM precision is 1e-7 deg, kept exactly)
node_osm_id         int64
edge_src, edge_dst  int32   node indices
edge_length_m       float32 haversine metres
edge_speed_kph      float32 free-flow speed
edge_speed_tagged   bool    speed came from ``maxspeed`` rather than the class default
edge_class          int8    index into ``class_names``
edge_way_id         int64   OSM way the edge came from
class_names         str     :data:`CLASS_NAMES`
format_version      int64   :data:`FORMAT_VERSION`
region, source_file, source_sha256, source_timestamp, attribution: str scalars
build_params        str     JSON of the rules above (defaults, excluded values...)
=================== ======= =====================================================
"""

import argparse
import bz2
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

# The reader owns the file format's constants; the builder writes what it reads.
from eta_engine.roads import ATTRIBUTION, EARTH_RADIUS_M, FORMAT_VERSION, haversine_m

#: Default free-flow speed (km/h) per drivable highway class; see the module docstring.
DEFAULT_SPEED_KPH: dict[str, float] = {
    "motorway": 110.0,
    "trunk": 90.0,
    "primary": 70.0,
    "secondary": 60.0,
    "tertiary": 50.0,
    "unclassified": 40.0,
    "residential": 30.0,
    "living_street": 10.0,
    "service": 20.0,
    "motorway_link": 60.0,
    "trunk_link": 50.0,
    "primary_link": 40.0,
    "secondary_link": 40.0,
    "tertiary_link": 30.0,
    "road": 30.0,
}
#: Class names in index order: ``edge_class`` values index this tuple (it never reorders,
#: because learned per-class speed factors are keyed by these indices).
CLASS_NAMES: tuple[str, ...] = tuple(DEFAULT_SPEED_KPH)
_CLASS_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASS_NAMES)}

WALK_SPEED_KPH = 7.0
MAX_PLAUSIBLE_SPEED_KPH = 250.0

ACCESS_KEYS: tuple[str, ...] = ("motorcar", "motor_vehicle", "vehicle", "access")
DENIED_ACCESS: frozenset[str] = frozenset(
    {"no", "private", "agricultural", "forestry", "emergency"}
)
EXCLUDED_SERVICE: frozenset[str] = frozenset({"parking_aisle", "drive-through", "emergency_access"})

# Only these tags are read; copying the rest out of every way would be wasted work.
_RELEVANT_KEYS: tuple[str, ...] = (
    "highway",
    "area",
    "service",
    "oneway",
    "junction",
    "maxspeed",
    *ACCESS_KEYS,
)
_SPEED_RE = re.compile(r"(\d+(?:[.,]\d+)?)\s*(km/h|kmh|kph|mph|knots)?")
_UNIT_FACTOR: dict[str | None, float] = {
    None: 1.0,
    "km/h": 1.0,
    "kmh": 1.0,
    "kph": 1.0,
    "mph": 1.609344,
    "knots": 1.852,
}


@dataclass(frozen=True, slots=True)
class BuildSummary:
    """What :func:`build_graph` wrote. ``bbox`` is ``(min_lat, min_lon, max_lat, max_lon)``.

    ``n_nodes_all``/``n_edges_all`` count the drivable graph before keeping only the largest
    strongly connected component; ``n_nodes``/``n_edges`` are what the file holds.
    """

    region: str
    source_file: str
    out_path: Path
    out_bytes: int
    n_ways: int
    n_nodes_all: int
    n_edges_all: int
    n_nodes: int
    n_edges: int
    n_speed_tagged_edges: int
    total_length_km: float
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True, slots=True)
class _Way:
    """A drivable way reduced to what the graph needs."""

    way_id: int
    node_ids: tuple[int, ...]
    class_index: int
    forward: bool
    backward: bool
    speed_kph: float
    speed_tagged: bool


@dataclass(frozen=True, slots=True)
class _Extract:
    """Drivable ways plus the coordinates of (at least) every node they reference."""

    ways: list[_Way]
    coords: dict[int, tuple[float, float]]
    source_timestamp: str


def parse_maxspeed(value: str | None) -> float | None:
    """Return the speed in km/h that a ``maxspeed`` value states, or ``None`` to fall back.

    Contract: returns a float in (0, 250] or ``None``; never raises. See the module docstring
    for the accepted forms.
    """
    if value is None:
        return None
    speeds: list[float] = []
    for part in value.split(";"):
        text = part.strip().lower()
        if text == "walk":
            speeds.append(WALK_SPEED_KPH)
            continue
        match = _SPEED_RE.fullmatch(text)
        if match is None:
            continue  # "none", "signals", "AD:urban", typos: the class default is better
        kph = float(match.group(1).replace(",", ".")) * _UNIT_FACTOR[match.group(2)]
        if 0.0 < kph <= MAX_PLAUSIBLE_SPEED_KPH:
            speeds.append(kph)
    return min(speeds) if speeds else None


def _car_allowed(tags: Mapping[str, str]) -> bool:
    """Apply the OSM access hierarchy: the most specific tag present decides."""
    for key in ACCESS_KEYS:
        value = tags.get(key)
        if value is not None:
            return value.strip().lower() not in DENIED_ACCESS
    return True


def _directions(tags: Mapping[str, str]) -> tuple[bool, bool] | None:
    """Return ``(forward, backward)`` travel permission, or ``None`` if not routable."""
    oneway = tags.get("oneway", "").strip().lower()
    if oneway in ("yes", "true", "1"):
        return True, False
    if oneway in ("-1", "reverse"):
        return False, True
    if oneway in ("no", "false", "0"):
        return True, True
    if oneway in ("reversible", "alternating"):
        return None
    implied = tags.get("junction") in ("roundabout", "circular") or tags.get("highway") == (
        "motorway"
    )
    return True, not implied


def _way_from_tags(way_id: int, tags: Mapping[str, str], node_ids: Sequence[int]) -> _Way | None:
    """Classify one OSM way; ``None`` when it is not part of the drivable graph."""
    class_index = _CLASS_INDEX.get(tags.get("highway", ""))
    if class_index is None or len(node_ids) < 2:
        return None
    if tags.get("area") == "yes" or tags.get("service") in EXCLUDED_SERVICE:
        return None
    if not _car_allowed(tags):
        return None
    directions = _directions(tags)
    if directions is None:
        return None
    tagged = parse_maxspeed(tags.get("maxspeed"))
    speed = DEFAULT_SPEED_KPH[CLASS_NAMES[class_index]] if tagged is None else tagged
    return _Way(
        way_id=way_id,
        node_ids=tuple(node_ids),
        class_index=class_index,
        forward=directions[0],
        backward=directions[1],
        speed_kph=speed,
        speed_tagged=tagged is not None,
    )


def _read_pbf(path: Path) -> _Extract:
    """Read with pyosmium (the ``osm`` extra), imported here so run time never needs it."""
    try:
        import osmium  # lazy on purpose: a build-time extra, see the module docstring
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "reading .osm.pbf needs pyosmium: pip install 'fieldstream[osm]'"
        ) from exc

    reader = osmium.io.Reader(str(path), osmium.osm.osm_entity_bits.NOTHING)
    try:
        header = reader.header()
        timestamp = header.get("osmosis_replication_timestamp", "") or header.get("timestamp", "")
    finally:
        reader.close()

    ways: list[_Way] = []
    coords: dict[int, tuple[float, float]] = {}
    # One pass: pyosmium's location index (C++) attaches coordinates to way nodes, so Python
    # keeps no table of every node in the file, only those of the ways it keeps.
    processor = osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY).with_locations()
    for obj in processor:
        if not isinstance(obj, osmium.osm.Way):
            continue
        highway = obj.tags.get("highway")
        if highway not in _CLASS_INDEX:
            continue
        tags = {k: v for k in _RELEVANT_KEYS if (v := obj.tags.get(k)) is not None}
        refs = [nd.ref for nd in obj.nodes]
        way = _way_from_tags(int(obj.id), tags, refs)
        if way is None:
            continue
        ways.append(way)
        # The object is only valid inside this iteration, so copy coordinates out now.
        for nd in obj.nodes:
            if nd.location.valid():
                coords[int(nd.ref)] = (float(nd.location.lat), float(nd.location.lon))
    return _Extract(ways=ways, coords=coords, source_timestamp=str(timestamp))


def _open_maybe_compressed(path: Path) -> IO[bytes] | gzip.GzipFile | bz2.BZ2File:
    """Open ``.osm``, ``.osm.gz`` or ``.osm.bz2`` for binary reading."""
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    return path.open("rb")


def _read_xml(path: Path) -> _Extract:
    """Read OSM XML with the standard library, in one streaming pass.

    All node coordinates are kept because OSM XML does not promise nodes come before the ways
    that use them (hand-written files often do not); the ways are resolved at the end.
    """
    ways: list[_Way] = []
    coords: dict[int, tuple[float, float]] = {}
    with _open_maybe_compressed(path) as stream:
        events: Iterator[tuple[str, ET.Element]] = ET.iterparse(stream, events=("start", "end"))
        _, root = next(events)
        timestamp = root.get("timestamp", "")
        for event, elem in events:
            if event != "end" or elem.tag not in ("node", "way", "relation"):
                continue
            # JOSM files mark deleted objects rather than omitting them.
            deleted = elem.get("action") == "delete" or elem.get("visible") == "false"
            if not deleted and elem.tag == "node":
                lat, lon = elem.get("lat"), elem.get("lon")
                if lat is not None and lon is not None:
                    coords[int(elem.get("id", "0"))] = (float(lat), float(lon))
            elif not deleted and elem.tag == "way":
                tags = {t.get("k", ""): t.get("v", "") for t in elem.iter("tag")}
                refs = [int(nd.get("ref", "0")) for nd in elem.iter("nd")]
                way = _way_from_tags(int(elem.get("id", "0")), tags, refs)
                if way is not None:
                    ways.append(way)
            # Drop parsed children so memory stays flat on large files.
            root.clear()
    return _Extract(ways=ways, coords=coords, source_timestamp=timestamp)


def _read_extract(osm_path: Path) -> _Extract:
    """Dispatch on the file name: ``*.pbf`` via pyosmium, ``*.osm``/``*.xml`` (optionally
    ``.gz``/``.bz2``) via the standard library. Raises ``ValueError`` for anything else."""
    name = osm_path.name.lower()
    if name.endswith(".pbf"):
        return _read_pbf(osm_path)
    for suffix in (".osm", ".xml", ".osm.gz", ".osm.bz2", ".xml.gz", ".xml.bz2"):
        if name.endswith(suffix):
            return _read_xml(osm_path)
    raise ValueError(f"unsupported OSM file type: {osm_path.name} (want .osm.pbf or .osm)")


def _assemble(extract: _Extract) -> tuple[dict[str, npt.NDArray[np.generic]], int, int]:
    """Turn ways into graph arrays; returns ``(arrays, n_nodes_all, n_edges_all)``."""
    src_ids: list[int] = []
    dst_ids: list[int] = []
    way_idx: list[int] = []
    coords = extract.coords
    for wi, way in enumerate(extract.ways):
        for a, b in pairwise(way.node_ids):
            if a == b or a not in coords or b not in coords:
                continue
            if way.forward:
                src_ids.append(a)
                dst_ids.append(b)
                way_idx.append(wi)
            if way.backward:
                src_ids.append(b)
                dst_ids.append(a)
                way_idx.append(wi)
    if not src_ids:
        raise ValueError("the extract contains no drivable road segments")

    src_osm = np.asarray(src_ids, dtype=np.int64)
    dst_osm = np.asarray(dst_ids, dtype=np.int64)
    wsel = np.asarray(way_idx, dtype=np.int64)
    node_osm_id = np.unique(np.concatenate([src_osm, dst_osm]))
    src = np.searchsorted(node_osm_id, src_osm)
    dst = np.searchsorted(node_osm_id, dst_osm)
    lat = np.array([coords[int(n)][0] for n in node_osm_id], dtype=np.float64)
    lon = np.array([coords[int(n)][1] for n in node_osm_id], dtype=np.float64)

    ways = extract.ways
    speed = np.array([w.speed_kph for w in ways], dtype=np.float64)[wsel]
    tagged = np.array([w.speed_tagged for w in ways], dtype=np.bool_)[wsel]
    klass = np.array([w.class_index for w in ways], dtype=np.int8)[wsel]
    way_id = np.array([w.way_id for w in ways], dtype=np.int64)[wsel]
    length = haversine_m(lat[src], lon[src], lat[dst], lon[dst])

    # Parallel edges (two ways over the same node pair) would be summed by scipy's sparse
    # constructors, so keep exactly one per (src, dst): the fastest, ties by way id.
    order = np.lexsort((way_id, length / speed, dst, src))
    src, dst = src[order], dst[order]
    first = np.ones(len(order), dtype=np.bool_)
    first[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
    keep_e = order[first]
    src, dst = src[first], dst[first]
    n_nodes_all, n_edges_all = len(node_osm_id), len(src)

    # Largest strongly connected component: outside it some trips would be impossible.
    n = len(node_osm_id)
    adjacency = csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    _, labels = connected_components(adjacency, directed=True, connection="strong")
    big = int(np.argmax(np.bincount(labels)))
    node_keep = labels == big
    edge_keep = node_keep[src] & node_keep[dst]
    new_index = np.cumsum(node_keep) - 1  # monotone, so edges stay sorted by (src, dst)

    arrays: dict[str, npt.NDArray[np.generic]] = {
        "node_lat": lat[node_keep],
        "node_lon": lon[node_keep],
        "node_osm_id": node_osm_id[node_keep],
        "edge_src": new_index[src[edge_keep]].astype(np.int32),
        "edge_dst": new_index[dst[edge_keep]].astype(np.int32),
        "edge_length_m": length[keep_e][edge_keep].astype(np.float32),
        "edge_speed_kph": speed[keep_e][edge_keep].astype(np.float32),
        "edge_speed_tagged": tagged[keep_e][edge_keep],
        "edge_class": klass[keep_e][edge_keep],
        "edge_way_id": way_id[keep_e][edge_keep],
        "class_names": np.array(CLASS_NAMES, dtype=np.str_),
    }
    return arrays, n_nodes_all, n_edges_all


def write_npz(path: Path, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
    """Write an ``.npz`` that ``numpy.load`` reads, byte-for-byte reproducible.

    ``numpy.savez_compressed`` stamps each member with the current time, so rebuilding the same
    extract would change the committed file; here every member gets a fixed 1980-01-01 stamp.
    The file is written next to ``path`` and renamed into place, so a failed build never leaves
    a truncated graph behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        ):
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, np.asarray(array), allow_pickle=False)
                zf.writestr(info, buffer.getvalue(), compresslevel=9)
        # mkstemp creates the file private (0600); a built graph is meant to be shared.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _region_from_name(path: Path) -> str:
    """``andorra.osm.pbf`` -> ``andorra``."""
    name = path.name
    for suffix in (".gz", ".bz2", ".pbf", ".osm", ".xml"):
        name = name.removesuffix(suffix)
    return name or "region"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_graph(osm_path: Path, out_path: Path, region: str | None = None) -> BuildSummary:
    """Build the drivable graph of ``osm_path`` and write it to ``out_path`` (``.npz``).

    Contract: the output holds the largest strongly connected component of the drivable
    network, nodes sorted by OSM id, edges sorted by ``(src, dst)`` with no duplicate pair and
    no self-loop, in the format of the module docstring. ``region`` defaults to the input file
    name without its OSM suffixes. The same input always gives the same bytes.
    Raises ``ValueError`` for an unsupported file type or an extract without drivable roads,
    ``RuntimeError`` for a ``.pbf`` when pyosmium is not installed.
    """
    osm_path = Path(osm_path)
    out_path = Path(out_path)
    region_name = region if region is not None else _region_from_name(osm_path)
    extract = _read_extract(osm_path)
    arrays, n_nodes_all, n_edges_all = _assemble(extract)

    build_params = {
        "default_speed_kph": DEFAULT_SPEED_KPH,
        "walk_speed_kph": WALK_SPEED_KPH,
        "max_plausible_speed_kph": MAX_PLAUSIBLE_SPEED_KPH,
        "access_keys": list(ACCESS_KEYS),
        "denied_access": sorted(DENIED_ACCESS),
        "excluded_service": sorted(EXCLUDED_SERVICE),
        "implied_oneway": ["junction=roundabout", "junction=circular", "highway=motorway"],
        "component": "largest strongly connected",
        "earth_radius_m": EARTH_RADIUS_M,
    }
    meta: dict[str, npt.NDArray[np.generic]] = {
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "region": np.array(region_name, dtype=np.str_),
        "source_file": np.array(osm_path.name, dtype=np.str_),
        "source_sha256": np.array(_sha256(osm_path), dtype=np.str_),
        "source_timestamp": np.array(extract.source_timestamp, dtype=np.str_),
        "attribution": np.array(ATTRIBUTION, dtype=np.str_),
        "build_params": np.array(json.dumps(build_params, sort_keys=True), dtype=np.str_),
    }
    write_npz(out_path, {**arrays, **meta})

    lat, lon = arrays["node_lat"], arrays["node_lon"]
    return BuildSummary(
        region=region_name,
        source_file=osm_path.name,
        out_path=out_path,
        out_bytes=out_path.stat().st_size,
        n_ways=len(extract.ways),
        n_nodes_all=n_nodes_all,
        n_edges_all=n_edges_all,
        n_nodes=len(lat),
        n_edges=len(arrays["edge_src"]),
        n_speed_tagged_edges=int(np.count_nonzero(arrays["edge_speed_tagged"])),
        total_length_km=float(np.sum(arrays["edge_length_m"], dtype=np.float64) / 1000.0),
        bbox=(float(lat.min()), float(lon.min()), float(lat.max()), float(lon.max())),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m eta_engine.osm_build --osm FILE --out FILE [--region NAME]``.

    Prints a one-paragraph summary and returns the process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m eta_engine.osm_build",
        description="Build a drivable road graph (.npz) from an OpenStreetMap extract.",
    )
    parser.add_argument("--osm", type=Path, required=True, help=".osm.pbf or .osm input")
    parser.add_argument("--out", type=Path, required=True, help=".npz output")
    parser.add_argument("--region", default=None, help="region name (default: from file name)")
    args = parser.parse_args(argv)
    try:
        summary = build_graph(args.osm, args.out, region=args.region)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    min_lat, min_lon, max_lat, max_lon = summary.bbox
    print(
        f"{summary.region}: {summary.n_nodes} nodes, {summary.n_edges} directed edges "
        f"({summary.n_speed_tagged_edges} with maxspeed), {summary.total_length_km:.1f} km, "
        f"from {summary.n_ways} ways; largest strongly connected component of "
        f"{summary.n_nodes_all} nodes / {summary.n_edges_all} edges; "
        f"bbox {min_lat:.4f},{min_lon:.4f} - {max_lat:.4f},{max_lon:.4f}; "
        f"wrote {summary.out_path} ({summary.out_bytes} bytes). {ATTRIBUTION}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
