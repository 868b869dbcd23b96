"""The GPS error and schedule model, checked against what simulator.gps documents."""

from __future__ import annotations

import numpy as np

from simulator.engine import Simulation
from simulator.world import EARTH_M_PER_DEG


def _error_m(sim: Simulation) -> np.ndarray:
    p = sim.pings
    dy = (p.lat - p.true_lat) * EARTH_M_PER_DEG
    dx = (p.lon - p.true_lon) * EARTH_M_PER_DEG * np.cos(np.radians(p.true_lat))
    return np.asarray(np.hypot(dx, dy))


def test_errors_match_the_reported_accuracy_68_percent_convention(day: Simulation) -> None:
    error = _error_m(day)
    ordinary = day.pings.accuracy_m <= 12.0
    within = float(np.mean(error[ordinary] <= day.pings.accuracy_m[ordinary]))
    assert 0.64 < within < 0.72
    assert 3.0 < float(np.mean(error[ordinary])) < 10.0
    assert float(np.mean(~ordinary)) < 0.01  # multipath outliers are rare


def test_driving_fixes_have_heading_and_speed_parked_ones_do_not_move(day: Simulation) -> None:
    p = day.pings
    driving = ~np.isnan(p.heading_deg)
    assert 0.3 < float(np.mean(driving)) < 0.95
    assert np.all((p.heading_deg[driving] >= 0.0) & (p.heading_deg[driving] <= 360.0))
    assert float(np.median(p.speed_mps[driving])) > 3.0
    assert float(p.speed_mps[~driving].max()) < 1.0
    # Parked fixes are at a node: their true position never changes between two of them.
    order = np.lexsort((p.time_ms, p.tech))
    parked = ~driving[order]
    both = parked[1:] & parked[:-1] & (p.tech[order][1:] == p.tech[order][:-1])
    moved = np.hypot(np.diff(p.true_lat[order]), np.diff(p.true_lon[order]))[both]
    assert float(np.mean(moved == 0.0)) > 0.9


def test_fix_intervals_follow_the_phase_ranges(day: Simulation) -> None:
    p = day.pings
    order = np.lexsort((p.time_ms, p.tech))
    same = p.tech[order][1:] == p.tech[order][:-1]
    gaps = np.diff(p.time_ms[order])[same] / 1000.0
    assert float(gaps.min()) >= 5.0
    driving = ~np.isnan(p.heading_deg[order])[1:][same]
    assert 5.0 <= float(np.median(gaps[driving])) <= 15.0
    assert 55.0 <= float(np.median(gaps[~driving])) <= 65.0


def test_most_fixes_arrive_within_seconds_some_minutes_late(day: Simulation) -> None:
    latency = (day.pings.delivery_ms - day.pings.time_ms) / 1000.0
    assert float(latency.min()) >= 0.2
    assert float(np.median(latency)) < 3.0
    late = float(np.mean(latency >= 20.0))
    assert 0.01 < late < 0.06  # normal: 3 % buffered
