"""The static world of the simulation: the tables (parishes, job types, trades, names) and the
facts derived once from a road graph (regions, congestion weights, candidate addresses, a
dispatcher's travel-time table, fastest paths).

Everything here is deterministic and seed-free; the day's randomness lives in
:mod:`simulator.engine`.

Parishes
--------
Andorra has seven parishes. A node belongs to the parish of the nearest *centre* in
:data:`CENTRES`; Pas de la Casa is listed as a second centre of Encamp because it sits across
the Envalira pass, far from Encamp's town, and would otherwise fall to Canillo. Coordinates
are approximate town centres (to ~200 m), enough to draw parish boundaries on a road graph.

=================== ====================== ========== ======== =================================
centre              parish                 lat, lon   postcode congestion weight (why)
=================== ====================== ========== ======== =================================
Andorra la Vella    Andorra la Vella       42.5078,   AD500    1.0 (the capital, the valley
                                           1.5211              bottleneck of the CG-1/CG-2)
Escaldes-Engordany  Escaldes-Engordany     42.5094,   AD700    1.0 (same valley, shopping
                                           1.5389              streets, Caldea)
Sant Julià de Lòria Sant Julià de Lòria    42.4636,   AD600    0.6 (the Spanish border crossing)
                                           1.4912
Encamp              Encamp                 42.5345,   AD200    0.55 (CG-2 towards France)
                                           1.5800
La Massana          La Massana             42.5451,   AD400    0.5
                                           1.5147
Pas de la Casa      Encamp                 42.5427,   AD200    0.5 (the French border, skiers)
                                           1.7336
Canillo             Canillo                42.5676,   AD100    0.35
                                           1.5978
Ordino              Ordino                 42.5560,   AD300    0.3
                                           1.5333
=================== ====================== ========== ======== =================================

A road's congestion weight is its centre's weight, fading with distance from that centre
(full within 1 km, ``exp(-(d - 1 km) / 3 km)`` beyond, never below a quarter): towns jam,
mountain roads do not. Minor roads (free-flow speed under 50 km/h) take 70 % of it.

Job types
---------
Durations are lognormal: ``median`` minutes, ``spread`` = the standard deviation of the log
(0.25: 80 % of jobs within about x0.7-x1.4 of the median; 0.5: within x0.5-x1.9). Preventive
means planned work (maintenance, installs); reactive means something broke. ``value`` is the
median ticket in EUR (lognormal, spread 0.25). A job needs each part of its kit with
probability :data:`PART_NEED_PROBABILITY`, in the kit's quantity.

===================== ======================= ====== ====== ========== ===== =====================
job type              skills                  median spread kind       value kit
===================== ======================= ====== ====== ========== ===== =====================
boiler_repair         gas, heating            75     0.45   reactive   180   ignition electrode,
                                                                             gas valve, flame
                                                                             sensor
boiler_service        gas, heating            50     0.25   preventive 110   burner gasket, filter
heat_pump_repair      heating, refrigeration  95     0.45   reactive   260   expansion valve,
                                                                             R32, fan motor
ac_service            refrigeration           45     0.30   preventive 95    2 air filters, R32
appliance_repair      appliances              60     0.50   reactive   120   drain pump, door
                                                                             seal, heating element
electrical_fault      electrical              70     0.55   reactive   150   RCD breaker, junction
                                                                             box, 10 m cable
ev_charger_install    electrical              150    0.30   preventive 650   wallbox, RCD type B,
                                                                             15 m cable
elevator_maintenance  lifts                   90     0.25   preventive 220   2 door rollers, 2
                                                                             guide shoes, oil
elevator_breakdown    lifts, electrical       100    0.50   reactive   320   door operator board,
                                                                             2 door rollers
telecom_install       telecom                 80     0.35   preventive 90    ONT, 2 patch cords,
                                                                             optical socket
fibre_repair          telecom                 60     0.50   reactive   75    splice kit, patch
                                                                             cord
leak_repair           plumbing                55     0.50   reactive   110   2 fittings, valve,
                                                                             PTFE tape
water_heater_install  plumbing, gas           140    0.30   preventive 480   80 l heater,
                                                                             4 fittings
===================== ======================= ====== ====== ========== ===== =====================

Trades (:data:`TRADES`) say which skills a technician has, which job types their day is made
of (demand is generated per technician from their trade's mix, so supply and demand of each
skill match) and what share of the workforce they are.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra
from scipy.spatial import cKDTree

if TYPE_CHECKING:
    from eta_engine.roads import RoadGraph

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

EARTH_M_PER_DEG = 6_371_008.8 * math.pi / 180.0


@dataclass(frozen=True, slots=True)
class Centre:
    """A town centre that anchors a parish (see the module table)."""

    name: str
    parish: str
    lat: float
    lon: float
    postcode: str
    congestion_weight: float


CENTRES: tuple[Centre, ...] = (
    Centre("Andorra la Vella", "Andorra la Vella", 42.5078, 1.5211, "AD500", 1.0),
    Centre("Escaldes-Engordany", "Escaldes-Engordany", 42.5094, 1.5389, "AD700", 1.0),
    Centre("Sant Julià de Lòria", "Sant Julià de Lòria", 42.4636, 1.4912, "AD600", 0.6),
    Centre("Encamp", "Encamp", 42.5345, 1.5800, "AD200", 0.55),
    Centre("La Massana", "La Massana", 42.5451, 1.5147, "AD400", 0.5),
    Centre("Pas de la Casa", "Encamp", 42.5427, 1.7336, "AD200", 0.5),
    Centre("Canillo", "Canillo", 42.5676, 1.5978, "AD100", 0.35),
    Centre("Ordino", "Ordino", 42.5560, 1.5333, "AD300", 0.3),
)
PARISHES: tuple[str, ...] = tuple(dict.fromkeys(c.parish for c in CENTRES))
"""The seven parish names, used as ``region`` on events."""


@dataclass(frozen=True, slots=True)
class JobType:
    """A kind of job (see the module table)."""

    name: str
    skills: tuple[str, ...]
    parts_kit: tuple[tuple[str, int], ...]
    median_min: float
    spread: float
    maintenance: str
    value_eur: float


JOB_TYPES: tuple[JobType, ...] = (
    JobType(
        "boiler_repair",
        ("gas", "heating"),
        (("ignition_electrode", 1), ("gas_valve", 1), ("flame_sensor", 1)),
        75,
        0.45,
        "reactive",
        180,
    ),
    JobType(
        "boiler_service",
        ("gas", "heating"),
        (("burner_gasket", 1), ("boiler_filter", 1)),
        50,
        0.25,
        "preventive",
        110,
    ),
    JobType(
        "heat_pump_repair",
        ("heating", "refrigeration"),
        (("expansion_valve", 1), ("refrigerant_r32", 1), ("fan_motor", 1)),
        95,
        0.45,
        "reactive",
        260,
    ),
    JobType(
        "ac_service",
        ("refrigeration",),
        (("air_filter", 2), ("refrigerant_r32", 1)),
        45,
        0.30,
        "preventive",
        95,
    ),
    JobType(
        "appliance_repair",
        ("appliances",),
        (("drain_pump", 1), ("door_seal", 1), ("heating_element", 1)),
        60,
        0.50,
        "reactive",
        120,
    ),
    JobType(
        "electrical_fault",
        ("electrical",),
        (("rcd_breaker", 1), ("junction_box", 1), ("cable_2_5mm_m", 10)),
        70,
        0.55,
        "reactive",
        150,
    ),
    JobType(
        "ev_charger_install",
        ("electrical",),
        (("wallbox_7kw", 1), ("rcd_type_b", 1), ("cable_6mm_m", 15)),
        150,
        0.30,
        "preventive",
        650,
    ),
    JobType(
        "elevator_maintenance",
        ("lifts",),
        (("door_roller", 2), ("guide_shoe", 2), ("lift_oil", 1)),
        90,
        0.25,
        "preventive",
        220,
    ),
    JobType(
        "elevator_breakdown",
        ("lifts", "electrical"),
        (("door_operator_board", 1), ("door_roller", 2)),
        100,
        0.50,
        "reactive",
        320,
    ),
    JobType(
        "telecom_install",
        ("telecom",),
        (("fibre_ont", 1), ("patch_cord", 2), ("optical_socket", 1)),
        80,
        0.35,
        "preventive",
        90,
    ),
    JobType(
        "fibre_repair",
        ("telecom",),
        (("splice_kit", 1), ("patch_cord", 1)),
        60,
        0.50,
        "reactive",
        75,
    ),
    JobType(
        "leak_repair",
        ("plumbing",),
        (("pipe_fitting_22mm", 2), ("isolation_valve", 1), ("ptfe_tape", 1)),
        55,
        0.50,
        "reactive",
        110,
    ),
    JobType(
        "water_heater_install",
        ("plumbing", "gas"),
        (("water_heater_80l", 1), ("pipe_fitting_22mm", 4)),
        140,
        0.30,
        "preventive",
        480,
    ),
)
JOB_TYPE_BY_NAME: dict[str, JobType] = {j.name: j for j in JOB_TYPES}
PART_NEED_PROBABILITY = 0.6


@dataclass(frozen=True, slots=True)
class Trade:
    """A technician profile: skills, the job mix of their day, and their workforce share."""

    name: str
    skills: tuple[str, ...]
    job_mix: tuple[tuple[str, float], ...]
    share: float


TRADES: tuple[Trade, ...] = (
    Trade(
        "heating",
        ("gas", "heating", "plumbing"),
        (
            ("boiler_repair", 4),
            ("boiler_service", 3),
            ("water_heater_install", 1),
            ("leak_repair", 1),
        ),
        0.25,
    ),
    Trade(
        "hvac",
        ("heating", "refrigeration"),
        (("heat_pump_repair", 3), ("ac_service", 2)),
        0.10,
    ),
    Trade(
        "appliances",
        ("appliances", "electrical"),
        (("appliance_repair", 5), ("electrical_fault", 1)),
        0.20,
    ),
    Trade(
        "electrical",
        ("electrical",),
        (("electrical_fault", 4), ("ev_charger_install", 1)),
        0.15,
    ),
    Trade(
        "lifts",
        ("lifts", "electrical"),
        (("elevator_maintenance", 3), ("elevator_breakdown", 2)),
        0.10,
    ),
    Trade(
        "telecom",
        ("telecom",),
        (("telecom_install", 3), ("fibre_repair", 2)),
        0.12,
    ),
    Trade(
        "plumbing",
        ("plumbing",),
        (("leak_repair", 1),),
        0.08,
    ),
)
SKILLS: tuple[str, ...] = tuple(sorted({s for t in TRADES for s in t.skills}))

FIRST_NAMES: tuple[str, ...] = (
    "Jordi", "Marc", "Pere", "Joan", "Anna", "Marta", "Laura", "Núria", "Sergi", "Albert",
    "Carles", "Josep", "Montse", "Gemma", "Xavier", "David", "Carlos", "Miguel", "João",
    "Pierre", "Sofia", "Elena", "Ricard", "Toni", "Eva", "Laia", "Pau", "Clara", "Nuno", "Inês",
)  # fmt: skip
LAST_NAMES: tuple[str, ...] = (
    "Puig", "Soler", "Vila", "Font", "Serra", "Casals", "Riba", "Pujol", "Martí", "Rossell",
    "Cerqueda", "Armengol", "Calvó", "Mas", "Torres", "García", "Fernández", "Pereira",
    "Dupont", "Moreno", "Sánchez", "Rodrigues", "Costa", "Babot", "Naudi", "Cassany",
)  # fmt: skip
STREETS: tuple[str, ...] = (
    "Avinguda Meritxell", "Avinguda Carlemany", "Carrer Major", "Carrer de la Unió",
    "Avinguda del Fener", "Carrer dels Escalls", "Avinguda de Sant Antoni",
    "Carrer Prat de la Creu", "Carrer de la Closa", "Avinguda d'Enclar",
    "Carrer Bonaventura Armengol", "Carrer Sant Andreu", "Avinguda de les Nacions Andorranes",
    "Carrer del Pui", "Carrer de la Solana", "Camí de la Borda",
)  # fmt: skip

CELL_M = 800.0
"""Cell size of the dispatcher's travel-time table (:meth:`World.estimate_s`)."""
OFFSET_SPEED_MPS = 8.0
"""Speed assumed for the distance between a node and its cell's centre node."""
_MINOR_ROAD_KPH = 50.0
_MINOR_ROAD_WEIGHT = 0.7


@dataclass(frozen=True, slots=True)
class Leg:
    """A fastest (free-flow) path: ``nodes[i] -> nodes[i + 1]`` is edge ``edges[i]``."""

    nodes: IntArray
    edges: IntArray
    free_s: float
    length_m: float


def _bearing_deg(
    lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray
) -> FloatArray:
    """Initial compass bearing of each segment, degrees in [0, 360)."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(lon2 - lon1)
    y = np.sin(dl) * np.cos(p2)
    x = np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
    return np.asarray(np.degrees(np.arctan2(y, x)) % 360.0, dtype=np.float64)


class World:
    """Facts derived from one road graph, shared by every simulation on it.

    Build with :meth:`for_graph` (cached per graph instance, since the travel-time table
    costs a few hundred Dijkstra runs). Read-only after construction.
    """

    def __init__(self, graph: RoadGraph) -> None:
        self.graph = graph
        n = graph.n_nodes
        self.n_nodes = n
        self.lat: FloatArray = np.asarray(graph.node_lat, dtype=np.float64)
        self.lon: FloatArray = np.asarray(graph.node_lon, dtype=np.float64)
        self.lat0 = float(self.lat.mean())
        self.m_per_deg_lon = EARTH_M_PER_DEG * math.cos(math.radians(self.lat0))
        self.x: FloatArray = (self.lon - float(self.lon.mean())) * self.m_per_deg_lon
        self.y: FloatArray = (self.lat - self.lat0) * EARTH_M_PER_DEG
        src = np.asarray(graph.edge_src, dtype=np.int64)
        dst = np.asarray(graph.edge_dst, dtype=np.int64)
        self.edge_src: IntArray = src
        self.edge_dst: IntArray = dst
        self.edge_time_s: FloatArray = np.asarray(graph.edge_time_s, dtype=np.float64)
        self.edge_length_m: FloatArray = np.asarray(graph.edge_length_m, dtype=np.float64)
        speed = np.asarray(graph.edge_speed_kph, dtype=np.float64)
        self.edge_bearing: FloatArray = _bearing_deg(
            self.lat[src], self.lon[src], self.lat[dst], self.lon[dst]
        )

        # Parish of each node: the nearest centre.
        cx = (np.array([c.lon for c in CENTRES]) - float(self.lon.mean())) * self.m_per_deg_lon
        cy = (np.array([c.lat for c in CENTRES]) - self.lat0) * EARTH_M_PER_DEG
        d = np.hypot(self.x[:, None] - cx[None, :], self.y[:, None] - cy[None, :])
        self.node_centre: IntArray = np.argmin(d, axis=1).astype(np.int64)
        parish_index = {p: i for i, p in enumerate(PARISHES)}
        centre_parish = np.array([parish_index[c.parish] for c in CENTRES], dtype=np.int64)
        self.node_parish: IntArray = centre_parish[self.node_centre]
        centre_weight = np.array([c.congestion_weight for c in CENTRES])
        d_centre = d[np.arange(n), self.node_centre]
        fade = np.maximum(0.25, np.exp(-np.maximum(0.0, d_centre - 1000.0) / 3000.0))
        node_weight = centre_weight[self.node_centre] * fade
        self.edge_congestion: FloatArray = node_weight[src] * np.where(
            speed < _MINOR_ROAD_KPH, _MINOR_ROAD_WEIGHT, 1.0
        )
        self.edge_major: BoolArray = speed >= _MINOR_ROAD_KPH

        # Candidate addresses and home bases: nodes on minor roads (people do not live on
        # the trunk road), each reachable from everywhere since the graph is one component.
        minor = np.zeros(n, dtype=bool)
        minor[src[speed < _MINOR_ROAD_KPH]] = True
        self.address_nodes: IntArray = np.flatnonzero(minor).astype(np.int64)
        if len(self.address_nodes) == 0:
            self.address_nodes = np.arange(n, dtype=np.int64)

        indptr = np.searchsorted(src, np.arange(n + 1)).astype(np.int64)
        self.csr = csr_matrix((self.edge_time_s, dst, indptr), shape=(n, n))
        self._edge_keys: IntArray = src * n + dst
        mid_x = (self.x[src] + self.x[dst]) / 2.0
        mid_y = (self.y[src] + self.y[dst]) / 2.0
        self.edge_tree = cKDTree(np.column_stack([mid_x, mid_y]))
        self._build_cells()

    def _build_cells(self) -> None:
        """The dispatcher's table: free-flow times between the centre nodes of ~800 m cells."""
        gx = np.floor((self.x - self.x.min()) / CELL_M).astype(np.int64)
        gy = np.floor((self.y - self.y.min()) / CELL_M).astype(np.int64)
        key = gx * (int(gy.max()) + 1) + gy
        cells, cell_of = np.unique(key, return_inverse=True)
        n_cells = len(cells)
        sum_x = np.bincount(cell_of, weights=self.x, minlength=n_cells)
        sum_y = np.bincount(cell_of, weights=self.y, minlength=n_cells)
        count = np.bincount(cell_of, minlength=n_cells)
        mx, my = sum_x / count, sum_y / count
        dist = np.hypot(self.x - mx[cell_of], self.y - my[cell_of])
        # The centre node of a cell is its node nearest the cell's mean position.
        order = np.lexsort((dist, cell_of))
        first = np.searchsorted(cell_of[order], np.arange(n_cells))
        centres = order[first].astype(np.int64)
        times = np.asarray(dijkstra(self.csr, directed=True, indices=centres), dtype=np.float64)
        self.cell_of: IntArray = cell_of.astype(np.int64)
        self.cell_time_s: FloatArray = times[:, centres]
        offset = np.hypot(self.x - self.x[centres][cell_of], self.y - self.y[centres][cell_of])
        self.node_offset_s: FloatArray = offset / OFFSET_SPEED_MPS

    _cache: weakref.WeakKeyDictionary[RoadGraph, World] = weakref.WeakKeyDictionary()

    @classmethod
    def for_graph(cls, graph: RoadGraph) -> World:
        """The world of ``graph``, built once per graph instance."""
        world = cls._cache.get(graph)
        if world is None:
            world = cls(graph)
            cls._cache[graph] = world
        return world

    # ------------------------------------------------------------------------------ queries

    def estimate_s(self, src: int, dst: int) -> float:
        """The dispatcher's free-flow travel-time estimate (cell table, never a search)."""
        return float(
            self.cell_time_s[self.cell_of[src], self.cell_of[dst]]
            + self.node_offset_s[src]
            + self.node_offset_s[dst]
        )

    def estimate_from(self, srcs: IntArray, dst: int) -> FloatArray:
        """:meth:`estimate_s` from many sources to one destination."""
        out: FloatArray = (
            self.cell_time_s[self.cell_of[srcs], self.cell_of[dst]]
            + self.node_offset_s[srcs]
            + self.node_offset_s[dst]
        )
        return out

    def parish_of(self, node: int) -> str:
        return PARISHES[int(self.node_parish[node])]

    def postcode_of(self, node: int) -> str:
        return CENTRES[int(self.node_centre[node])].postcode

    def edges_near(self, edge: int, radius_m: float) -> IntArray:
        """Edges whose midpoint lies within ``radius_m`` of ``edge``'s midpoint (sorted)."""
        s, d = self.edge_src[edge], self.edge_dst[edge]
        point = [(self.x[s] + self.x[d]) / 2.0, (self.y[s] + self.y[d]) / 2.0]
        found = self.edge_tree.query_ball_point(point, r=radius_m)
        return np.unique(np.asarray(found, dtype=np.int64))

    def fastest_path(self, src: int, dst: int) -> Leg:
        """The free-flow fastest path ``src -> dst``.

        Dijkstra is bounded by the cell table's estimate (x1.5 + 5 min), which keeps it to a
        small neighbourhood for the short hops of a technician's day; if the target lies
        beyond that bound the search is repeated without one, so the result is always exact.
        """
        if src == dst:
            return Leg(np.array([src], dtype=np.int64), np.zeros(0, dtype=np.int64), 0.0, 0.0)
        limit = self.estimate_s(src, dst) * 1.5 + 300.0
        dist, pred = dijkstra(
            self.csr, directed=True, indices=src, return_predecessors=True, limit=limit
        )
        if not math.isfinite(dist[dst]):
            dist, pred = dijkstra(self.csr, directed=True, indices=src, return_predecessors=True)
        path = [dst]
        node = dst
        while node != src:
            node = int(pred[node])
            path.append(node)
        nodes = np.array(path[::-1], dtype=np.int64)
        edges = np.searchsorted(self._edge_keys, nodes[:-1] * self.n_nodes + nodes[1:])
        edges = edges.astype(np.int64)
        return Leg(
            nodes,
            edges,
            float(self.edge_time_s[edges].sum()),
            float(self.edge_length_m[edges].sum()),
        )
