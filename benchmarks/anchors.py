"""What the benchmarks measure our code against, in the same run: anchors and floors.

The naive ETA, the anchor of the ETA benchmarks, is what the engine is built not to do
(ARCHITECTURE.md: "a ping's travel time is a lookup, not a search"): for each ping of a
technician on the way to a job, the nearest road node, then scipy's Dijkstra from there over
the whole graph to the job's site, timed over pings spread evenly over the ones given. The
read floor (:func:`read_once`) is every record a stage reads, read once, nothing done with it
(or, its decode floor, decoded once too); a store's write floor (:func:`write_once`) is its
rows inserted once.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Container, Iterable, Sequence
from contextlib import closing
from pathlib import Path

import orjson

from eta_engine.roads import RoadGraph
from events import kinds as k
from simulator import Simulation
from streams.log import Log
from streams.replay import read_records

NaivePing = tuple[float, float, float, float]
"""(lat, lon) of a ping and (lat, lon) of the site its technician is driving to."""


def naive_eta_rate(graph: RoadGraph, pings: Sequence[NaivePing], sample: int) -> tuple[int, float]:
    """Pings per second of the naive ETA over ``sample`` of ``pings`` (the sites' nearest
    nodes are found before the clock starts). Returns the pings timed and the rate."""
    chosen = list(pings[:: max(1, len(pings) // max(1, sample))][:sample])
    if not chosen:
        raise ValueError("no ping to time the naive anchor on")
    sites = {(lat, lon): graph.nearest_node(lat, lon)[0] for _, _, lat, lon in chosen}
    began = time.perf_counter()
    for lat, lon, site_lat, site_lon in chosen:
        node, _ = graph.nearest_node(lat, lon)
        graph.travel_time(node, sites[(site_lat, site_lon)])
    return len(chosen), len(chosen) / (time.perf_counter() - began)


def en_route_pings(sim: Simulation) -> list[NaivePing]:
    """The pings of a simulated day sent while their technician drove to a job, with the
    job's site (from the truth file's en-route and arrival times)."""
    sites: dict[str, tuple[float, float]] = {}
    by_technician: dict[str, list[tuple[int, int, str]]] = {}
    for row in sim.truth:
        by_technician.setdefault(row["technician_id"], []).append(
            (row["en_route_ms"], row["arrival_ms"], row["work_order_id"])
        )
    pings: list[NaivePing] = []
    for _, event in sim.iter_events():
        if isinstance(event, k.WorkOrderBooked):
            sites[event.work_order_id] = (event.site_lat, event.site_lon)
        elif isinstance(event, k.GpsPinged):
            for start, end, work_order in by_technician.get(event.technician_id, ()):
                if start <= event.time <= end and work_order in sites:
                    pings.append((event.lat, event.lon, *sites[work_order]))
                    break
    return pings


async def read_once(
    log: Log, topics: Iterable[str], columnar: Container[str], *, decode: bool = False
) -> int:
    """Read every record of ``topics`` once, doing nothing with them (``columnar`` ones a
    column at a time, as the stages read pings): the read floor of a benchmark. With
    ``decode``, each record's value is also decoded once (orjson), the least a consumer of
    the JSON events does with one. Returns how many records were read."""
    n = 0
    for topic in topics:
        if topic not in columnar:
            records = await read_records(log, topic)
            if decode:
                for record in records:
                    orjson.loads(record.value)
            n += len(records)
            continue
        for partition, end in (await log.end_offsets(topic)).items():
            at = 0
            while at < end:
                got = await log.read_columns(topic, partition, at, 10_000)
                if not len(got):
                    break
                if decode:
                    for value in got.values:
                        orjson.loads(value)
                at = int(got.offsets[-1]) + 1
                n += len(got)
    return n


def write_once(source: Path, target: Path) -> tuple[int, float]:
    """The write floor of a store: every row of the SQLite file ``source`` inserted once,
    through Python's sqlite3 (one ``executemany`` per table, one transaction, the projection
    store's journal settings), into an empty file ``target`` with the same tables. The rows
    are fetched before the clock starts. Returns the rows written and the seconds."""
    with closing(sqlite3.connect(source)) as db:
        tables = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL"
        ).fetchall()
        rows = {name: db.execute(f'SELECT * FROM "{name}"').fetchall() for name, _ in tables}
    with closing(sqlite3.connect(target, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")  # as the projection store writes
        db.execute("PRAGMA synchronous=NORMAL")
        for _, sql in tables:
            db.execute(sql)
        began = time.perf_counter()
        db.execute("BEGIN")
        for name, _ in tables:
            if rows[name]:
                marks = ", ".join("?" * len(rows[name][0]))
                db.executemany(f'INSERT INTO "{name}" VALUES ({marks})', rows[name])
        db.execute("COMMIT")
        seconds = time.perf_counter() - began
    return sum(map(len, rows.values())), seconds
