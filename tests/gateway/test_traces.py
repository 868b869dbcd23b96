"""ETAs on recorded GPS traces: the format and its errors, cleaning, the events, no look-ahead,
an untagged OSM region, agreement with the simulator evaluation, and the command."""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import math
import re
import shlex
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from eta_engine.engine import EtaConfig
from eta_engine.osm_build import DEFAULT_SPEED_KPH
from eta_engine.roads import RoadGraph
from events import kinds as k
from events.catalog import TOPIC_OF
from events.codec import Rejection, decode_trusted, encode, validate
from gateway import traces as tr
from gateway.cli import main
from gateway.evaluate import Track, candidate_pairs, score
from simulator.traces import TRACE_COLUMNS, trace_table, write_traces
from streams import prefetch
from streams.pipeline import HORIZON_STEP_MS
from tests.support import graph, simulated_day

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_795_420_800  # 2026-11-23 08:00 UTC, in seconds
Row = tuple[str, str, float, float, float]


def csv_text(rows: Sequence[Sequence[Any]], header: Sequence[str] = TRACE_COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


# -- an invented town on untagged roads ------------------------------------------------------

GRID_N = 9
GRID_LAT0, GRID_LON0 = 52.000, 4.350
GRID_DLAT, GRID_DLON = 0.0036, 0.00584  # about 400 m either way


def grid_osm() -> str:
    """A 9 x 9 street grid whose every way is ``highway=road`` with no ``maxspeed``."""
    nodes, ways = [], []
    for i in range(GRID_N):
        for j in range(GRID_N):
            lat, lon = GRID_LAT0 + i * GRID_DLAT, GRID_LON0 + j * GRID_DLON
            nodes.append(f'  <node id="{i * GRID_N + j + 1}" lat="{lat:.7f}" lon="{lon:.7f}"/>')
    way_id = 100
    for i in range(GRID_N):
        for refs in (
            [i * GRID_N + j + 1 for j in range(GRID_N)],
            [j * GRID_N + i + 1 for j in range(GRID_N)],
        ):
            nds = "".join(f'<nd ref="{r}"/>' for r in refs)
            ways.append(f'  <way id="{way_id}">{nds}<tag k="highway" v="road"/></way>')
            way_id += 1
    body = "\n".join(nodes + ways)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6">\n{body}\n</osm>\n'


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RoadGraph]:
    """The grid town built by ``fieldstream roads build`` from .osm XML."""
    directory = tmp_path_factory.mktemp("town")
    osm, npz = directory / "town.osm", directory / "town.npz"
    osm.write_text(grid_osm())
    assert main(["roads", "build", "--osm", str(osm), "--out", str(npz), "--format", "json"]) == 0
    return npz, RoadGraph.load(npz)


def drive(
    g: RoadGraph,
    rng: np.random.Generator,
    trip: str,
    vehicle: str,
    nodes: list[int],
    start_s: float,
    speed_mps: float,
    every_s: float = 5.0,
) -> tuple[list[Row], float]:
    """Fixes every ``every_s`` along a path at a constant speed (3 m of noise), then the
    arrival at the last node. Returns the rows and the arrival time."""
    lat, lon = g.node_lat[nodes], g.node_lon[nodes]
    legs = tr.haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:])
    at = np.concatenate([[0.0], np.cumsum(legs)])
    total = at[-1] / speed_mps
    rows: list[Row] = []
    for s in np.arange(0.0, total, every_s):
        d = s * speed_mps
        fix_lat = float(np.interp(d, at, lat)) + rng.normal(0, 3.0) / 111_195.0
        fix_lon = float(np.interp(d, at, lon)) + rng.normal(0, 3.0) / 68_500.0
        rows.append((trip, vehicle, round(start_s + s, 3), round(fix_lat, 7), round(fix_lon, 7)))
    rows.append((trip, vehicle, round(start_s + total, 3), float(lat[-1]), float(lon[-1])))
    return rows, start_s + total


def town_day(g: RoadGraph, speed_mps: float, vehicles: int = 4, trips: int = 7) -> list[Row]:
    """Each vehicle drives ``trips`` trips of at least 2 km back to back, 5 minutes apart."""
    rng = np.random.default_rng(7)
    rows: list[Row] = []
    for v in range(vehicles):
        here = int(rng.integers(g.n_nodes))
        clock = float(T0 + 60 * v)
        for n in range(trips):
            while True:
                there = int(rng.integers(g.n_nodes))
                path, _ = g.shortest_path(here, there)
                lat, lon = g.node_lat[path], g.node_lon[path]
                if tr.haversine_m(lat[:-1], lon[:-1], lat[1:], lon[1:]).sum() >= 2000:
                    break
            got, clock = drive(g, rng, f"trip-{v}-{n}", f"van-{v}", path, clock, speed_mps)
            rows += got
            clock += 300.0
            here = there
    return rows


# -- the format and its errors ---------------------------------------------------------------


def test_columns_in_any_order_extra_columns_and_rows_in_any_order_make_the_same_log() -> None:
    g = graph()
    sim = simulated_day()
    table = trace_table(sim)
    rows = [
        (t, v, f"{ms / 1000:.3f}", repr(la), repr(lo))
        for t, v, ms, la, lo in zip(
            table.trip_id,
            table.vehicle_id,
            table.time_ms.tolist(),
            table.lat.tolist(),
            table.lon.tolist(),
            strict=True,
        )
    ][:600]
    plain = csv_text(rows)
    rng = np.random.default_rng(1)
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    other = csv_text(
        [(la, "x", lo, s, v, t) for t, v, s, la, lo in shuffled],
        header=["LAT", "note", " Lon", "Unix_Time", "vehicle_id", "trip_id"],
    )
    other = "\ufeff" + other.replace("\n", "\r\n")

    def log(text: str) -> list[tuple[str, bytes, bytes | None, int | None]]:
        trips = tr.prepare(tr.parse_traces(text), g)
        return [(r.topic, r.value, r.key, r.timestamp_ms) for r in tr.trace_events(trips).records]

    first = log(plain)
    assert first == log(other.encode("utf-8").decode("utf-8-sig"))
    assert sum(1 for topic, *_ in first if topic == "fs.gps") == 600 - 0  # nothing filtered


@pytest.mark.parametrize(
    ("row", "column", "rule", "says"),
    [
        (["t1", "v1", str(T0 + 9)], "lat", "missing_column", "field 4"),
        (["t1", "v1", str(T0 + 9), "abc", "1.5"], "lat", "number", "'abc' is not a number"),
        (["t1", "v1", str(T0 + 9), "95", "1.5"], "lat", "range", "out of range [-90, 90]"),
        (["t1", "v1", str(T0 + 9), "42.5", "nan"], "lon", "number", "not a finite number"),
        (["t1", "v1", str((T0 + 9) * 1000), "42.5", "1.5"], "unix_time", "range", "millisec"),
        (["t1", "", str(T0 + 9), "42.5", "1.5"], "vehicle_id", "empty", "is empty"),
        (["t1", "v1", "", "42.5", "1.5"], "unix_time", "number", "is empty"),
    ],
)
def test_a_bad_row_is_named_by_line_and_column(
    row: list[str], column: str, rule: str, says: str
) -> None:
    good = [["t1", "v1", str(T0 + s), "42.5", "1.5"] for s in range(0, 9, 3)]
    text = csv_text([*good, row, *good])
    with pytest.raises(tr.TraceError) as caught:
        tr.parse_traces(text)
    bad = caught.value.bad
    assert (bad.line, bad.column, bad.rule) == (5, column, rule)
    assert says in bad.message
    assert str(caught.value).startswith(f"line 5, column '{column}'")
    # --skip-bad: left out, counted, and the good rows kept
    raw = tr.parse_traces(text, skip_bad=True)
    assert (raw.rows, len(raw.bad), len(raw.time_ms)) == (7, 1, 6)
    assert raw.bad[0] == bad


def _fields(raw: tr.RawTraces) -> tuple[Any, ...]:
    return (
        raw.trip,
        raw.vehicle,
        raw.time_ms.tolist(),
        raw.lat.tolist(),
        raw.lon.tolist(),
        raw.line.tolist(),
        raw.rows,
        raw.bad,
    )


@pytest.mark.parametrize("skip_bad", [False, True])
def test_a_plain_file_reads_as_the_csv_reader_reads_it(skip_bad: bool) -> None:
    # Plain (one row per line, as wide as the header): cut by splitting. With a carriage
    # return, a blank line or a short row the csv reader reads it: the same rows come out.
    rows = [
        [f" t{i % 3}", f"v{i % 2} ", f"{T0 + i}.25", f" {42.5 + i / 1e4}", "1.5", "x"]
        for i in range(12)
    ]
    rows[4][3] = "abc" if skip_bad else rows[4][3]
    header = [*TRACE_COLUMNS, "note"]
    plain = csv_text(rows, header)
    for other in (
        plain.replace("\n", "\r\n"),
        plain + "\n",
        plain.replace(",x\n", "\n", 1).replace("trip_id", "TRIP_ID"),
        plain[:-1],
    ):
        if skip_bad:
            assert _fields(tr.parse_traces(plain, skip_bad=True)) == _fields(
                tr.parse_traces(other, skip_bad=True)
            )
        else:
            assert _fields(tr.parse_traces(plain)) == _fields(tr.parse_traces(other))
    if skip_bad:
        with pytest.raises(tr.TraceError, match=r"^line 6, column 'lat': 'abc' is not a number"):
            tr.parse_traces(plain)
    assert tr.parse_traces(csv_text([], header)).rows == 0


@pytest.mark.parametrize("seed", range(6))
def test_ids_are_coded_as_numpy_codes_them(seed: int) -> None:
    # Sorted distinct ids and each row's place among them, as np.unique gives them, for ids
    # of any characters (a NUL too: numpy drops a trailing one, and so two ids merge).
    rng = np.random.default_rng(seed)
    alphabet = ["a", "b", "Z", "0", "-", " ", "é", "ß", "中", "\U0001f69a", "\x01"]
    if seed % 2:
        alphabet.append("\0")
    values = [
        "".join(rng.choice(alphabet, size=rng.integers(0, 4)).tolist())
        for _ in range(rng.integers(0, 60))
    ]
    if seed % 2:
        values += [value + "\0" for value in values[:5]]
    names, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
    got_names, got_codes = tr._coded(values)
    assert got_names == names.tolist()
    assert got_codes.dtype == np.int64
    assert got_codes.tolist() == codes.ravel().tolist()


def test_the_header_must_name_every_column() -> None:
    with pytest.raises(tr.TraceError, match=r"line 1, column 'lon': the header has no column"):
        tr.parse_traces("trip_id,vehicle_id,unix_time,lat\nt,v,1,2\n")
    with pytest.raises(tr.TraceError, match="empty file"):
        tr.parse_traces("\n\n")


def test_line_numbers_count_blank_lines_and_quoted_line_breaks(tmp_path: Path) -> None:
    text = (
        "trip_id,vehicle_id,unix_time,lat,lon\n"
        f't1,v1,{T0},42.5,1.5\n\n"t,2","v\n1",{T0},42.5,1.5\n'
        f"t1,v1,{T0 + 5},42.5,1.5\n"
        f"t1,v1,{T0 + 9},42.5,x\n"
    )
    with pytest.raises(tr.TraceError, match=r"^line 7, column 'lon'"):
        tr.parse_traces(text)
    unquoted = text.replace('"t,2","v\n1"', "t2,v1") + f"t1,v1,{T0 + 12},-91,1.5\n"
    with pytest.raises(tr.TraceError, match=r"^line 6, column 'lon'"):
        tr.parse_traces(unquoted)
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"trip_id,vehicle_id,unix_time,lat,lon\nt1,v\xe9,1,2,3\n")
    with pytest.raises(tr.TraceError, match=r"^line 2: not UTF-8"):
        tr.read_traces(path)


# -- cleaning --------------------------------------------------------------------------------


def test_bad_fixes_are_filtered_and_bad_trips_skipped_with_their_reason(
    town: tuple[Path, RoadGraph],
) -> None:
    _, g = town
    rows = town_day(g, speed_mps=6.0, vehicles=2, trips=3)
    by_trip: dict[str, list[Row]] = {}
    for r in rows:
        by_trip.setdefault(r[0], []).append(r)
    t00 = by_trip["trip-0-0"]

    def far_corner(row: Row) -> tuple[float, float]:
        """The corner of the town farthest from a fix (on a road, kilometres away)."""
        corners = [(i, j) for i in (0, GRID_N - 1) for j in (0, GRID_N - 1)]
        far = max(
            corners,
            key=lambda c: (
                abs(GRID_LAT0 + c[0] * GRID_DLAT - row[3]) * 1.6
                + abs(GRID_LON0 + c[1] * GRID_DLON - row[4])
            ),
        )
        return GRID_LAT0 + far[0] * GRID_DLAT, GRID_LON0 + far[1] * GRID_DLON

    far_lat = GRID_LAT0 - 0.02  # 2 km south of the town
    extra: list[Row] = [
        t00[5],  # a duplicate timestamp (same vehicle, same time)
        ("trip-0-0", "van-0", t00[9][2] + 1.0, *far_corner(t00[9])),  # kilometres in a second
        ("trip-0-0", "van-0", t00[12][2] + 1.0, far_lat, t00[12][4]),  # far off the roads
        ("lost", "van-9", T0 + 10.0, GRID_LAT0, GRID_LON0),
        ("lost", "van-9", T0 + 20.0, far_lat, GRID_LON0),  # its destination: off the map
        ("two-vans", "van-7", T0 + 10.0, GRID_LAT0, GRID_LON0),
        ("two-vans", "van-8", T0 + 20.0, GRID_LAT0, GRID_LON0),
        ("alone", "van-6", T0 + 10.0, GRID_LAT0, GRID_LON0),
        ("overlap", "van-1", by_trip["trip-1-1"][3][2] + 0.5, GRID_LAT0, GRID_LON0),
        ("overlap", "van-1", by_trip["trip-1-1"][4][2] + 0.5, GRID_LAT0, GRID_LON0),
    ]
    t10 = by_trip["trip-1-0"]
    last = t10[-1]
    # trip-1-0 ends with a jump: its destination cannot be trusted
    rows = [r for r in rows if r != last] + [(*last[:3], *far_corner(last))]
    trips = tr.prepare(tr.parse_traces(csv_text(rows + extra)), g)
    assert trips.filtered == {"duplicate_time": 1, "jump": 1, "off_road": 1}
    skipped = {s.trip_id: s.rule for s in trips.skipped}
    assert skipped == {
        "lost": "destination_off_road",
        "two-vans": "several_vehicles",
        "alone": "too_few_fixes",
        "overlap": "overlapping",
        "trip-1-0": "destination_jump",
    }
    reasons = {s.trip_id: s.reason for s in trips.skipped}
    assert re.fullmatch(
        r"its destination is 2,\d{3} m from the nearest road \(limit 200 m\)", reasons["lost"]
    )
    assert "van-7, van-8" in reasons["two-vans"]
    assert "trip-1-1" in reasons["overlap"]
    kept = {trips.trip_names[c] for c in trips.trip_of.tolist()}
    assert kept == {f"trip-{v}-{n}" for v in (0, 1) for n in range(3)} - {"trip-1-0"}
    # what is left is clean: one fix per vehicle and time, and nothing implausible
    assert len(trips.time_ms) == len(rows) - len(t10) + 0  # trip-1-0 gone, extras filtered
    assert not tr.jumps(trips.vehicle, trips.time_ms, trips.lat, trips.lon, tr.TraceRules()).any()


def test_a_wrong_first_fix_is_blamed_after_three_rejections_in_a_row() -> None:
    rules = tr.TraceRules()
    n = 8
    vehicle = np.zeros(n, dtype=np.int64)
    time_ms = np.arange(n, dtype=np.int64) * 10_000
    lat = np.full(n, 42.5) + np.arange(n) * 0.0005  # 55 m every 10 s: plausible
    lon = np.full(n, 1.5)
    lat[0] = 43.5  # the first fix is 110 km away
    jumped = tr.jumps(vehicle, time_ms, lat, lon, rules)
    assert jumped.tolist() == [False, True, True, True, False, False, False, False]
    lat[0] = 42.5
    lat[5] = 44.0  # one outlier in a clean trace: only it goes
    assert tr.jumps(vehicle, time_ms, lat, lon, rules).tolist() == [i == 5 for i in range(n)]


# -- the events ------------------------------------------------------------------------------


def test_records_are_what_ingest_would_write() -> None:
    g = graph()
    trips = tr.prepare(tr.parse_traces(_day_csv()), g)
    replay = tr.trace_events(trips)
    assert replay.records
    kinds: set[str] = set()
    for record in replay.records:
        event = validate(record.value)
        assert not isinstance(event, Rejection), event
        kinds.add(event.type)
        assert record.topic == TOPIC_OF[event.type].name
        assert record.key == event.key.encode()
        assert record.timestamp_ms == event.time
        assert encode(event) == record.value  # byte for byte what the codec writes
    assert kinds == {
        "TechnicianRegistered",
        "ShiftStarted",
        "WorkOrderBooked",
        "TechnicianAssigned",
        "TechnicianEnRoute",
        "GpsPinged",
        "TechnicianArrived",
        "WorkStarted",
        "WorkCompleted",
        "TechnicianDeparted",
    }
    times = [r.timestamp_ms or 0 for r in replay.records]
    assert times == sorted(times)
    # Setting off for the next trip says the vehicle left the last site at once (the fleet's
    # geofence would say it a pipeline round later, and the engine would then price the drive
    # from a stale moment).
    events = [decode_trusted(r.value) for r in replay.records]
    departed = {e.work_order_id: e.time for e in events if isinstance(e, k.TechnicianDeparted)}
    booked = {e.work_order_id: e.time for e in events if isinstance(e, k.WorkOrderBooked)}
    trips_of: dict[str, list[str]] = {}
    for e in events:
        if isinstance(e, k.TechnicianAssigned):
            trips_of.setdefault(e.technician_id, []).append(e.work_order_id)
    assert sum(len(v) - 1 for v in trips_of.values()) == len(departed) > 10
    for chain in trips_of.values():
        for before, after in itertools.pairwise(chain):
            assert departed[before] < booked[after]


def test_events_before_t_do_not_depend_on_fixes_after_t() -> None:
    """Changing every fix after ``t`` (but each trip's destination) changes nothing before t:
    the promised window, shift, speeds and headings come from the past only."""
    g = graph()
    raw = tr.parse_traces(_day_csv())
    cut = int(np.quantile(raw.time_ms, 0.5))
    trips = tr.prepare(raw, g)
    ends = {
        trips.trip_names[c]: int(trips.time_ms[e - 1])
        for c, e in zip(trips.trip_of.tolist(), trips.end.tolist(), strict=True)
    }
    later = (raw.time_ms > cut) & np.array(
        [t != ends.get(n) for n, t in zip(raw.trip, raw.time_ms.tolist(), strict=True)]
    )
    moved = tr.RawTraces(
        raw.trip,
        raw.vehicle,
        raw.time_ms,
        raw.lat + later * 0.0004,
        raw.lon - later * 0.0003,
        raw.line,
        raw.rows,
        raw.bad,
    )

    def before(r: tr.RawTraces) -> list[bytes]:
        return [x.value for x in tr.trace_events(tr.prepare(r, g)).until(cut).records]

    assert before(raw) == before(moved)
    assert (
        tr.trace_events(tr.prepare(raw, g)).records != tr.trace_events(tr.prepare(moved, g)).records
    )


@cache
def _day_csv() -> str:
    out = io.StringIO()
    table = trace_table(simulated_day())
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(TRACE_COLUMNS)
    for t, v, ms, la, lo in zip(
        table.trip_id,
        table.vehicle_id,
        table.time_ms.tolist(),
        table.lat.tolist(),
        table.lon.tolist(),
        strict=True,
    ):
        writer.writerow([t, v, f"{ms // 1000}.{ms % 1000:03d}", repr(la), repr(lo)])
    return out.getvalue()


# -- through the pipeline --------------------------------------------------------------------


def _times(records: list[bytes]) -> list[tuple[int, bytes]]:
    out = []
    for raw in records:
        event = decode_trusted(raw)
        assert isinstance(event, k.EtaUpdated)
        out.append((event.time, raw))
    return sorted(out)


def test_a_window_published_at_t_depends_only_on_the_log_up_to_t() -> None:
    g = graph()
    replay = tr.trace_events(tr.prepare(tr.parse_traces(_day_csv()), g))
    full = _times(asyncio.run(tr.replay_through_pipeline(replay, g)))
    assert len(full) > 50
    for share in (0.35, 0.7):
        # The pipeline works a backlog through in whole windows of its event-time grid: a cut
        # on the grid is a moment the live pipeline also stops at.
        at = full[int(len(full) * share)][0] // HORIZON_STEP_MS * HORIZON_STEP_MS
        cut = _times(asyncio.run(tr.replay_through_pipeline(replay.until(at), g)))
        assert [r for t, r in full if t <= at] == [r for _, r in cut]
        assert 0 < len(cut) < len(full)


def test_simulator_traces_score_like_the_simulator_evaluation(tmp_path: Path) -> None:
    """The same day, scored from the simulator's log and from its exported traces, on the same
    (trip, horizon) pairs: the baselines read the same fixes, the engine sees the drives."""
    from gateway.feed import Clock, feed
    from simulator import encoded_lines
    from streams.bootstrap import build_stages, open_log, open_state_store
    from streams.config import Config
    from streams.pipeline import run_until_idle
    from streams.replay import read_topic

    g = graph()
    sim = simulated_day()
    table = trace_table(sim)
    horizons = (10, 5, 2)

    async def day() -> tuple[list[bytes], list[bytes]]:
        config = Config(data_dir=tmp_path / "sim")
        log = await open_log(config)
        store = open_state_store(config.data_dir, None)
        try:
            await feed(log, encoded_lines(sim), clock=Clock(None))
            await run_until_idle(build_stages(log, store, config, g))
            return await read_topic(log, "fs.eta"), await read_topic(log, "fs.gps")
        finally:
            store.close()
            await log.close()

    etas, gps = asyncio.run(day())
    drives: dict[str, list[tuple[int, int]]] = {}
    for row in table.truth:
        drives.setdefault(row["work_order_id"], []).append((row["en_route_ms"], row["arrival_ms"]))

    def on_the_way(raw: bytes) -> bool:  # the windows a trace replay can have: en route
        e = decode_trusted(raw)
        assert isinstance(e, k.EtaUpdated)
        return any(a <= e.time <= b for a, b in drives.get(e.work_order_id, []))

    sites = {
        e.work_order_id: (e.site_lat, e.site_lon)
        for e in sim.event_list
        if isinstance(e, k.WorkOrderBooked)
    }
    simulated = score(
        truth=table.truth,
        eta_records=[r for r in etas if on_the_way(r)],
        alert_records=(),
        gps_records=gps,
        sites=sites,
        graph=g,
        horizons_min=horizons,
    )["horizons"]
    path = tmp_path / "day.csv"
    write_traces(table, path)
    outcome = asyncio.run(tr.evaluate_traces(path, g, horizons_min=horizons))
    assert outcome.report["trips"] == len(table.truth)
    assert outcome.report["skipped"] == []
    traced = outcome.report["horizons"]
    for h in map(str, horizons):
        a, b = simulated[h], traced[h]
        assert abs(a["visits"] - b["visits"]) <= 2 and b["visits"] > 20
        for baseline in ("crowflies_mae_min", "freeflow_mae_min"):
            assert b[baseline] == pytest.approx(a[baseline], abs=0.02)
        assert b["engine_mae_min"] == pytest.approx(a["engine_mae_min"], abs=0.35, rel=0.4)
        assert abs(b["coverage"] - a["coverage"]) <= 0.15
        assert b["median_width_min"] == pytest.approx(a["median_width_min"], rel=0.5)


def test_predictions_are_the_pairs_the_report_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch, "_cores", lambda: 2)  # work ahead even on one core
    g = graph()
    path = tmp_path / "day.csv"
    path.write_text(_day_csv())
    horizons = (10, 5, 2)
    outcome = asyncio.run(tr.evaluate_traces(path, g, horizons_min=horizons))
    report = outcome.report
    for h in horizons:
        pairs = [f for f in outcome.forecasts if f.horizon_min == h]
        assert len(pairs) == report["horizons"][str(h)]["visits"] > 0
        mae = sum(abs(f.p50 - f.arrival) for f in pairs) / len(pairs) / 60_000
        assert mae == pytest.approx(report["horizons"][str(h)]["engine_mae_min"], abs=1e-3)
        covered = sum(f.p10 <= f.arrival <= f.p90 for f in pairs) / len(pairs)
        assert covered == pytest.approx(report["horizons"][str(h)]["coverage"], abs=1e-4)
        assert all(f.issued <= f.arrival - h * 60_000 for f in pairs)
    # scoring reads only the fixes it needs, and gets what it gets from all of them
    trips = tr.prepare(tr.read_traces(path), g)
    replay = tr.trace_events(trips)
    etas = asyncio.run(tr.replay_through_pipeline(replay, g))
    common: dict[str, Any] = dict(
        truth=replay.truth,
        eta_records=etas,
        alert_records=(),
        sites=replay.sites,
        graph=g,
        horizons_min=horizons,
    )
    few = tr.scored_fixes(trips, replay.truth, replay.pings, horizons)
    assert len(few) < len(replay.pings) / 5
    assert score(gps_records=few, **common) == score(gps_records=replay.pings, **common)
    assert score(gps_records=Track.of(few), **common) == score(gps_records=few, **common)
    # the free-flow baseline of every pair that might be scored, computed ahead on another
    # core, scores the same; so does half of it (the rest computed in the scoring); a wrong
    # value there would show (the scoring takes them)
    ahead = tr.FreeFlowPrefetch.start(
        g, *candidate_pairs(replay.truth, replay.sites, Track.of(few), horizons)
    ).result()
    assert ahead
    baseline = score(gps_records=few, **common)
    assert score(gps_records=few, free_flow=ahead, **common) == baseline
    half = dict(list(ahead.items())[::2])
    assert score(gps_records=few, free_flow=half, **common) == baseline
    wrong = {key: seconds + 600.0 for key, seconds in ahead.items()}
    assert score(gps_records=few, free_flow=wrong, **common) != baseline


# -- a region with no speed tags -------------------------------------------------------------


def test_an_untagged_region_builds_from_xml_and_pbf_and_routes(
    town: tuple[Path, RoadGraph], tmp_path: Path
) -> None:
    osmium = pytest.importorskip("osmium")
    npz, g = town
    assert g.n_nodes == GRID_N * GRID_N
    assert g.n_edges == 4 * GRID_N * (GRID_N - 1)  # every street two-way
    assert np.all(g.edge_speed_kph == DEFAULT_SPEED_KPH["road"])
    with np.load(npz) as data:
        assert not data["edge_speed_tagged"].any()
    path, seconds = g.shortest_path(0, g.n_nodes - 1)
    corner_to_corner = 2 * (GRID_N - 1) * 400.0  # metres, roughly
    assert seconds == pytest.approx(corner_to_corner / (30 / 3.6), rel=0.02)
    assert len(path) == 2 * (GRID_N - 1) + 1
    # the same town as .osm.pbf builds the same graph
    xml = tmp_path / "town.osm"
    xml.write_text(grid_osm())
    pbf = tmp_path / "town.osm.pbf"
    writer = osmium.SimpleWriter(str(pbf))
    try:
        for obj in osmium.FileProcessor(str(xml), osmium.osm.NODE | osmium.osm.WAY):
            if isinstance(obj, osmium.osm.Node):
                writer.add_node(obj)
            else:
                writer.add_way(obj)
    finally:
        writer.close()
    out = tmp_path / "pbf.npz"
    assert main(["roads", "build", "--osm", str(pbf), "--out", str(out), "--format", "json"]) == 0
    other = RoadGraph.load(out)
    np.testing.assert_array_equal(other.edge_src, g.edge_src)
    np.testing.assert_array_equal(other.edge_speed_kph, g.edge_speed_kph)


def test_on_untagged_roads_the_engine_starts_from_the_prior_and_learns(
    town: tuple[Path, RoadGraph], tmp_path: Path
) -> None:
    _, g = town
    true_speed = 0.5 * DEFAULT_SPEED_KPH["road"] / 3.6  # the vans crawl at half the default
    path = tmp_path / "town.csv"
    path.write_text(csv_text(town_day(g, true_speed)))
    trips = tr.prepare(tr.read_traces(path), g)
    replay = tr.trace_events(trips, region=g.region)
    etas = [decode_trusted(r) for r in asyncio.run(tr.replay_through_pipeline(replay, g))]
    # Cold start: the first window of the day is free flow times the documented prior.
    first = min((e for e in etas if isinstance(e, k.EtaUpdated)), key=lambda e: e.time)
    row = next(r for r in replay.truth if r["work_order_id"] == first.work_order_id)
    site = g.nearest_node(*replay.sites[first.work_order_id])[0]
    s = next(
        i
        for i, c in enumerate(trips.trip_of.tolist())
        if trips.trip_names[c] == first.work_order_id
    )
    start = g.nearest_node(float(trips.lat[trips.start[s]]), float(trips.lon[trips.start[s]]))[0]
    free = float(g.time_field_to(site)[start])
    assert 0 <= row["en_route_ms"] - first.time < 1000  # set off, or the first fix
    predicted = (first.p50 - first.time) / 1000.0
    assert predicted == pytest.approx(EtaConfig().prior_speed_factor * free, rel=0.1)
    # ...and learns the real speeds from the fixes: far better than free flow, and better
    # than a straight line at the speed fitted on the whole file (which knows the answer).
    outcome = asyncio.run(tr.evaluate_traces(path, g))
    for h, values in outcome.report["horizons"].items():
        assert values["visits"] >= 15, h
        assert values["engine_mae_min"] < 0.5 * values["freeflow_mae_min"], (h, values)
        assert values["engine_mae_min"] < values["crowflies_mae_min"], (h, values)


# -- the command -----------------------------------------------------------------------------


def test_eval_eta_traces_prints_the_documented_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "day.csv"
    path.write_text(_day_csv() + "t9,v9,not-a-time,42.5,1.5\n")
    out = tmp_path / "pairs.csv"
    argv = ["eval-eta", "--traces", str(path), "--horizons", "10,5,2"]
    assert main([*argv, "--format", "json"]) == 2
    assert re.search(
        r"line \d+, column 'unix_time': 'not-a-time' is not a number", capsys.readouterr().err
    )
    assert main([*argv, "--skip-bad", "--predictions", str(out), "--format", "json"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert set(doc["horizons"]) == {"10", "5", "2"}
    for values in doc["horizons"].values():
        assert set(values) >= {
            "engine_mae_min",
            "crowflies_mae_min",
            "freeflow_mae_min",
            "coverage",
            "median_width_min",
        }
    assert doc["trips"] > 30 and doc["pings"] > 1000
    assert doc["bad_rows"] == 1 and doc["bad_by_rule"] == {"number": 1}
    assert isinstance(doc["skipped"], list)
    with out.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["trip_id", "horizon_min", "issued_at", "p10", "p50", "p90", "arrival"]
    assert len(rows) == doc["predictions"] == sum(v["visits"] for v in doc["horizons"].values())
    assert all(
        float(r["issued_at"]) <= float(r["arrival"]) - 60 * int(r["horizon_min"]) for r in rows
    )
    assert main([*argv, "--skip-bad"]) == 0  # the table
    assert "engine_mae_min" in capsys.readouterr().out
    assert main(["eval-eta", "--skip-bad"]) == 2  # without --traces


def test_the_example_file_ships_and_the_readme_commands_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## ETAs on your own fleet's history", 1)[1].split("\n## ", 1)[0]
    commands = [
        shlex.split(line.removeprefix("$ .venv/bin/fieldstream "))
        for line in re.findall(r"^\$ \.venv/bin/fieldstream .*$", section, flags=re.M)
    ]
    assert any("examples/traces/andorra-vans.csv" in c for c in commands)
    example = tr.read_traces(ROOT / "examples" / "traces" / "andorra-vans.csv")
    assert not example.bad and 500 < example.rows < 5000
    monkeypatch.chdir(ROOT)
    for command in commands:
        # files the commands write (and read back) go to a temporary directory
        argv = [
            str(tmp_path / a) if a.endswith((".csv", ".jsonl")) and "/" not in a else a
            for a in command
        ]
        assert main([*argv, "--format", "json"]) == 0, argv


def test_horizons_must_be_distinct_positive_minutes() -> None:
    assert tr.parse_horizons("10,5,2") == (10, 5, 2)
    for text in ("10,x", "0,5", "5,5", ""):
        with pytest.raises(Exception, match="minutes"):
            tr.parse_horizons(text)
    assert math.isclose(
        tr.haversine_m(np.array(0.0), np.array(0.0), np.array(1.0), np.array(0.0)),
        111_195.08,
        rel_tol=1e-6,
    )
