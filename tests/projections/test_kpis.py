"""Every KPI of the projection equals the same KPI computed independently (tests/projections/
reference.py) from the simulator's truth and the raw events, for every day and group."""

from __future__ import annotations

import math

import orjson
import pytest

from projections.kpis import METRIC_BY_NAME, METRICS
from streams.projection_store import SqliteProjectionStore
from tests.projections.conftest import ProcessedDay
from tests.projections.reference import METRICS as REFERENCE
from tests.projections.reference import Key, Reference, day

Table = dict[str, dict[Key, float | None]]


@pytest.fixture(scope="module")
def reference(processed_day: ProcessedDay) -> Reference:
    return Reference(processed_day.records)


@pytest.fixture(scope="module")
def projected(processed_day: ProcessedDay) -> Table:
    store = SqliteProjectionStore.in_dir(processed_day.data_dir)
    try:
        table: Table = {m.name: {} for m in METRICS}
        for d, dim, grp, metric, value in store.kpi_rows():
            table[metric][(d, dim, grp)] = value
        return table
    finally:
        store.close()


def test_every_kpi_has_an_independent_computation() -> None:
    assert set(REFERENCE) == {m.name for m in METRICS}


def test_the_reference_agrees_with_the_simulators_truth(
    reference: Reference, processed_day: ProcessedDay
) -> None:
    """The independent computation reads the visits the truth file describes: same visits,
    technicians, windows, en-route times; arrivals within minutes of the true ones, the same
    late flag (but within two minutes of the window's end), and GPS leg distances close to
    the roads driven."""
    truth = {(row["work_order_id"], row["visit"]): row for row in processed_day.sim.truth}
    arrived = {key for key, v in reference.visits.items() if v.arrived_at is not None}
    assert arrived == set(truth)
    gps_km = road_km = 0.0
    for key, row in truth.items():
        v = reference.visits[key]
        assert v.technician == row["technician_id"]
        assert v.window == (row["window_start_ms"], row["window_end_ms"])
        assert v.en_route_at == row["en_route_ms"]
        assert abs(v.arrived_at - row["arrival_ms"]) < 3 * 60_000, (key, v.arrived_by)
        if row["arrival_tapped"] and v.arrived_by == "app":
            assert 5_000 <= v.arrived_at - row["arrival_ms"] <= 60_000
        if abs(row["arrival_ms"] - row["window_end_ms"]) > 2 * 60_000:
            assert reference.late(v) == row["late"], key
        gps_km += reference.leg_mm(v) / 1e6
        road_km += row["distance_m"] / 1000
    assert 0.85 * road_km < gps_km < 1.05 * road_km, (gps_km, road_km)


@pytest.mark.parametrize("metric", [m.name for m in METRICS])
def test_kpi_equals_the_independent_computation(
    metric: str, reference: Reference, projected: Table, processed_day: ProcessedDay
) -> None:
    kind = METRIC_BY_NAME[metric].kind
    missing = 0.0 if kind == "count" else None
    expected = reference.metric(metric)
    got = projected[metric]
    wrong = []
    for key in sorted(set(expected) | set(got)):
        e = expected.get(key, missing)
        g = got.get(key, missing)
        same = (e is None and g is None) or (
            e is not None and g is not None and math.isclose(g, e, rel_tol=1e-9, abs_tol=1e-9)
        )
        if not same:
            wrong.append((key, g, e))
    assert not wrong, f"{len(wrong)} groups differ (key, projected, expected): {wrong[:5]}"
    # every KPI is exercised by the day: the fleet's value is there and not trivially empty
    fleet = expected.get((day(processed_day.sim.params.shift_start_ms), "all", "all"))
    assert fleet is not None and (kind != "count" or fleet > 0), orjson.dumps(fleet)
    assert len([v for v in expected.values() if v is not None]) > 5
