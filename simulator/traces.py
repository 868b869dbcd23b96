"""A simulated day's driving legs as recorded GPS traces: the CSV ``eval-eta --traces`` reads.

One trip per visit: the fixes the technician's phone sent while driving to the job (from the
moment they set off, ``en_route_ms`` of the truth row, up to the arrival), then one last row at
the site at the true arrival time (``arrival_ms``). The trace format defines a trip's
destination as its last position and its arrival as its last time, so that final row is what
makes a trace evaluation and the simulator's own evaluation score the same arrivals. The fixes
are the noisy ones that went on the log (``lat``/``lon`` of :class:`~simulator.gps.PingTable`),
with their measurement times; fixes dropped by the simulated phone are missing here too.

A visit without a single fix on the way (a zero-length leg, a short drive inside a signal
gap) has no trace and is left out. Trip ids are ``<work order>-<visit>``.

Pure apart from :func:`write_traces`, which writes only the file it is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from events import kinds as k
from simulator.engine import Simulation
from simulator.world import FloatArray, IntArray

TRACE_COLUMNS = ("trip_id", "vehicle_id", "unix_time", "lat", "lon")
"""The header of a trace file, in this order (readers accept any order and extra columns)."""


@dataclass(frozen=True, slots=True)
class TraceTable:
    """Trace rows as columns, grouped by trip (trips in departure order, rows in time order)."""

    trip_id: list[str]
    vehicle_id: list[str]
    time_ms: IntArray
    lat: FloatArray
    lon: FloatArray
    truth: list[dict[str, Any]]
    """The simulator's truth row of each exported trip, with its ``trip_id`` added."""

    def __len__(self) -> int:
        return len(self.trip_id)


def trip_id(work_order_id: str, visit: int) -> str:
    """The trip id of a visit in an exported trace."""
    return f"{work_order_id}-{visit}"


def trace_table(sim: Simulation) -> TraceTable:
    """Every visit's drive as trace rows (see the module docstring)."""
    p = sim.pings
    sites = {
        e.work_order_id: (e.site_lat, e.site_lon)
        for e in sim.event_list
        if isinstance(e, k.WorkOrderBooked)
    }
    index = {tid: i for i, tid in enumerate(sim.technicians.ids)}
    order = np.lexsort((p.time_ms, p.tech))
    tech_sorted = p.tech[order]
    time_sorted = p.time_ms[order]
    bounds = np.searchsorted(tech_sorted, np.arange(len(sim.technicians.ids) + 1))

    trips: list[str] = []
    vehicles: list[str] = []
    chunks: list[IntArray] = []
    ends: list[tuple[int, float, float]] = []
    truth: list[dict[str, Any]] = []
    for row in sorted(sim.truth, key=lambda r: (r["en_route_ms"], r["technician_id"])):
        tech = index[row["technician_id"]]
        a, b = int(bounds[tech]), int(bounds[tech + 1])
        times = time_sorted[a:b]
        lo = a + int(np.searchsorted(times, row["en_route_ms"], side="left"))
        hi = a + int(np.searchsorted(times, row["arrival_ms"], side="left"))
        site = sites.get(row["work_order_id"])
        if hi <= lo or site is None:
            continue
        name = trip_id(row["work_order_id"], row["visit"])
        trips += [name] * (hi - lo + 1)
        vehicles += [row["technician_id"]] * (hi - lo + 1)
        chunks.append(order[lo:hi])
        ends.append((row["arrival_ms"], site[0], site[1]))
        truth.append({"trip_id": name, **row})

    def column(values: Any, last: list[Any], dtype: Any) -> Any:
        parts = [np.append(values[rows], end) for rows, end in zip(chunks, last, strict=True)]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    return TraceTable(
        trip_id=trips,
        vehicle_id=vehicles,
        time_ms=column(p.time_ms, [e[0] for e in ends], np.int64),
        lat=column(p.lat, [e[1] for e in ends], np.float64),
        lon=column(p.lon, [e[2] for e in ends], np.float64),
        truth=truth,
    )


def _seconds(ms: IntArray) -> list[str]:
    """Milliseconds since the epoch as exact decimal seconds (``1795400000.125``)."""
    whole, milli = np.divmod(ms, 1000)
    return [f"{s}.{m:03d}" for s, m in zip(whole.tolist(), milli.tolist(), strict=True)]


def _field(text: str) -> str:
    """A CSV field, quoted only when it has to be."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_traces(traces: Simulation | TraceTable, path: str | os.PathLike[str]) -> int:
    """Write the trace CSV (header :data:`TRACE_COLUMNS`); returns the number of trips."""
    table = trace_table(traces) if isinstance(traces, Simulation) else traces
    seconds = _seconds(table.time_ms)
    lines = [",".join(TRACE_COLUMNS)]
    lines += [
        f"{_field(t)},{_field(v)},{s},{lat!r},{lon!r}"
        for t, v, s, lat, lon in zip(
            table.trip_id,
            table.vehicle_id,
            seconds,
            table.lat.tolist(),
            table.lon.tolist(),
            strict=True,
        )
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(table.truth)
