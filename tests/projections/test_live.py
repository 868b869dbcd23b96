"""The live-tracking view: what a dispatcher's map and a customer's page read, at moments of
the simulated day chosen from the truth file."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from events import kinds as k
from events.codec import decode
from projections.fold import TOPICS, Projection
from projections.views import LIVE_TECHNICIAN_COLUMNS, LIVE_WORK_ORDER_COLUMNS
from streams.log import Record
from streams.projection_store import SqliteProjectionStore
from tests.projections.conftest import ProcessedDay


def _as_of(records: dict[str, list[Record]], until: int) -> Projection:
    """The fold over every record stamped up to ``until``, each partition in offset order,
    in a few batches (as the stage would)."""
    projection = Projection()
    for topic in TOPICS:
        by_partition: dict[int, list[Record]] = {}
        for r in records.get(topic, []):
            if r.timestamp_ms <= until:
                by_partition.setdefault(r.partition, []).append(r)
        for part in by_partition.values():
            projection.apply(topic, part)
    projection.flush()
    return projection


def _tech(p: Projection, tid: str) -> dict[str, Any]:
    return dict(zip(LIVE_TECHNICIAN_COLUMNS, p.live_technician(tid), strict=True))


def _order(p: Projection, wo: str) -> dict[str, Any]:
    return dict(zip(LIVE_WORK_ORDER_COLUMNS, p.live_work_order(wo), strict=True))


def _visit(day: ProcessedDay, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    # a first visit with a long enough drive to look at it mid-way
    return next(r for r in rows if r["visit"] == 1 and r["travel_s"] > 600)


def test_a_technician_on_the_way_then_on_site(processed_day: ProcessedDay) -> None:
    row = _visit(processed_day, processed_day.sim.truth)
    tid, wo = row["technician_id"], row["work_order_id"]
    driving = row["en_route_ms"] + (row["arrival_ms"] - row["en_route_ms"]) // 2
    p = _as_of(processed_day.records, driving)
    tech = _tech(p, tid)
    assert tech["on_shift"] is True
    assert tech["status"] == "en_route"
    assert tech["current_work_order"] == wo
    assert driving - 3 * 60_000 < tech["position_time"] <= driving
    assert tech["lat"] is not None and tech["lon"] is not None
    order = _order(p, wo)
    assert order["status"] == "en_route"
    assert order["technician_id"] == tid
    assert (order["window_start"], order["window_end"]) == (
        row["window_start_ms"],
        row["window_end_ms"],
    )
    assert order["eta_time"] is not None and order["eta_time"] <= driving
    assert order["eta_p10"] <= order["eta_p50"] <= order["eta_p90"]

    after = _as_of(processed_day.records, row["arrival_ms"] + 5 * 60_000)
    assert _tech(after, tid)["status"] == "on_site"
    assert _tech(after, tid)["current_work_order"] == wo
    assert _order(after, wo)["status"] in ("arrived", "in_progress", "paused")
    assert _order(after, wo)["eta_time"] is None  # no ETA once arrived


def test_an_active_late_alert_shows_until_it_is_cleared_or_the_arrival(
    processed_day: ProcessedDay,
) -> None:
    alerts = [
        e
        for e in (decode(r.value) for r in processed_day.records["fs.alerts"])
        if isinstance(e, k.LateAlertRaised)
    ]
    assert alerts, "the day should raise late alerts"
    alert = alerts[0]
    p = _as_of(processed_day.records, alert.time)
    order = _order(p, alert.work_order_id)
    assert order["alert_active"] is True
    assert order["alert_message"] == alert.message
    assert order["alert_probability"] == pytest.approx(alert.probability_late)
    end = _as_of(processed_day.records, 2**62)
    assert _order(end, alert.work_order_id)["alert_active"] is False


def test_after_hours_nobody_is_shown_on_the_map(processed_day: ProcessedDay) -> None:
    store = SqliteProjectionStore.in_dir(processed_day.data_dir)
    try:
        technicians = store.live_technicians()
        orders = store.live_work_orders()
        one = store.live_work_orders(orders[0]["work_order_id"])
    finally:
        store.close()
    assert {t["technician_id"] for t in technicians} == set(processed_day.sim.technicians.ids)
    for t in technicians:  # every shift ended: no position, off shift
        assert t["on_shift"] in (False, 0)
        assert t["status"] == "off_shift"
        assert t["lat"] is None and t["position_time"] is None
        assert t["team"] and t["region"]
    assert one == [orders[0]]
    fixed = [o for o in orders if o["status"] == "completed_fixed"]
    assert len(fixed) > len(orders) / 2
    assert all(o["eta_time"] is None and not o["alert_active"] for o in fixed)
