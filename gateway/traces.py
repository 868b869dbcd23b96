"""Recorded GPS traces replayed through the live pipeline and scored: ``eval-eta --traces``.

"How would the engine have done on our own fleet last month?" A trace file answers it for any
region the road graph covers: the rows become the project's own events, go onto a fresh
temporary embedded log on the topics ingest would route them to, and run through the same
stages as a live day
(:func:`streams.bootstrap.build_stages`, :func:`streams.pipeline.run_until_idle`); the windows
the ETA stage published on fs.eta are then scored by :func:`gateway.evaluate.score`, the
scoring of the simulator evaluation, against the crow-flies and free-flow baselines.

The format
    A CSV file with a header naming at least ``trip_id, vehicle_id, unix_time, lat, lon`` (in
    any order, any case; other columns are ignored). Rows may come in any order. ``unix_time``
    is seconds since 1970 (decimals allowed), ``lat``/``lon`` WGS84 degrees. Each trip is one
    vehicle driving to one job: its destination is its last position, it was assigned and set
    off at its first fix, and it arrived at its last fix.

Bad rows
    A row with a column missing, an unreadable or non-finite number, a latitude, longitude or
    time out of range, or an empty id stops the run with an error naming the line and the
    column (:class:`TraceError`); with ``skip_bad`` it is left out, counted by rule, and the
    first example of each rule is reported.

Filtered fixes (counted, never a crash), in this order
    * ``duplicate_time``: a vehicle's second fix with the same timestamp (the engine keeps
      only fixes newer than the newest it has seen, so live it would be dropped unread);
    * ``off_road``: a fix more than :attr:`TraceRules.max_offroad_m` from any road of the
      graph (a GPS glitch, or a place the graph does not cover);
    * ``jump``: a fix that the vehicle could only have reached from its previous kept fix
      faster than :attr:`TraceRules.max_speed_mps` (allowing
      :attr:`TraceRules.jump_slack_m` of GPS error). After ``jump_reset`` rejections in a row
      the previous kept fix is taken to have been the wrong one and the next fix is accepted.
    All three rules look only at a fix and the fixes before it, never at later ones.

Skipped trips (each with its reason)
    fixes from more than one vehicle; overlapping in time with an earlier trip of the same
    vehicle; a destination (last fix) off the road network or a GPS jump; fewer than two
    usable fixes.

From trips to events (no look-ahead)
    Per vehicle, before its first trip, ``TechnicianRegistered`` (home: that trip's first fix)
    and ``ShiftStarted`` (planned to last :attr:`TraceRules.shift_hours`); a vehicle idle for
    more than :attr:`TraceRules.shift_gap_s` between two trips ends its shift and starts a new
    one at the next trip. Per trip, at its first fix: ``WorkOrderBooked`` at the destination,
    ``TechnicianAssigned`` and ``TechnicianEnRoute``, a few milliseconds before the fix so that
    they apply in that order; then one ``GpsPinged`` per fix at its recorded time, with the
    speed and heading a phone would report, derived from the trip's previous fix
    (:func:`motion`); at the last
    fix ``TechnicianArrived``, then ``WorkStarted`` and ``WorkCompleted`` a millisecond apart
    (what a vehicle does between trips is not in a trace, so the job is taken as done on
    arrival and the vehicle as free until its next trip); when the next trip sets off, a few
    milliseconds before it, ``TechnicianDeparted`` from the last site. The promised window is
    generic, from what is known at booking time: it opens at the booking time floored to the
    half hour and lasts :attr:`TraceRules.window_min` minutes (never derived from the arrival,
    which is the future). Late alerts depend on that window and so are not scored here.

    The destination is the one thing known ahead, as it is live: a job is booked at an
    address. Every other event at time ``t`` depends on the rows up to ``t`` only, so a window
    published at ``t`` is the same whether the log goes on after ``t`` or not (tested by
    cutting the log at ``t`` on the pipeline's event-time grid, where a live pipeline stops
    too; a cut inside a grid window moves where that window's last evaluation step closes).

Scoring
    For each trip and each horizon H shorter than the trip: the latest window published at or
    before ``arrival - H`` (:func:`gateway.evaluate.score`, whose rule :func:`predictions`
    applies to list the pairs). The engine starts cold: whatever it knows of speeds it learns
    from the file's own fixes, starting from the graph's free-flow speeds (OSM ``maxspeed``,
    else the per-class defaults of :mod:`eta_engine.osm_build`) times the documented prior
    factor :attr:`eta_engine.engine.EtaConfig.prior_speed_factor`.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from eta_engine.fields import FieldStore
from eta_engine.roads import haversine_m
from events import kinds as k
from events.base import Event
from events.catalog import TOPIC_OF
from events.codec import decode_trusted, encode, encode_ping_columns
from gateway.evaluate import MINUTE_MS, Track, candidate_pairs, free_flow_s, score
from simulator.traces import TRACE_COLUMNS
from streams.collector import collector_paused
from streams.eta_stage import EtaProcessor
from streams.log import OutRecord
from streams.prefetch import FieldPrefetch, Forked

if TYPE_CHECKING:
    from eta_engine.roads import RoadGraph

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SOURCE = "traces/import"
"""The ``source`` of every event made from a trace file."""
DEFAULT_HORIZONS_MIN = (10, 5, 2)
MAX_UNIX_S = 32_503_680_000.0
"""Year 3000: a later ``unix_time`` is not seconds since 1970."""


@dataclass(frozen=True, slots=True)
class TraceRules:
    """How traces are cleaned and turned into events (see the module docstring)."""

    max_speed_mps: float = 70.0
    """252 km/h: a fix that implies more, from the vehicle's previous fix, is a GPS jump."""
    jump_slack_m: float = 50.0
    """GPS error allowed on top of that speed (two fixes a moment apart may be this far apart
    from noise alone)."""
    jump_reset: int = 3
    """Jumps rejected in a row before the previous kept fix is blamed instead."""
    max_offroad_m: float = 200.0
    """A fix farther than this from every road of the graph is dropped; a destination that far
    off makes its trip skipped."""
    shift_gap_s: float = 8 * 3600.0
    """A vehicle idle this long between two trips ends its shift and starts a new one."""
    shift_hours: float = 10.0
    """The planned length of a shift (ShiftStarted.planned_end)."""
    window_min: int = 120
    """The promised arrival window: from the booking floored to the half hour, this long."""
    motion_max_gap_s: float = 60.0
    """A fix's speed and heading are derived from the previous fix of its trip if that came at
    most this long before (see :func:`motion`)."""
    motion_min_m: float = 10.0
    """Below this distance from the previous fix the direction is noise: no heading."""


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadRow:
    """What is wrong with one row: where (line, column), the rule and a sentence."""

    line: int
    column: str
    rule: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column '{self.column}'" if self.column else "")
        return f"{where}: {self.message}"


class TraceError(ValueError):
    """A trace file that cannot be read as it is; ``bad`` says where and why."""

    def __init__(self, bad: BadRow) -> None:
        super().__init__(str(bad))
        self.bad = bad


@dataclass(slots=True)
class RawTraces:
    """The good rows of a trace file, as columns in file order."""

    trip: list[str]
    vehicle: list[str]
    time_ms: IntArray
    lat: FloatArray
    lon: FloatArray
    line: IntArray
    rows: int
    """Data rows read (blank lines excluded), bad ones included."""
    bad: list[BadRow]
    """The rows left out (only with ``skip_bad``), in line order."""


def read_traces(path: str | os.PathLike[str], *, skip_bad: bool = False) -> RawTraces:
    """Read a trace file (UTF-8, optionally with a byte-order mark). See :func:`parse_traces`."""
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = BadRow(line, "", "encoding", f"not UTF-8 (byte 0x{data[exc.start]:02x})")
        raise TraceError(bad) from None
    return parse_traces(text, skip_bad=skip_bad)


def parse_traces(text: str, *, skip_bad: bool = False) -> RawTraces:
    """Parse and validate trace rows (see the module docstring).

    Raises :class:`TraceError` for a file without the required header columns, and, unless
    ``skip_bad``, for its first bad row. Numbers are converted a column at a time; only a
    column holding something unreadable is looked at row by row, to say where.
    """
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):
        header = next(reader, None)
    if header is None:
        raise TraceError(
            BadRow(
                1,
                "",
                "header",
                "empty file: the first line must name the columns " + ", ".join(TRACE_COLUMNS),
            )
        )
    header_line = reader.line_num
    names = [h.strip().lower() for h in header]
    index: dict[str, int] = {}
    for column in TRACE_COLUMNS:
        if column not in names:
            found = ", ".join(h.strip() for h in header)
            message = f"the header has no column '{column}' (it has: {found})"
            raise TraceError(BadRow(header_line, column, "header", message))
        index[column] = names.index(column)

    need = max(index.values()) + 1
    bad: dict[int, BadRow] = {}
    cells: dict[str, list[str]]
    width = len(header)
    flat = _plain_fields(text, width) if header_line == 1 else None
    if flat is not None:  # one row per line, all as wide as the header: cut a column at a time
        cells = {column: flat[index[column] :: width] for column in TRACE_COLUMNS}
        n_rows = len(flat) // width
        lines = list(range(2, 2 + n_rows))
    else:
        rows: list[list[str]] = []
        lines = []
        if '"' in text:  # a quoted field may span lines: ask the reader where each row ends
            for row in reader:
                if row:
                    rows.append(row)
                    lines.append(reader.line_num)
        else:  # one row per line: its number follows from its place
            everything = list(reader)
            rows = [row for row in everything if row]
            first = header_line + 1
            if len(rows) == len(everything):
                lines = list(range(first, first + len(rows)))
            else:
                lines = [first + i for i, row in enumerate(everything) if row]
        for i, row in enumerate(rows):
            if len(row) < need:
                missing = min(
                    (c for c in TRACE_COLUMNS if index[c] >= len(row)), key=index.__getitem__
                )
                message = (
                    f"missing: the row has {len(row)} field{'s' if len(row) != 1 else ''}, "
                    f"'{missing}' is field {index[missing] + 1}"
                )
                bad[i] = BadRow(lines[i], missing, "missing_column", message)
                rows[i] = row + [""] * (need - len(row))
        cells = {column: [r[index[column]] for r in rows] for column in TRACE_COLUMNS}
        n_rows = len(rows)

    def ids(column: str) -> list[str]:
        values = list(map(str.strip, cells[column]))
        if not all(values):
            for i, value in enumerate(values):
                if not value and i not in bad:
                    bad[i] = BadRow(lines[i], column, "empty", "is empty")
        return values

    def numbers(column: str, lo: float, hi: float) -> FloatArray:
        texts = cells[column]
        try:
            values: FloatArray = np.array(texts, dtype=np.float64)
        except ValueError:
            values = np.empty(len(texts))
            for i, t in enumerate(texts):
                try:
                    values[i] = float(t)
                except ValueError:
                    values[i] = math.nan
        for i in np.flatnonzero(~np.isfinite(values) | (values < lo) | (values > hi)).tolist():
            if i in bad:
                continue
            t = texts[i].strip()
            value = float(values[i])
            if not t:
                bad[i] = BadRow(lines[i], column, "number", "is empty")
            elif not _is_number(t):
                bad[i] = BadRow(lines[i], column, "number", f"{t!r} is not a number")
            elif not math.isfinite(value):
                bad[i] = BadRow(lines[i], column, "number", f"{t!r} is not a finite number")
            elif column == "unix_time" and value > 1e11:
                message = f"{t} is not seconds since 1970 (milliseconds? divide by 1000)"
                bad[i] = BadRow(lines[i], column, "range", message)
            else:
                bad[i] = BadRow(lines[i], column, "range", f"{t} is out of range [{lo:g}, {hi:g}]")
        return values

    trip = ids("trip_id")
    vehicle = ids("vehicle_id")
    seconds = numbers("unix_time", 1.0, MAX_UNIX_S)
    lat = numbers("lat", -90.0, 90.0)
    lon = numbers("lon", -180.0, 180.0)
    problems = sorted(bad.values(), key=lambda b: b.line)
    if problems and not skip_bad:
        raise TraceError(problems[0])
    line = np.asarray(lines, dtype=np.int64)
    if bad:
        keep = np.ones(n_rows, dtype=bool)
        keep[list(bad)] = False
        trip = [t for t, ok in zip(trip, keep.tolist(), strict=True) if ok]
        vehicle = [v for v, ok in zip(vehicle, keep.tolist(), strict=True) if ok]
        seconds, lat, lon, line = seconds[keep], lat[keep], lon[keep], line[keep]
    return RawTraces(
        trip=trip,
        vehicle=vehicle,
        time_ms=np.round(seconds * 1000.0).astype(np.int64),
        lat=lat,
        lon=lon,
        line=line,
        rows=n_rows,
        bad=problems,
    )


def _plain_fields(text: str, width: int) -> list[str] | None:
    """Every field after the first line, row after row, if each line after it is one row of
    exactly ``width`` fields and nothing in the file needs the csv module's rules (no quote,
    carriage return or NUL; no blank line but a final line break): what :mod:`csv` would read
    then, cut by two string splits. ``None`` otherwise (the reader takes over)."""
    if '"' in text or "\r" in text or "\0" in text:
        return None
    body = text[text.find("\n") + 1 :] if "\n" in text else ""
    if body.endswith("\n"):
        body = body[:-1]
    if not body:
        return []
    lines = body.split("\n")
    if set(map(str.count, lines, itertools.repeat(",", len(lines)))) != {width - 1}:
        return None
    return body.replace("\n", ",").split(",")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- cleaning --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skipped:
    """A trip left out of the evaluation, with the rule and a sentence."""

    trip_id: str
    rule: str
    reason: str


@dataclass(slots=True)
class Trips:
    """Usable fixes sorted by (vehicle, time); each trip a contiguous run of them.

    ``start``/``end``: the rows of each kept trip (``end`` exclusive), trips ordered by
    vehicle then time; ``trip_of``/``vehicle_of``: its codes in ``trip_names`` and
    ``vehicle_names`` (both sorted, so nothing depends on the order of the file's rows).
    """

    trip_names: list[str]
    vehicle_names: list[str]
    vehicle: IntArray
    time_ms: IntArray
    lat: FloatArray
    lon: FloatArray
    start: IntArray
    end: IntArray
    trip_of: IntArray
    vehicle_of: IntArray
    filtered: Counter[str] = field(default_factory=Counter)
    skipped: list[Skipped] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.start)


def _runs(codes: IntArray) -> tuple[IntArray, IntArray]:
    """Starts and ends (exclusive) of the runs of equal values."""
    n = len(codes)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    cut = np.flatnonzero(codes[1:] != codes[:-1]) + 1
    starts = np.concatenate([[0], cut]).astype(np.int64)
    ends = np.concatenate([cut, [n]]).astype(np.int64)
    return starts, ends


def jumps(
    vehicle: IntArray, time_ms: IntArray, lat: FloatArray, lon: FloatArray, rules: TraceRules
) -> BoolArray:
    """Which fixes are GPS jumps (see the module docstring); fixes sorted by (vehicle, time)
    with distinct times per vehicle.

    Vectorised against each fix's predecessor; only runs of rejected fixes are walked one by
    one (against the last kept fix), so clean traces cost one pass of numpy.
    """
    n = len(time_ms)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    dist = haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    dt = np.diff(time_ms) / 1000.0
    slack = rules.jump_slack_m
    fast = (vehicle[1:] == vehicle[:-1]) & (dist > rules.max_speed_mps * dt + slack)
    done = -1
    for first in (np.flatnonzero(fast) + 1).tolist():
        if first <= done:
            continue
        anchor = first - 1  # kept: a dropped fix lies inside a run already walked
        m, rejected = first, 0
        while m < n and vehicle[m] == vehicle[anchor] and rejected < rules.jump_reset:
            metres = float(haversine_m(lat[anchor], lon[anchor], lat[m], lon[m]))
            if metres <= rules.max_speed_mps * (time_ms[m] - time_ms[anchor]) / 1000.0 + slack:
                break
            out[m] = True
            rejected += 1
            m += 1
        done = m
    return out


def _coded(values: list[str]) -> tuple[list[str], IntArray]:
    """The distinct values, sorted, and each value's place among them: what
    ``np.unique(np.asarray(values, dtype=str), return_inverse=True)`` gives, from a dictionary
    (several times faster on a file's ids). numpy's fixed-width text drops trailing NULs
    (merging ``"a\\0"`` with ``"a"``): values holding a NUL are left to numpy, to stay the same."""
    distinct = dict.fromkeys(values)
    if any("\0" in value for value in distinct):
        names, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
        return names.tolist(), codes.astype(np.int64).ravel()
    ordered = sorted(distinct)
    place = {value: i for i, value in enumerate(ordered)}
    return ordered, np.fromiter(map(place.__getitem__, values), np.int64, len(values))


def prepare(raw: RawTraces, graph: RoadGraph, rules: TraceRules = TraceRules()) -> Trips:
    """Sort, filter and check the fixes, and cut them into trips (see the module docstring)."""
    filtered: Counter[str] = Counter()
    skipped: list[Skipped] = []
    vnames, vcode = _coded(raw.vehicle)
    tnames, tcode = _coded(raw.trip)
    order = np.lexsort((raw.line, raw.time_ms, vcode))
    veh, trip, t = vcode[order], tcode[order], raw.time_ms[order]
    lat, lon = raw.lat[order], raw.lon[order]

    def keep(mask: BoolArray) -> None:
        nonlocal veh, trip, t, lat, lon
        veh, trip, t, lat, lon = veh[mask], trip[mask], t[mask], lat[mask], lon[mask]

    def skip(codes: set[int], rule: str, reasons: dict[int, str]) -> None:
        for code in sorted(codes):
            skipped.append(Skipped(tnames[code], rule, reasons[code]))
        if codes:
            keep(~np.isin(trip, np.fromiter(codes, np.int64, len(codes))))

    # A vehicle's second fix at the same time: dropped (live, the engine would not read it).
    dup = np.concatenate([[False], (veh[1:] == veh[:-1]) & (t[1:] == t[:-1])])
    filtered["duplicate_time"] = int(dup.sum())
    keep(~dup)

    # Trip structure: one vehicle per trip, a vehicle's trips one after the other.
    n_trips = len(tnames)
    if len(t):
        vmin = np.full(n_trips, np.iinfo(np.int64).max)
        vmax = np.full(n_trips, -1)
        first = np.full(n_trips, np.iinfo(np.int64).max)
        last = np.full(n_trips, np.iinfo(np.int64).min)
        np.minimum.at(vmin, trip, veh)
        np.maximum.at(vmax, trip, veh)
        np.minimum.at(first, trip, t)
        np.maximum.at(last, trip, t)
        multi = {int(c) for c in np.flatnonzero((vmin != vmax) & (vmax >= 0))}
        reasons = {
            c: "its fixes come from more than one vehicle ("
            + ", ".join(vnames[v] for v in np.unique(veh[trip == c]).tolist()[:4])
            + ")"
            for c in multi
        }
        skip(multi, "several_vehicles", reasons)
        present = [c for c in np.flatnonzero(vmax >= 0).tolist() if c not in multi]
        present.sort(key=lambda c: (int(vmin[c]), int(first[c]), c))
        overlapping: dict[int, str] = {}
        previous: tuple[int, int, int] | None = None  # vehicle, end, trip of the last kept
        for c in present:
            v = int(vmin[c])
            if previous is not None and previous[0] == v and first[c] <= previous[1]:
                overlapping[c] = (
                    f"it overlaps trip {tnames[previous[2]]} of vehicle {vnames[v]} in time"
                )
                continue
            previous = (v, int(last[c]), c)
        skip(set(overlapping), "overlapping", overlapping)

    # Far from every road: the fix is dropped; the trip, if it is its destination.
    off = np.zeros(len(t), dtype=bool)
    off_m = np.zeros(len(t))
    if len(t):
        _, node_m = graph.nearest_nodes(lat, lon)
        far = np.flatnonzero(node_m > rules.max_offroad_m)  # an edge is at most this far
        if len(far):
            _, edge_m, _ = graph.nearest_edges(lat[far], lon[far])
            off[far] = edge_m > rules.max_offroad_m
            off_m[far] = edge_m
    _, ends = _runs(trip)
    lost = {int(trip[e - 1]): float(off_m[e - 1]) for e in ends.tolist() if off[e - 1]}
    reasons = {
        c: f"its destination is {m:,.0f} m from the nearest road (limit "
        f"{rules.max_offroad_m:,.0f} m)"
        for c, m in lost.items()
    }
    gone = np.isin(trip, np.fromiter(lost, np.int64, len(lost)))
    filtered["off_road"] = int((off & ~gone).sum())
    keep(~off)
    skip(set(lost), "destination_off_road", reasons)

    # GPS jumps: until no destination is one (skipping a trip changes its successors'
    # predecessors, so look again).
    while True:
        jump = jumps(veh, t, lat, lon, rules)
        _, ends = _runs(trip)
        bad_end = {int(trip[e - 1]) for e in ends.tolist() if jump[e - 1]}
        if not bad_end:
            filtered["jump"] = int(jump.sum())
            keep(~jump)
            break
        reasons = {c: "its last fix (the destination) is a GPS jump" for c in bad_end}
        skip(bad_end, "destination_jump", reasons)

    starts, ends = _runs(trip)
    short = {int(trip[s]) for s, e in zip(starts.tolist(), ends.tolist(), strict=True) if e - s < 2}
    skip(short, "too_few_fixes", {c: "fewer than two usable fixes" for c in short})
    starts, ends = _runs(trip)
    skipped.sort(key=lambda s: s.trip_id)
    return Trips(
        trip_names=tnames,
        vehicle_names=vnames,
        vehicle=veh,
        time_ms=t,
        lat=lat,
        lon=lon,
        start=starts,
        end=ends,
        trip_of=trip[starts] if len(starts) else np.zeros(0, dtype=np.int64),
        vehicle_of=veh[starts] if len(starts) else np.zeros(0, dtype=np.int64),
        filtered=filtered,
        skipped=skipped,
    )


# -- events ----------------------------------------------------------------------------------


def encode_pings(
    ids: Sequence[bytes],
    time_ms: IntArray,
    technicians: Sequence[bytes],
    lat: FloatArray,
    lon: FloatArray,
    speed_mps: FloatArray,
    heading_deg: FloatArray,
) -> list[bytes]:
    """``GpsPinged`` events of the importer, encoded byte for byte as
    :func:`events.codec.encode` would, a column at a time (NaN speed or heading: none; no
    accuracy). ``ids`` and ``technicians`` are JSON string contents."""
    return encode_ping_columns(SOURCE, ids, time_ms, technicians, lat, lon, speed_mps, heading_deg)


def motion(trips: Trips, rules: TraceRules = TraceRules()) -> tuple[FloatArray, FloatArray]:
    """Each fix's speed (m/s) and heading (degrees from north), from the trip's previous fix.

    What a phone reports with a fix, derived the way it would be from the fixes the trace
    has (an average over the interval since the previous one): NaN for a trip's first fix
    and after a gap longer than :attr:`TraceRules.motion_max_gap_s`; the heading also NaN
    when the vehicle moved less than :attr:`TraceRules.motion_min_m` (GPS noise would be all
    it showed). Only earlier fixes are used.
    """
    n = len(trips.time_ms)
    speed = np.full(n, np.nan)
    heading = np.full(n, np.nan)
    if n < 2:
        return speed, heading
    lat, lon = trips.lat, trips.lon
    follows = np.ones(n, dtype=bool)
    follows[trips.start] = False
    follows[0] = False
    dt = np.diff(trips.time_ms) / 1000.0
    ok = follows[1:] & (dt <= rules.motion_max_gap_s)
    i = np.flatnonzero(ok) + 1
    metres = haversine_m(lat[i - 1], lon[i - 1], lat[i], lon[i])
    speed[i] = np.round(metres / dt[i - 1], 2)
    p1, p2 = np.radians(lat[i - 1]), np.radians(lat[i])
    dl = np.radians(lon[i] - lon[i - 1])
    bearing = np.degrees(
        np.arctan2(
            np.sin(dl) * np.cos(p2), np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)
        )
    )
    moved = metres >= rules.motion_min_m
    heading[i[moved]] = np.round(bearing[moved] % 360.0, 1) % 360.0
    return speed, heading


def _json_text(text: str) -> bytes:
    return orjson.dumps(text)[1:-1]


@dataclass(slots=True)
class Replay:
    """A trace file as log input: every event as a record for the log, in log order, and what
    scoring needs.

    ``records``: ordered by event time (ties: the order they were made in), each on its
    catalog topic, keyed by the event's key and stamped with its time, exactly as ingest
    routes it. ``pings``: the encoded fixes, in the order of :class:`Trips`. ``truth``: one
    row per trip in the simulator's truth format; ``sites``: each trip's destination.
    """

    records: list[OutRecord]
    pings: list[bytes]
    truth: list[dict[str, Any]]
    sites: dict[str, tuple[float, float]]

    def __len__(self) -> int:
        return len(self.records)

    def until(self, time_ms: int) -> Replay:
        """The same log cut after ``time_ms`` (what had been recorded by then)."""
        n = len(self.records)
        while n and (self.records[n - 1].timestamp_ms or 0) > time_ms:
            n -= 1
        return Replay(self.records[:n], self.pings, self.truth, self.sites)


_HALF_HOUR_MS = 30 * MINUTE_MS


def trace_events(trips: Trips, rules: TraceRules = TraceRules(), region: str = "") -> Replay:
    """The events of every kept trip (see the module docstring), in log order."""
    region = region or "traces"
    made: list[tuple[int, int, Event]] = []
    seq = 0
    ping_seq = np.zeros(len(trips.time_ms), dtype=np.int64)
    truth: list[dict[str, Any]] = []
    sites: dict[str, tuple[float, float]] = {}
    shift_ms = int(rules.shift_hours * 3_600_000)
    gap_ms = rules.shift_gap_s * 1000.0

    def add(at: int, cls: type[Event], subject: str, **data: Any) -> None:
        nonlocal seq
        made.append(
            (at, seq, cls(id=f"trace-{seq:09d}", source=SOURCE, time=at, subject=subject, **data))
        )
        seq += 1

    previous: dict[int, tuple[str, int]] = {}  # vehicle -> its last trip and arrival
    registered: set[int] = set()
    for s, e, tc, vc in zip(
        trips.start.tolist(),
        trips.end.tolist(),
        trips.trip_of.tolist(),
        trips.vehicle_of.tolist(),
        strict=True,
    ):
        wo, tech = trips.trip_names[tc], trips.vehicle_names[vc]
        t0, t1 = int(trips.time_ms[s]), int(trips.time_ms[e - 1])
        lat0, lon0 = float(trips.lat[s]), float(trips.lon[s])
        site = (float(trips.lat[e - 1]), float(trips.lon[e - 1]))
        ids = {"work_order_id": wo, "technician_id": tech}
        last = previous.get(vc)
        if last is not None:
            # Setting off means leaving the last site: said now, or the fleet's geofence would
            # say it a round of the pipeline later, when the drive is well under way.
            add(
                max(t0 - 8, last[1] + 3),
                k.TechnicianDeparted,
                last[0],
                work_order_id=last[0],
                technician_id=tech,
            )
        if last is None or t0 - last[1] > gap_ms:
            if last is not None:
                add(max(t0 - 7, last[1] + 4), k.ShiftEnded, tech, technician_id=tech)
            if vc not in registered:
                registered.add(vc)
                add(
                    t0 - 6,
                    k.TechnicianRegistered,
                    tech,
                    technician_id=tech,
                    name=tech,
                    skills=(),
                    team="traces",
                    region=region,
                    home_lat=lat0,
                    home_lon=lon0,
                )
            add(
                t0 - 5,
                k.ShiftStarted,
                tech,
                technician_id=tech,
                van_stock={},
                planned_end=t0 + shift_ms,
            )
        opens = t0 - 3 - (t0 - 3) % _HALF_HOUR_MS
        add(
            t0 - 3,
            k.WorkOrderBooked,
            wo,
            work_order_id=wo,
            customer_id=wo,
            site_lat=site[0],
            site_lon=site[1],
            address="",
            region=region,
            job_type="trip",
            required_skills=(),
            parts_kit={},
            window_start=opens,
            window_end=opens + rules.window_min * MINUTE_MS,
            priority="normal",
            maintenance="reactive",
            value=0.0,
            first_contact_time=t0 - 3,
        )
        add(t0 - 2, k.TechnicianAssigned, wo, position=0, **ids)
        add(t0 - 1, k.TechnicianEnRoute, wo, **ids)
        ping_seq[s:e] = np.arange(seq, seq + (e - s))
        seq += e - s
        add(t1, k.TechnicianArrived, wo, **ids)
        add(t1 + 1, k.WorkStarted, wo, **ids)
        add(t1 + 2, k.WorkCompleted, wo, fixed=True, **ids)
        previous[vc] = (wo, t1)
        sites[wo] = site
        truth.append(
            {
                "work_order_id": wo,
                "visit": 1,
                "technician_id": tech,
                "en_route_ms": t0,
                "arrival_ms": t1,
                "travel_s": (t1 - t0) / 1000.0,
                "late": False,
                "window_end_ms": opens + rules.window_min * MINUTE_MS,
            }
        )

    tech_text = [_json_text(v) for v in trips.vehicle_names]
    speed, heading = motion(trips, rules)
    pings = encode_pings(
        list(map(b"trace-%09d".__mod__, ping_seq.tolist())),
        trips.time_ms,
        [tech_text[v] for v in trips.vehicle.tolist()],
        trips.lat,
        trips.lon,
        speed,
        heading,
    )
    m = len(made)
    times = np.concatenate([np.fromiter((a for a, _, _ in made), np.int64, m), trips.time_ms])
    seqs = np.concatenate([np.fromiter((b for _, b, _ in made), np.int64, m), ping_seq])
    order = np.lexsort((seqs, times)).tolist()
    # The events' records, then the pings' (made by one map), put in log order.
    records = [
        OutRecord(TOPIC_OF[ev.type].name, encode(ev), ev.key.encode(), at) for at, _, ev in made
    ]
    keys = [v.encode() for v in trips.vehicle_names]
    # Made as plain tuples of all six fields: the named tuple's own constructor (a Python
    # function) is most of the cost of a ping's record.
    records += map(
        tuple.__new__,
        itertools.repeat(OutRecord),
        zip(
            itertools.repeat(TOPIC_OF["GpsPinged"].name, len(pings)),
            pings,
            [keys[v] for v in trips.vehicle.tolist()],
            trips.time_ms.tolist(),
            itertools.repeat(()),
            itertools.repeat(None),
            strict=False,
        ),
    )
    return Replay([records[i] for i in order], pings, truth, sites)


# -- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Forecast:
    """The window scored for one (trip, horizon): what the engine said at ``issued``."""

    trip_id: str
    horizon_min: int
    issued: int
    p10: int
    p50: int
    p90: int
    arrival: int


def predictions(
    truth: Sequence[dict[str, Any]],
    eta_records: Sequence[bytes],
    gps_times: dict[str, int],
    horizons_min: Sequence[int],
) -> list[Forecast]:
    """The (trip, horizon) pairs :func:`gateway.evaluate.score` scores, with their windows.

    The same rule, applied to the same records: the latest ``EtaUpdated`` of the trip's work
    order published at or before ``arrival - H``, once the vehicle has a fix (``gps_times``:
    each vehicle's first fix) and no earlier than six hours before setting off.
    """
    issued: dict[str, list[tuple[int, int, int, int]]] = {}
    for raw in eta_records:
        event = decode_trusted(raw)
        if isinstance(event, k.EtaUpdated):
            issued.setdefault(event.work_order_id, []).append(
                (event.time, event.p10, event.p50, event.p90)
            )
    for items in issued.values():
        items.sort(key=lambda f: f[0])
    out: list[Forecast] = []
    for row in sorted(truth, key=lambda r: (r["work_order_id"], r["visit"])):
        wo, arrival = row["work_order_id"], row["arrival_ms"]
        items = issued.get(wo, [])
        times = [f[0] for f in items]
        for h in horizons_min:
            at = arrival - h * MINUTE_MS
            if at < row["en_route_ms"] - 6 * 60 * MINUTE_MS:
                continue
            i = int(np.searchsorted(np.asarray(times, dtype=np.int64), at, side="right")) - 1
            first_fix = gps_times.get(row["technician_id"])
            if i < 0 or first_fix is None or first_fix > at:
                continue
            when, p10, p50, p90 = items[i]
            out.append(Forecast(wo, h, when, p10, p50, p90, arrival))
    return out


async def replay_through_pipeline(
    replay: Replay,
    graph: RoadGraph,
    *,
    on_progress: Callable[[int], None] | None = None,
    chunk: int = 20_000,
    prefetch: FieldPrefetch | None = None,
) -> list[bytes]:
    """Append ``replay`` to a fresh embedded log in a temporary directory, run the pipeline's
    stages over it until idle, and return what the ETA stage published on fs.eta.

    The records go straight onto their topics: they are valid by construction (made with the
    codec from checked rows; the tests run every one through ingest's validator), and the
    full validation of ingest would cost more than the rest of the pipeline per fix.
    """
    from events.catalog import TOPICS
    from streams.bootstrap import build_stages, open_state_store, topic_spec
    from streams.config import Config
    from streams.embedded import EmbeddedLog
    from streams.pipeline import run_until_idle
    from streams.replay import read_topic

    with tempfile.TemporaryDirectory(prefix="fieldstream-traces-") as tmp:
        config = Config(data_dir=Path(tmp))
        # A scratch log, deleted after the run: it need not survive a power cut.
        log = EmbeddedLog.open(config.data_dir, synchronous="OFF")
        await log.create_topics([topic_spec(t) for t in TOPICS])
        store = open_state_store(config.data_dir, None)
        try:
            for at in range(0, len(replay.records), chunk):
                batch = replay.records[at : at + chunk]
                await log.append(batch)
                if on_progress is not None:
                    on_progress(len(batch))
            # The projections (KPI tables, live view) feed nothing the ETA stage reads.
            stages = [s for s in build_stages(log, store, config, graph) if s.name != "projections"]
            if prefetch is not None:
                eta = stages[-1].processor
                assert isinstance(eta, EtaProcessor)
                eta.engine.fields.adopt(prefetch.result())
            await run_until_idle(stages, on_progress=on_progress, parallel=True)
            return await read_topic(log, "fs.eta")
        finally:
            store.close()
            await log.close()


class FreeFlowPrefetch:
    """The free-flow baseline of a trace evaluation (:func:`gateway.evaluate.free_flow_s`)
    for every pair it may score, computed by a forked process while this one runs the
    pipeline: which pairs are scored depends on the engine's outputs, where each van was and
    where it went does not. A pair's time depends only on the graph, its site and its
    position (see :meth:`eta_engine.roads.RoadGraph.times_to`)."""

    def __init__(self, keys: list[tuple[Any, Any]], forked: Forked) -> None:
        self.keys = keys
        self._forked = forked

    @classmethod
    def start(
        cls,
        graph: Any,
        sites: Sequence[tuple[float, float]],
        positions: Sequence[tuple[float, float]],
        ahead_s: Sequence[float],
    ) -> FreeFlowPrefetch:
        keys = list(zip(sites, positions, strict=True))

        def fill(out: Any) -> None:
            out[:] = free_flow_s(graph, sites, positions, ahead_s)

        return cls(keys, Forked.start([((len(keys),), np.float64)], fill))

    def result(self) -> dict[tuple[Any, Any], float]:
        """(site, position) -> free-flow seconds; empty if the child failed (the scoring
        then computes them itself)."""
        arrays = self._forked.result()
        if arrays is None:
            return {}
        return dict(zip(self.keys, arrays[0].tolist(), strict=True))


def scored_fixes(
    trips: Trips,
    truth: Sequence[dict[str, Any]],
    pings: Sequence[bytes],
    horizons_min: Sequence[int],
) -> list[bytes]:
    """The fixes :func:`gateway.evaluate.score` reads: for each trip, the vehicle's latest fix
    at or before its departure and at or before ``arrival - H`` for each horizon.

    ``score`` asks its track only "where was the van at time t" for those times, so it gives
    the same figures with these few fixes as with all of them (tested), without decoding
    every fix of the file a second time.
    """
    bounds = np.searchsorted(trips.vehicle, np.arange(len(trips.vehicle_names) + 1))
    code = {name: i for i, name in enumerate(trips.vehicle_names)}
    wanted: set[int] = set()
    for row in truth:
        v = code[row["technician_id"]]
        a, b = int(bounds[v]), int(bounds[v + 1])
        at = [row["en_route_ms"], *(row["arrival_ms"] - h * MINUTE_MS for h in horizons_min)]
        found = np.searchsorted(trips.time_ms[a:b], np.asarray(at, dtype=np.int64), "right") - 1
        wanted.update(a + i for i in found.tolist() if i >= 0)
    return [pings[i] for i in sorted(wanted)]


@dataclass(slots=True)
class TraceEvaluation:
    """The outcome of :func:`evaluate_traces`: the report and the scored pairs."""

    report: dict[str, Any]
    forecasts: list[Forecast]
    seconds: float
    phases: dict[str, float]
    """Seconds spent reading, cleaning, making the events, in the pipeline (appending to the
    log included) and scoring."""


async def evaluate_traces(
    path: str | os.PathLike[str],
    graph: RoadGraph,
    *,
    horizons_min: Sequence[int] = DEFAULT_HORIZONS_MIN,
    skip_bad: bool = False,
    rules: TraceRules = TraceRules(),
    on_progress: Callable[[int], None] | None = None,
) -> TraceEvaluation:
    """Read, clean, replay through the pipeline and score a trace file (the whole command).

    Raises :class:`TraceError` for an unreadable file (see :func:`parse_traces`).
    """
    clock = [time.perf_counter()]
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        clock.append(time.perf_counter())
        phases[name] = clock[-1] - clock[-2]

    # Reading, cleaning and making the events allocate an object or more per row, none of
    # them in a reference cycle: the cyclic collector is kept out of the way, as the stages
    # do for a batch, and what survives (the log's records) is frozen out of its later passes.
    with collector_paused():
        raw = read_traces(path, skip_bad=skip_bad)
        lap("read")
        trips = prepare(raw, graph, rules)
        # The trips' sites are known now: their time fields are computed on the other core
        # while the events are made and appended (see FieldPrefetch).
        last = trips.end - 1
        sites, _ = graph.nearest_nodes(trips.lat[last], trips.lon[last])
        prefetch = FieldPrefetch.start(FieldStore(graph), sites.tolist())
        lap("clean")
        replay = trace_events(trips, rules, graph.region)
        # Where each van was at each horizon is known now, and so the free-flow baseline of
        # every pair that might be scored: computed on the other core during the pipeline.
        track = Track.of(scored_fixes(trips, replay.truth, replay.pings, horizons_min))
        free_flow = FreeFlowPrefetch.start(
            graph, *candidate_pairs(replay.truth, replay.sites, track, horizons_min)
        )
        lap("events")
    etas = await replay_through_pipeline(replay, graph, on_progress=on_progress, prefetch=prefetch)
    lap("pipeline")
    with collector_paused():
        result = score(
            truth=replay.truth,
            eta_records=etas,
            alert_records=(),
            gps_records=track,
            sites=replay.sites,
            graph=graph,
            horizons_min=horizons_min,
            free_flow=free_flow.result(),
        )
        first_fix: dict[str, int] = {}
        for s, vc in zip(trips.start.tolist(), trips.vehicle_of.tolist(), strict=True):
            first_fix.setdefault(trips.vehicle_names[vc], int(trips.time_ms[s]))
        forecasts = predictions(replay.truth, etas, first_fix, horizons_min)
    lap("score")
    bad_by_rule = Counter(b.rule for b in raw.bad)
    report: dict[str, Any] = {
        "traces": str(path),
        "region": graph.region,
        "rows_read": raw.rows,
        "bad_rows": len(raw.bad),
        "bad_by_rule": dict(sorted(bad_by_rule.items())),
        "bad_examples": {
            rule: str(next(b for b in raw.bad if b.rule == rule)) for rule in sorted(bad_by_rule)
        },
        "trips": len(trips),
        "pings": len(trips.time_ms),
        "filtered": dict(trips.filtered),
        "skipped": [
            {"trip_id": s.trip_id, "rule": s.rule, "reason": s.reason} for s in trips.skipped
        ],
        "crowflies_speed_mps": result["crowflies_speed_mps"],
        "horizons": result["horizons"],
    }
    return TraceEvaluation(report, forecasts, clock[-1] - clock[0], phases)


def write_predictions(forecasts: Sequence[Forecast], path: str | os.PathLike[str]) -> int:
    """One row per (trip, horizon): ``trip_id, horizon_min, issued_at, p10, p50, p90,
    arrival``, times as unix seconds. Returns the number of rows."""

    def s(ms: int) -> str:
        return f"{ms // 1000}.{ms % 1000:03d}"

    with Path(path).open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["trip_id", "horizon_min", "issued_at", "p10", "p50", "p90", "arrival"])
        for f in forecasts:
            writer.writerow(
                [f.trip_id, f.horizon_min, s(f.issued), s(f.p10), s(f.p50), s(f.p90), s(f.arrival)]
            )
    return len(forecasts)


# -- the command line ------------------------------------------------------------------------


def parse_horizons(text: str) -> tuple[int, ...]:
    """``10,5,2`` -> ``(10, 5, 2)``: whole minutes, positive, no repeats."""
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of minutes like 10,5,2") from None
    if not values or min(values) <= 0 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct positive minutes like 10,5,2")
    return values


def add_eval_options(parser: argparse.ArgumentParser) -> None:
    """The ``eval-eta`` options for recorded traces."""
    group = parser.add_argument_group("recorded GPS traces (instead of a simulated day)")
    group.add_argument(
        "--traces",
        type=Path,
        metavar="FILE.csv",
        help="score on recorded trips: CSV with trip_id, vehicle_id, unix_time, lat, lon",
    )
    group.add_argument(
        "--horizons",
        type=parse_horizons,
        metavar="10,5,2",
        help="minutes before each arrival to score at (default 10,5,2 for traces)",
    )
    group.add_argument(
        "--predictions",
        type=Path,
        metavar="OUT.csv",
        help="with --traces: write the window scored for each (trip, horizon) here",
    )
    group.add_argument(
        "--skip-bad",
        action="store_true",
        help="with --traces: leave malformed rows out (counted) instead of stopping",
    )


def cmd_eval_traces(args: argparse.Namespace, graph: RoadGraph) -> int:
    """``fieldstream eval-eta --traces FILE``: print the report, optionally the pairs."""
    import asyncio

    from gateway.cli import CliError
    from gateway.output import emit, progress_bar

    path: Path = args.traces
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    horizons = args.horizons or DEFAULT_HORIZONS_MIN
    show = args.format == "table"
    try:
        with progress_bar(show) as progress:
            task = progress.add_task(f"replay {path.name} through the pipeline", total=None)
            outcome = asyncio.run(
                evaluate_traces(
                    path,
                    graph,
                    horizons_min=horizons,
                    skip_bad=args.skip_bad,
                    on_progress=lambda n: progress.advance(task, n),
                )
            )
    except TraceError as exc:
        hint = "" if args.skip_bad else " (--skip-bad leaves such rows out)"
        raise CliError(f"{path}: {exc}{hint}") from exc
    report = outcome.report
    if args.predictions is not None:
        report["predictions"] = write_predictions(outcome.forecasts, args.predictions)
    if args.format == "json":
        emit([], fmt="json", extra=report)
        return 0
    rows = [{"horizon (min)": h, **values} for h, values in report["horizons"].items()]
    emit(
        rows,
        fmt="table",
        title=f"ETA engine vs baselines on {path.name}: {report['trips']} trips, "
        f"{report['pings']:,} fixes ({report['region'] or 'road graph'})",
    )
    skipped = Counter(s["rule"] for s in report["skipped"])
    examples = {s["rule"]: f"{s['trip_id']}: {s['reason']}" for s in reversed(report["skipped"])}
    lines = [
        {"what": f"bad row: {rule}", "count": n, "example": report["bad_examples"][rule]}
        for rule, n in report["bad_by_rule"].items()
    ]
    lines += [
        {"what": f"fix filtered: {rule}", "count": n, "example": ""}
        for rule, n in report["filtered"].items()
    ]
    lines += [
        {"what": f"trip skipped: {rule}", "count": n, "example": examples[rule]}
        for rule, n in sorted(skipped.items())
    ]
    emit(
        lines,
        fmt="table",
        title=f"{report['rows_read']:,} rows read",
        columns=["what", "count", "example"],
        extra={
            "crow-flies speed (m/s)": report["crowflies_speed_mps"],
            "seconds": round(outcome.seconds, 2),
            "fixes per second": round(report["pings"] / max(outcome.seconds, 1e-9)),
            **({"predictions written": report["predictions"]} if "predictions" in report else {}),
        },
    )
    return 0
