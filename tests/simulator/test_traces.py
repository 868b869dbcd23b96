"""A simulated day's drives exported as GPS traces (``simulate --export-traces``)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from events import kinds as k
from simulator.engine import Simulation
from simulator.traces import TRACE_COLUMNS, trace_table, write_traces

Run = Callable[..., Simulation]


@pytest.fixture(scope="module")
def sim(run: Run) -> Simulation:
    return run("normal", technicians=8, seed=4, hours=6.0)


def test_each_trip_is_one_drive_ending_at_the_site_at_the_true_arrival(sim: Simulation) -> None:
    table = trace_table(sim)
    sites = {
        e.work_order_id: (e.site_lat, e.site_lon)
        for e in sim.event_list
        if isinstance(e, k.WorkOrderBooked)
    }
    assert table.truth, "a six-hour day has drives"
    trips = np.asarray(table.trip_id)
    for row in table.truth:
        rows = np.flatnonzero(trips == row["trip_id"])
        assert len(rows) >= 2
        assert np.all(np.diff(rows) == 1), "a trip's rows are contiguous"
        times = table.time_ms[rows]
        assert np.all(np.diff(times) > 0)
        assert times[0] >= row["en_route_ms"]
        assert times[-1] == row["arrival_ms"]
        assert (table.lat[rows[-1]], table.lon[rows[-1]]) == sites[row["work_order_id"]]
        assert {table.vehicle_id[i] for i in rows} == {row["technician_id"]}
        # every fix the phone sent on the way is there, and nothing from before or after
        tech = sim.technicians.ids.index(row["technician_id"])
        p = sim.pings
        sent = (p.tech == tech) & (p.time_ms >= row["en_route_ms"]) & (p.time_ms < times[-1])
        assert sorted(p.time_ms[sent].tolist()) == times[:-1].tolist()


def test_visits_without_a_fix_on_the_way_are_left_out(sim: Simulation) -> None:
    table = trace_table(sim)
    exported = {r["trip_id"] for r in table.truth}
    for row in sim.truth:
        tech = sim.technicians.ids.index(row["technician_id"])
        p = sim.pings
        on_the_way = (
            (p.tech == tech) & (p.time_ms >= row["en_route_ms"]) & (p.time_ms < row["arrival_ms"])
        )
        name = f"{row['work_order_id']}-{row['visit']}"
        assert (name in exported) == bool(on_the_way.any())


def test_the_csv_round_trips_exactly(sim: Simulation, tmp_path: Path) -> None:
    path = tmp_path / "traces.csv"
    table = trace_table(sim)
    assert write_traces(sim, path) == len(table.truth)
    with path.open(newline="") as stream:
        rows = list(csv.reader(stream))
    assert tuple(rows[0]) == TRACE_COLUMNS
    body = rows[1:]
    assert [r[0] for r in body] == table.trip_id
    assert [r[1] for r in body] == table.vehicle_id
    assert [round(float(r[2]) * 1000) for r in body] == table.time_ms.tolist()
    assert [float(r[3]) for r in body] == table.lat.tolist()
    assert [float(r[4]) for r in body] == table.lon.tolist()


def test_the_cli_exports_traces_alongside_the_day(tmp_path: Path) -> None:
    from gateway.cli import main

    out, traces = tmp_path / "day.jsonl", tmp_path / "traces.csv"
    argv = ["simulate", "--technicians", "3", "--seed", "2", "--hours", "3", "--out", str(out)]
    assert main([*argv, "--export-traces", str(traces), "--format", "json"]) == 0
    lines = traces.read_text().splitlines()
    assert lines[0] == ",".join(TRACE_COLUMNS)
    assert len(lines) > 10
